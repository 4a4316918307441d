// The registration API for plugin pages.
//
// A plugin's front end is plugins/<name>/ui/index.tsx; its default export is
// definePlugin({...}). The shell loads that module lazily (its own chunk) the first time the
// user opens one of the plugin's pages, and only for plugins the server reports as enabled.
import type { ComponentType } from "preact";

export interface PageProps {
  /** The path as opened, e.g. "/chats/3f2a...". */
  path: string;
  /** Values of the `:name` segments of the matched pattern. */
  params: Record<string, string>;
  /** The query string, parsed. */
  query: Record<string, string>;
}

export interface PageDefinition {
  /**
   * "/chats", "/chats/:channelId", "/feeds/*". Every sidebar path the plugin declares in
   * plugin.py (UIPage) needs a page here; more patterns under the same prefix are sub-pages.
   */
  path: string;
  component: ComponentType<PageProps>;
}

export interface PluginUI {
  pages: PageDefinition[];
}

export function definePlugin(ui: PluginUI): PluginUI {
  for (const page of ui.pages) {
    if (!page.path.startsWith("/")) throw new Error(`page path ${page.path} must start with /`);
  }
  return ui;
}

/** Match "/chats/:id" against "/chats/42": {id: "42"}, or null. A trailing "/*" matches the rest. */
export function matchPath(pattern: string, path: string): Record<string, string> | null {
  const want = pattern.split("/").filter(Boolean);
  const got = path.split("/").filter(Boolean);
  const params: Record<string, string> = {};
  for (let i = 0; i < want.length; i++) {
    const segment = want[i];
    if (segment === "*") {
      params["*"] = got.slice(i).map(decodeURIComponent).join("/");
      return params;
    }
    if (i >= got.length) return null;
    if (segment.startsWith(":")) params[segment.slice(1)] = decodeURIComponent(got[i]);
    else if (segment !== got[i]) return null;
  }
  return got.length === want.length ? params : null;
}

/** Client-side navigation (same as clicking a link). */
export function navigate(path: string, replace = false): void {
  if (replace) history.replaceState(null, "", path);
  else history.pushState(null, "", path);
  dispatchEvent(new PopStateEvent("popstate"));
}
