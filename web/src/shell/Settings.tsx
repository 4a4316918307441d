// User settings: profile, password, notification preferences, personal API tokens.
import { useEffect, useState } from "preact/hooks";
import { api } from "../lib/api";
import { useSession } from "../lib/session";
import { Button, Dialog, FormError, Input, List, fieldError, useApi, useToast } from "../lib/ui";

interface ApiToken {
  id: string;
  name: string;
  scopes: string[];
  created_at: string;
  expires_at: string | null;
  last_used_at: string | null;
}

interface NotificationCategory {
  code: string;
  description: string;
  in_app: boolean;
  email: boolean;
  default_in_app: boolean;
  default_email: boolean;
}

type Channel = "in_app" | "email";

export function Settings() {
  return (
    <section aria-labelledby="settings-title" class="settings">
      <h1 id="settings-title">Your settings</h1>
      <Profile />
      <Password />
      <Notifications />
      <Tokens />
    </section>
  );
}

function Profile() {
  const { user, reload } = useSession();
  const [name, setName] = useState(user.display_name);
  const [error, setError] = useState<unknown>(null);
  const [busy, setBusy] = useState(false);
  const toast = useToast();
  return (
    <form class="panel" aria-labelledby="profile-title" noValidate onSubmit={async (event) => {
      event.preventDefault();
      setBusy(true);
      setError(null);
      try {
        await api("/api/v1/users/me", { method: "PATCH", body: { display_name: name } });
        await reload();
        toast("Profile saved");
      } catch (reason) {
        setError(reason);
      } finally {
        setBusy(false);
      }
    }}>
      <h2 id="profile-title">Profile</h2>
      <p>E-mail: <span class="user-email">{user.email}</span></p>
      <FormError error={error} />
      <Input label="Display name" name="display_name" value={name} onInput={setName} required
        error={fieldError(error, "display_name")} />
      <Button type="submit" variant="primary" busy={busy}>Save profile</Button>
    </form>
  );
}

function Password() {
  const [current, setCurrent] = useState("");
  const [next, setNext] = useState("");
  const [error, setError] = useState<unknown>(null);
  const [busy, setBusy] = useState(false);
  const toast = useToast();
  return (
    <form class="panel" aria-labelledby="password-title" noValidate onSubmit={async (event) => {
      event.preventDefault();
      setBusy(true);
      setError(null);
      try {
        await api("/api/v1/users/me/password", { body: { current_password: current, new_password: next } });
        setCurrent("");
        setNext("");
        toast("Password changed; your other sessions were signed out");
      } catch (reason) {
        setError(reason);
      } finally {
        setBusy(false);
      }
    }}>
      <h2 id="password-title">Password</h2>
      <FormError error={error} />
      <Input label="Current password" name="current_password" type="password" autoComplete="current-password"
        value={current} onInput={setCurrent} required error={fieldError(error, "current_password")} />
      <Input label="New password" name="new_password" type="password" autoComplete="new-password" value={next}
        onInput={setNext} required error={fieldError(error, "new_password")} hint="At least 10 characters" />
      <Button type="submit" variant="primary" busy={busy}>Change password</Button>
    </form>
  );
}

function Notifications() {
  const [loaded, loadError] = useApi(
    () => api<{ categories: NotificationCategory[] }>("/api/v1/users/me/notifications"), []);
  // The user's edits, kept apart from what was loaded so a failed save leaves them on screen to retry.
  const [rows, setRows] = useState<NotificationCategory[]>([]);
  const [error, setError] = useState<unknown>(null);
  const [busy, setBusy] = useState(false);
  const toast = useToast();
  useEffect(() => {
    if (loaded) setRows(loaded.categories);
  }, [loaded]);

  function toggle(code: string, channel: Channel, on: boolean) {
    setRows((current) => current.map((row) => (row.code === code ? { ...row, [channel]: on } : row)));
  }

  async function save(event: Event) {
    event.preventDefault();
    setBusy(true);
    setError(null);
    try {
      const categories: Record<string, { in_app: boolean; email: boolean }> = {};
      for (const row of rows) categories[row.code] = { in_app: row.in_app, email: row.email };
      const saved = await api<{ categories: NotificationCategory[] }>("/api/v1/users/me/notifications",
        { method: "PUT", body: { categories } });
      setRows(saved.categories);
      toast("Notification preferences saved");
    } catch (reason) {
      setError(reason);
    } finally {
      setBusy(false);
    }
  }

  return (
    <form class="panel notifications" aria-labelledby="notifications-title" noValidate onSubmit={save}>
      <h2 id="notifications-title">Notifications</h2>
      <p class="ui-hint">Choose how each kind of notification reaches you.</p>
      <FormError error={loadError} />
      <FormError error={error} />
      {loaded && rows.length === 0 && <p>No module sends notifications yet.</p>}
      {rows.length > 0 && (
        <div class="table-wrap">
          <table>
            <caption class="visually-hidden">Notification channels per category</caption>
            <thead>
              <tr><th scope="col">Notification</th><th scope="col">In app</th><th scope="col">E-mail</th></tr>
            </thead>
            <tbody>
              {rows.map((row) => (
                <tr key={row.code} data-category={row.code}>
                  <th scope="row">{row.description}</th>
                  {(["in_app", "email"] as Channel[]).map((channel) => (
                    <td key={channel}>
                      <input type="checkbox" name={`${row.code}.${channel}`} checked={row[channel]}
                        aria-label={`${row.description}: ${channel === "in_app" ? "in app" : "e-mail"}`}
                        onChange={(event) => toggle(row.code, channel, (event.target as HTMLInputElement).checked)} />
                    </td>
                  ))}
                </tr>
              ))}
            </tbody>
          </table>
        </div>
      )}
      <Button type="submit" variant="primary" busy={busy} disabled={rows.length === 0}>Save notifications</Button>
    </form>
  );
}

function Tokens() {
  const [tokens, loadError, reload] = useApi(() => api<ApiToken[]>("/api/v1/auth/tokens"), []);
  const [name, setName] = useState("");
  const [scopes, setScopes] = useState("*");
  const [days, setDays] = useState("");
  const [error, setError] = useState<unknown>(null);
  const [busy, setBusy] = useState(false);
  const [created, setCreated] = useState<string | null>(null);
  const toast = useToast();

  async function create(event: Event) {
    event.preventDefault();
    setBusy(true);
    setError(null);
    try {
      const body: Record<string, unknown> = {
        name,
        scopes: scopes.split(/[\s,]+/).filter(Boolean),
      };
      if (days.trim()) body.expires_in_days = Number(days);
      const token = await api<ApiToken & { token: string }>("/api/v1/auth/tokens", { body });
      setCreated(token.token);
      setName("");
      reload();
    } catch (reason) {
      setError(reason);
    } finally {
      setBusy(false);
    }
  }

  async function revoke(token: ApiToken) {
    try {
      await api(`/api/v1/auth/tokens/${token.id}`, { method: "DELETE" });
      toast(`Token ${token.name} revoked`);
      reload();
    } catch (reason) {
      toast(reason instanceof Error ? reason.message : String(reason), "error");
    }
  }

  return (
    <section class="panel" aria-labelledby="tokens-title">
      <h2 id="tokens-title">Personal API tokens</h2>
      <p class="ui-hint">For scripts and integrations: send as <code>Authorization: Bearer …</code>.</p>
      <FormError error={loadError} />
      {tokens && (
        <List items={tokens} label="Your API tokens" keyOf={(token) => token.id} empty="No tokens yet"
          render={(token) => (
            <div class="row">
              <span class="token-name">{token.name}</span>
              <small>{token.scopes.join(", ")} · created {new Date(token.created_at).toLocaleDateString()}
                {token.expires_at ? ` · expires ${new Date(token.expires_at).toLocaleDateString()}` : ""}</small>
              <Button variant="danger" aria-label={`Revoke ${token.name}`} onClick={() => void revoke(token)}>
                Revoke
              </Button>
            </div>
          )} />
      )}
      <form onSubmit={create} noValidate aria-label="Create a token">
        <FormError error={error} />
        <Input label="Token name" name="name" value={name} onInput={setName} required
          error={fieldError(error, "name")} />
        <Input label="Scopes" name="scopes" value={scopes} onInput={setScopes}
          hint="Permission codes separated by commas (chats.post, workspace.read), or * for all you hold"
          error={fieldError(error, "scopes")} />
        <Input label="Expires in days (optional)" name="expires_in_days" type="number" value={days}
          onInput={setDays} error={fieldError(error, "expires_in_days")} />
        <Button type="submit" variant="primary" busy={busy}>Create token</Button>
      </form>
      <Dialog open={created !== null} title="Your new token" onClose={() => setCreated(null)}>
        <p>Copy it now: it is shown only once.</p>
        <input class="token-value" readOnly value={created ?? ""} aria-label="New token"
          onFocus={(event) => (event.target as HTMLInputElement).select()} />
        <div class="ui-actions"><Button variant="primary" onClick={() => setCreated(null)}>Done</Button></div>
      </Dialog>
    </section>
  );
}
