// The feeds module's pages (convention: docs/architecture.md, "Web UI and plugin pages").
import { definePlugin } from "@sygmax/web";
import { FeedsPage } from "./FeedsPage";
import "./feeds.css";

export default definePlugin({
  pages: [{ path: "/feeds", component: FeedsPage }],
});
