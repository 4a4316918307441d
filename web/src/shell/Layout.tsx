// Banner (menu toggle, workspace switcher, theme toggle, account), sidebar and main landmark.
import type { ComponentChildren } from "preact";
import { useEffect, useState } from "preact/hooks";
import { api } from "../lib/api";
import { useLocation } from "../lib/router";
import { useSession } from "../lib/session";
import type { Workspace } from "../lib/session";
import { Button, Dialog, FormError, Input, fieldError, useToast } from "../lib/ui";
import { applyTheme, preferredTheme } from "../theme";
import type { Theme } from "../theme";
import { hasUI } from "../plugins";
import { ADMIN_PAGES } from "./App";

export function Layout({ children }: { children: ComponentChildren }) {
  const { path } = useLocation();
  const [menuOpen, setMenuOpen] = useState(false);
  useEffect(() => setMenuOpen(false), [path]); // any navigation (back button too) closes the phone menu

  return (
    <div class="shell" data-menu={menuOpen ? "open" : "closed"}>
      <a class="skip-link" href="#main" onClick={(event) => {
        event.preventDefault();
        document.getElementById("main")?.focus();
      }}>Skip to content</a>
      <header class="banner" role="banner">
        <button type="button" class="ui-button ui-ghost menu-toggle" aria-controls="sidebar"
          aria-expanded={menuOpen ? "true" : "false"} aria-label="Menu" onClick={() => setMenuOpen(!menuOpen)}>
          <span aria-hidden="true">☰</span>
        </button>
        <a href="/" class="brand">Sygmax</a>
        <WorkspaceSwitcher />
        <div class="banner-end">
          <ThemeToggle />
          <AccountMenu />
        </div>
      </header>
      <Sidebar path={path} onFollow={() => setMenuOpen(false)} />
      <main id="main" class="content" tabIndex={-1}>{children}</main>
    </div>
  );
}

function Sidebar({ path, onFollow }: { path: string; onFollow: () => void }) {
  const { user, plugins } = useSession();
  // Pages of enabled plugins whose front end is in this build (a plugin may declare pages
  // before its plugins/<name>/ui exists).
  const pages = plugins.filter((plugin) => hasUI(plugin.name))
    .flatMap((plugin) => plugin.ui_pages.map((page) => ({ ...page, plugin: plugin.name })));
  const modulePages = pages.filter((page) => !page.path.startsWith("/admin/"));
  const adminPages = [...ADMIN_PAGES, ...pages.filter((page) => page.path.startsWith("/admin/"))];
  const link = (page: { path: string; title: string }) => {
    const active = path === page.path || path.startsWith(page.path + "/");
    return (
      <li key={page.path}>
        <a href={page.path} aria-current={active ? "page" : undefined}>{page.title}</a>
      </li>
    );
  };
  return (
    // A followed link closes the phone drawer, even one to the page already shown.
    <nav id="sidebar" class="sidebar" aria-label="Modules"
      onClick={(event) => (event.target as Element).closest("a") && onFollow()}>
      <ul class="nav-list">
        {link({ path: "/", title: "Home" })}
        {modulePages.map(link)}
      </ul>
      {user.is_admin && (
        <>
          <h2 class="nav-heading" id="admin-nav">Administration</h2>
          <ul class="nav-list" aria-labelledby="admin-nav">{adminPages.map(link)}</ul>
        </>
      )}
    </nav>
  );
}

function WorkspaceSwitcher() {
  const { workspace, workspaces, selectWorkspace, reload } = useSession();
  const [creating, setCreating] = useState(false);
  const [name, setName] = useState("");
  const [error, setError] = useState<unknown>(null);
  const [busy, setBusy] = useState(false);
  const toast = useToast();

  async function create(event: Event) {
    event.preventDefault();
    setBusy(true);
    setError(null);
    try {
      const created = await api<Workspace>("/api/v1/workspaces", { body: { name } });
      await reload();
      selectWorkspace(created.id);
      setCreating(false);
      setName("");
      toast(`Workspace ${created.name} created`);
    } catch (reason) {
      setError(reason);
    } finally {
      setBusy(false);
    }
  }

  return (
    <div class="workspace-switcher">
      {workspaces.length > 0 ? (
        <>
          <label for="workspace-select" class="visually-hidden">Workspace</label>
          <select id="workspace-select" value={workspace?.id}
            onChange={(event) => selectWorkspace((event.target as HTMLSelectElement).value)}>
            {workspaces.map((item) => <option key={item.id} value={item.id}>{item.name}</option>)}
          </select>
        </>
      ) : <span class="ui-hint">No workspace yet</span>}
      <Button variant="ghost" aria-label="Create workspace" title="Create workspace"
        onClick={() => setCreating(true)}>＋</Button>
      <Dialog open={creating} title="Create a workspace" onClose={() => { setCreating(false); setError(null); }}>
        <form onSubmit={create} noValidate>
          <FormError error={error} />
          <Input label="Workspace name" name="name" value={name} onInput={setName} required autoFocus
            error={fieldError(error, "name")} />
          <div class="ui-actions">
            <Button type="submit" variant="primary" busy={busy}>Create</Button>
            <Button onClick={() => { setCreating(false); setError(null); }}>Cancel</Button>
          </div>
        </form>
      </Dialog>
    </div>
  );
}

function ThemeToggle() {
  const [theme, setTheme] = useState<Theme>(preferredTheme);
  const next = theme === "dark" ? "light" : "dark";
  return (
    <Button variant="ghost" class="theme-toggle" aria-pressed={theme === "dark" ? "true" : "false"}
      aria-label="Dark theme" title={`Switch to the ${next} theme`}
      onClick={() => {
        applyTheme(next, true);
        setTheme(next);
      }}>
      <span aria-hidden="true">{theme === "dark" ? "☾" : "☀"}</span>
    </Button>
  );
}

function AccountMenu() {
  const { user, signOut } = useSession();
  return (
    <div class="account">
      <a href="/settings" class="account-name" title="Your settings">{user.display_name}</a>
      <Button variant="ghost" onClick={() => void signOut()}>Sign out</Button>
    </div>
  );
}
