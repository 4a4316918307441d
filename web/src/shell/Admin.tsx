// Instance administration: users, workspaces, feature flags, audit log. (The System status
// page is the system plugin's own page: plugins/system/ui.) The server enforces admin-only
// access on every call; the shell only hides what a non-admin could not use anyway.
import { useState } from "preact/hooks";
import { api } from "../lib/api";
import { Button, FormError, Input, fieldError, useApi, useToast } from "../lib/ui";

export function Admin({ path }: { path: string }) {
  switch (path) {
    case "/admin/users": return <Users />;
    case "/admin/workspaces": return <Workspaces />;
    case "/admin/flags": return <Flags />;
    default: return <Audit />;
  }
}

function when(value: string | null): string {
  return value ? new Date(value).toLocaleString() : "";
}

interface AdminUser {
  id: string; email: string; display_name: string; is_admin: boolean; is_active: boolean; created_at: string;
  workspaces: number;
}

function Users() {
  const [users, error] = useApi(() => api<AdminUser[]>("/api/v1/system/users"), []);
  return (
    <section aria-labelledby="users-title">
      <h1 id="users-title">Users</h1>
      <FormError error={error} />
      {users && (
        <div class="table-wrap">
          <table>
            <caption class="visually-hidden">Every account of this installation</caption>
            <thead><tr><th scope="col">Name</th><th scope="col">E-mail</th><th scope="col">Role</th>
              <th scope="col">Status</th><th scope="col">Workspaces</th><th scope="col">Created</th></tr></thead>
            <tbody>
              {users.map((user) => (
                <tr key={user.id}>
                  <td>{user.display_name}</td><td>{user.email}</td><td>{user.is_admin ? "admin" : "user"}</td>
                  <td>{user.is_active ? "active" : "disabled"}</td><td>{user.workspaces}</td>
                  <td>{when(user.created_at)}</td>
                </tr>
              ))}
            </tbody>
          </table>
        </div>
      )}
    </section>
  );
}

interface AdminWorkspace { id: string; name: string; created_at: string; members: number; owners: string[] }

function Workspaces() {
  const [workspaces, error] = useApi(() => api<AdminWorkspace[]>("/api/v1/system/workspaces"), []);
  return (
    <section aria-labelledby="workspaces-title">
      <h1 id="workspaces-title">Workspaces</h1>
      <FormError error={error} />
      {workspaces && (
        <div class="table-wrap">
          <table>
            <caption class="visually-hidden">Every workspace of this installation</caption>
            <thead><tr><th scope="col">Name</th><th scope="col">Members</th><th scope="col">Owners</th>
              <th scope="col">Created</th></tr></thead>
            <tbody>
              {workspaces.map((workspace) => (
                <tr key={workspace.id}>
                  <td>{workspace.name}</td><td>{workspace.members}</td><td>{workspace.owners.join(", ")}</td>
                  <td>{when(workspace.created_at)}</td>
                </tr>
              ))}
            </tbody>
          </table>
        </div>
      )}
    </section>
  );
}

interface Flag {
  name: string; description: string; enabled: boolean; percentage: number; users: string[];
  workspaces: string[]; updated_at: string;
}

function definition(flag: Flag, enabled: boolean) {
  return { enabled, percentage: flag.percentage, users: flag.users, workspaces: flag.workspaces,
    description: flag.description };
}

function Flags() {
  const [flags, loadError, reload] = useApi(() => api<Flag[]>("/api/v1/flags"), []);
  const [name, setName] = useState("");
  const [description, setDescription] = useState("");
  const [error, setError] = useState<unknown>(null);
  const toast = useToast();

  async function toggle(flag: Flag) {
    try {
      await api(`/api/v1/flags/${encodeURIComponent(flag.name)}`, { method: "PUT",
        body: definition(flag, !flag.enabled) });
      reload();
    } catch (reason) {
      toast(reason instanceof Error ? reason.message : String(reason), "error");
    }
  }

  async function create(event: Event) {
    event.preventDefault();
    setError(null);
    try {
      await api(`/api/v1/flags/${encodeURIComponent(name)}`, { method: "PUT",
        body: { enabled: false, description } });
      setName("");
      setDescription("");
      reload();
    } catch (reason) {
      setError(reason);
    }
  }

  return (
    <section aria-labelledby="flags-title">
      <h1 id="flags-title">Feature flags</h1>
      <FormError error={loadError} />
      {flags && (
        <div class="table-wrap">
          <table>
            <caption class="visually-hidden">Feature flags</caption>
            <thead><tr><th scope="col">Flag</th><th scope="col">Description</th><th scope="col">Rollout</th>
              <th scope="col">On</th></tr></thead>
            <tbody>
              {flags.map((flag) => (
                <tr key={flag.name}>
                  <td><code>{flag.name}</code></td><td>{flag.description}</td>
                  <td>{flag.percentage}% · {flag.users.length} users · {flag.workspaces.length} workspaces</td>
                  <td>
                    <button type="button" role="switch" class="ui-switch" aria-checked={flag.enabled ? "true" : "false"}
                      aria-label={`${flag.name} enabled`} onClick={() => void toggle(flag)}>
                      {flag.enabled ? "on" : "off"}
                    </button>
                  </td>
                </tr>
              ))}
            </tbody>
          </table>
        </div>
      )}
      <form class="panel" onSubmit={create} noValidate aria-label="New flag">
        <h2>New flag</h2>
        <FormError error={error} />
        <Input label="Name" name="name" value={name} onInput={setName} required error={fieldError(error, "name")}
          hint="a-z, 0-9, _ . -, starting with a letter" />
        <Input label="Description" name="description" value={description} onInput={setDescription}
          error={fieldError(error, "description")} />
        <Button type="submit" variant="primary">Create flag (off)</Button>
      </form>
    </section>
  );
}

interface AuditEntry {
  seq: number; at: string; actor_id: string | null; action: string; object_type: string; object_id: string | null;
  workspace_id: string | null; source_ip: string | null; details: Record<string, unknown>;
}

function Audit() {
  const [action, setAction] = useState("");
  const [filter, setFilter] = useState("");
  const [pages, setPages] = useState<AuditEntry[][]>([]);
  const [cursor, setCursor] = useState<number | null>(null);
  const [, error] = useApi(async () => {
    const page = await api<{ items: AuditEntry[]; next_cursor: number | null }>("/api/v1/audit",
      { query: { action: filter || undefined, limit: 50 } });
    setPages([page.items]);
    setCursor(page.next_cursor);
    return page;
  }, [filter]);
  const [moreError, setMoreError] = useState<unknown>(null);

  async function more() {
    try {
      const page = await api<{ items: AuditEntry[]; next_cursor: number | null }>("/api/v1/audit",
        { query: { action: filter || undefined, limit: 50, cursor } });
      setPages((list) => [...list, page.items]);
      setCursor(page.next_cursor);
    } catch (reason) {
      setMoreError(reason);
    }
  }

  const entries = pages.flat();
  return (
    <section aria-labelledby="audit-title">
      <h1 id="audit-title">Audit log</h1>
      <form class="inline-form" role="search" onSubmit={(event) => { event.preventDefault(); setFilter(action); }}>
        <Input label="Action" name="action" value={action} onInput={setAction} hint="e.g. user.login"
          error={fieldError(error, "action")} />
        <Button type="submit">Filter</Button>
      </form>
      <FormError error={error || moreError} />
      <div class="table-wrap">
        <table>
          <caption class="visually-hidden">Audit entries, newest first</caption>
          <thead><tr><th scope="col">#</th><th scope="col">When</th><th scope="col">Action</th>
            <th scope="col">Object</th><th scope="col">Actor</th><th scope="col">From</th></tr></thead>
          <tbody>
            {entries.map((entry) => (
              <tr key={entry.seq}>
                <td>{entry.seq}</td><td>{when(entry.at)}</td><td><code>{entry.action}</code></td>
                <td>{entry.object_type}{entry.object_id ? ` ${entry.object_id}` : ""}</td>
                <td><small>{entry.actor_id ?? "system"}</small></td><td>{entry.source_ip ?? ""}</td>
              </tr>
            ))}
          </tbody>
        </table>
      </div>
      {cursor !== null && <Button onClick={() => void more()}>Load older entries</Button>}
    </section>
  );
}
