import { useSession } from "../lib/session";
import { hasUI } from "../plugins";

export function Home() {
  const { user, workspace, plugins } = useSession();
  const pages = plugins.filter((plugin) => hasUI(plugin.name)).flatMap((plugin) => plugin.ui_pages)
    .filter((page) => !page.path.startsWith("/admin/"));
  return (
    <section aria-labelledby="home-title">
      <h1 id="home-title">Welcome, <span class="user-name">{user.display_name}</span></h1>
      {workspace ? (
        <p>You are in <strong class="workspace-name">{workspace.name}</strong> as {workspace.role}.</p>
      ) : (
        <p>You are not in a workspace yet: create one with the ＋ button beside the workspace switcher, or accept
          an invitation.</p>
      )}
      {pages.length > 0 && (
        <>
          <h2>Modules</h2>
          <ul class="ui-list" aria-label="Modules">
            {pages.map((page) => <li key={page.path}><a href={page.path}>{page.title}</a></li>)}
          </ul>
        </>
      )}
    </section>
  );
}
