// The shell: who is signed in, the layout (banner, sidebar, main) and the routes.
import { useCallback, useEffect, useMemo, useState } from "preact/hooks";
import { ApiError, api, setUnauthenticatedHandler } from "../lib/api";
import { matchPath, navigate } from "../lib/plugin";
import type { PageDefinition } from "../lib/plugin";
import { useLocation } from "../lib/router";
import { SessionContext } from "../lib/session";
import type { EnabledPlugin, Session, User, Workspace } from "../lib/session";
import { FormError } from "../lib/ui";
import { hasUI, loadPluginUI } from "../plugins";
import { SignIn, SignUp } from "./Auth";
import { Home } from "./Home";
import { Layout } from "./Layout";
import { lazy } from "./lazy";

const Settings = lazy(() => import("./Settings").then((module) => module.Settings));
const Admin = lazy(() => import("./Admin").then((module) => module.Admin));

const WORKSPACE_KEY = "sygmax-workspace";
/** Shell-owned admin pages; plugins add theirs under /admin/ too (shown to instance admins only). */
export const ADMIN_PAGES = [
  { path: "/admin/users", title: "Users" },
  { path: "/admin/workspaces", title: "Workspaces" },
  { path: "/admin/flags", title: "Feature flags" },
  { path: "/admin/audit", title: "Audit log" },
];

type Loaded = { user: User; workspaces: Workspace[]; plugins: EnabledPlugin[] };

async function loadSession(): Promise<Loaded | null> {
  try {
    const user = await api<User>("/api/v1/users/me");
    const [workspaces, plugins] = await Promise.all([
      api<Workspace[]>("/api/v1/workspaces"),
      // The system module reports the enabled plugins; without it the shell shows no module pages.
      api<EnabledPlugin[]>("/api/v1/system/plugins").catch((error) => {
        if (error instanceof ApiError && error.status === 404) return [];
        throw error;
      }),
    ]);
    return { user, workspaces, plugins };
  } catch (error) {
    if (error instanceof ApiError && error.status === 401) return null;
    throw error;
  }
}

export function App() {
  const [state, setState] = useState<Loaded | null | undefined>(undefined);
  const [error, setError] = useState<unknown>(null);
  const [workspaceId, setWorkspaceId] = useState<string | null>(() => localStorage.getItem(WORKSPACE_KEY));
  const { path, query } = useLocation();

  const reload = useCallback(async () => {
    try {
      setState(await loadSession());
      setError(null);
    } catch (reason) {
      setError(reason);
    }
  }, []);

  useEffect(() => {
    setUnauthenticatedHandler(() => setState(null));
    void reload();
  }, [reload]);

  const session = useMemo<Session | null>(() => {
    if (!state) return null;
    const workspace = state.workspaces.find((item) => item.id === workspaceId) ?? state.workspaces[0] ?? null;
    return {
      ...state,
      workspace,
      selectWorkspace(id: string) {
        localStorage.setItem(WORKSPACE_KEY, id);
        setWorkspaceId(id);
      },
      reload,
      async signOut() {
        try {
          await api("/api/v1/auth/logout", { method: "POST", noRefresh: true });
        } finally {
          setState(null);
          navigate("/signin", true);
        }
      },
    };
  }, [state, workspaceId, reload]);

  useEffect(() => {
    const title = document.querySelector("main h1")?.textContent;
    document.title = title ? `${title} · Sygmax` : "Sygmax";
  });

  if (error && state === undefined) {
    return <main id="main" class="auth-page"><FormError error={error} /></main>;
  }
  if (state === undefined) return <p class="ui-loading" role="status">Loading…</p>;
  if (!session) {
    if (path === "/signup") return <SignUp onSignedIn={reload} />;
    if (path !== "/signin") {
      // Remember where the user was going; sign-in comes back there.
      const next = path === "/" ? "" : `?next=${encodeURIComponent(path + location.search)}`;
      history.replaceState(null, "", `/signin${next}`);
    }
    return <SignIn onSignedIn={reload} />;
  }
  if (path === "/signin" || path === "/signup") {
    history.replaceState(null, "", "/");
  }

  return (
    <SessionContext.Provider value={session}>
      <Layout>
        <Route path={path === "/signin" || path === "/signup" ? "/" : path} query={query} session={session} />
      </Layout>
    </SessionContext.Provider>
  );
}

function Route({ path, query, session }: { path: string; query: Record<string, string>; session: Session }) {
  if (path === "/") return <Home />;
  if (path === "/settings") return <Settings />;
  if (ADMIN_PAGES.some((page) => page.path === path)) {
    return session.user.is_admin ? <Admin path={path} /> : <NotAllowed />;
  }
  const owner = session.plugins.find((plugin) =>
    plugin.ui_pages.some((page) => path === page.path || path.startsWith(page.path.replace(/\/$/, "") + "/")));
  if (owner && hasUI(owner.name)) {
    if (path.startsWith("/admin/") && !session.user.is_admin) return <NotAllowed />;
    return <PluginRoute key={owner.name} plugin={owner.name} path={path} query={query} />;
  }
  return <NotFound />;
}

function PluginRoute({ plugin, path, query }: { plugin: string; path: string; query: Record<string, string> }) {
  const [pages, setPages] = useState<PageDefinition[] | null>(null);
  const [error, setError] = useState<unknown>(null);
  useEffect(() => {
    loadPluginUI(plugin).then((ui) => setPages(ui.pages), setError);
  }, [plugin]);
  if (error) return <FormError error={new Error(`The ${plugin} pages failed to load; reload to try again`)} />;
  if (!pages) return <p class="ui-loading" role="status">Loading…</p>;
  for (const page of pages) {
    const params = matchPath(page.path, path);
    if (params) {
      const Page = page.component;
      return <Page path={path} params={params} query={query} />;
    }
  }
  return <NotFound />;
}

function NotFound() {
  return (
    <section aria-labelledby="notfound-title">
      <h1 id="notfound-title">Page not found</h1>
      <p>Nothing lives at this address, or its module is not enabled. <a href="/">Go home</a></p>
    </section>
  );
}

function NotAllowed() {
  return (
    <section aria-labelledby="denied-title">
      <h1 id="denied-title">Administrators only</h1>
      <p>This page is for the installation's administrators. <a href="/">Go home</a></p>
    </section>
  );
}
