// The system module's page: the example to copy for a plugin page (see docs/architecture.md,
// "Web UI and plugin pages"). Imports come from "@sygmax/web" and preact only.
import { api, definePlugin, FormError, List, useApi, useSession } from "@sygmax/web";
import type { PageProps } from "@sygmax/web";

interface Info { version: string; profiles: string[]; plugins: string[] }
interface Readiness { status?: string; checks?: Record<string, { ok: boolean; [key: string]: unknown }> }

function SystemStatus(_props: PageProps) {
  const { plugins } = useSession();
  const [info, infoError] = useApi(() => api<Info>("/api/v1/system/info"), []);
  // /readyz answers 503 with the same checks when something is down: show them either way.
  const [ready] = useApi(() => fetch("/readyz", { headers: { Accept: "application/json" } })
    .then((response) => response.json() as Promise<Readiness>), []);
  return (
    <section aria-labelledby="system-title">
      <h1 id="system-title">System status</h1>
      <FormError error={infoError} />
      {info && (
        <dl class="facts">
          <dt>Version</dt><dd class="system-version">{info.version}</dd>
          <dt>Profiles of this process</dt><dd>{info.profiles.join(", ")}</dd>
        </dl>
      )}
      <h2>Dependencies</h2>
      {ready?.checks ? (
        <List label="Dependencies" items={Object.entries(ready.checks)} keyOf={([name]) => name}
          render={([name, check]) => (
            <span class={check.ok ? "status-ok" : "status-bad"}>{name}: {check.ok ? "reachable" : "unavailable"}</span>
          )} />
      ) : <p role="status">Checking…</p>}
      <h2>Enabled modules</h2>
      <List label="Enabled modules" items={plugins} keyOf={(plugin) => plugin.name}
        render={(plugin) => <span><strong>{plugin.name}</strong> {plugin.version} — {plugin.description}</span>} />
    </section>
  );
}

export default definePlugin({
  pages: [{ path: "/admin/system", component: SystemStatus }],
});
