// The chats module's pages (convention: docs/architecture.md, "Web UI and plugin pages").
import { definePlugin } from "@sygmax/web";
import { ChatsPage } from "./ChatsPage";
import "./chats.css";

export default definePlugin({
  pages: [
    { path: "/chats", component: ChatsPage },
    { path: "/chats/:channelId", component: ChatsPage },
  ],
});
