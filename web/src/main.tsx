import { render } from "preact";
import { App } from "./shell/App";
import { interceptLinks } from "./lib/router";
import { ToastProvider } from "./lib/ui";
import { applyTheme, preferredTheme } from "./theme";
import "./styles.css";

applyTheme(preferredTheme());
interceptLinks();
render(<ToastProvider><App /></ToastProvider>, document.getElementById("app")!);
