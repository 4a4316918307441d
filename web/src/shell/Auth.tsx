// Sign in and sign up (registration-policy aware), with a button per configured OIDC provider.
import { useEffect, useState } from "preact/hooks";
import { api } from "../lib/api";
import { navigate } from "../lib/plugin";
import { Button, FormError, Input, fieldError } from "../lib/ui";

interface Provider { name: string; title: string }
interface PublicInfo { registration: "open" | "invite" | "closed" }

function usePublicInfo(): [PublicInfo | null, Provider[]] {
  const [info, setInfo] = useState<PublicInfo | null>(null);
  const [providers, setProviders] = useState<Provider[]>([]);
  useEffect(() => {
    api<PublicInfo>("/api/v1/system/public", { noRefresh: true }).then(setInfo, () => setInfo(null));
    api<Provider[]>("/api/v1/auth/oidc/providers", { noRefresh: true }).then(setProviders, () => setProviders([]));
  }, []);
  return [info, providers];
}

function nextPath(): string {
  const next = new URLSearchParams(location.search).get("next") ?? "/";
  // Only paths of this site: never an absolute or protocol-relative URL (open redirect).
  return next.startsWith("/") && !next.startsWith("//") ? next : "/";
}

function OidcButtons({ providers }: { providers: Provider[] }) {
  if (providers.length === 0) return null;
  return (
    <div class="auth-oidc" aria-label="Sign in with another account">
      <p class="auth-or">or</p>
      {providers.map((provider) => (
        <a key={provider.name} class="ui-button ui-secondary auth-provider"
          href={`/api/v1/auth/oidc/${encodeURIComponent(provider.name)}/login?next=${encodeURIComponent(nextPath())}`}>
          Sign in with {provider.title}
        </a>
      ))}
    </div>
  );
}

export function SignIn({ onSignedIn }: { onSignedIn: () => Promise<void> }) {
  const [info, providers] = usePublicInfo();
  const [email, setEmail] = useState("");
  const [password, setPassword] = useState("");
  const [error, setError] = useState<unknown>(null);
  const [busy, setBusy] = useState(false);

  async function submit(event: Event) {
    event.preventDefault();
    setBusy(true);
    setError(null);
    try {
      await api("/api/v1/auth/session", { body: { email, password }, noRefresh: true });
      await onSignedIn();
      navigate(nextPath(), true);
    } catch (reason) {
      setError(reason);
    } finally {
      setBusy(false);
    }
  }

  return (
    <main id="main" class="auth-page" tabIndex={-1}>
      <form class="auth-card" onSubmit={submit} aria-labelledby="signin-title" noValidate>
        <h1 id="signin-title">Sign in to Sygmax</h1>
        <FormError error={error} />
        <Input label="E-mail" name="email" type="email" autoComplete="username" required value={email}
          onInput={setEmail} error={fieldError(error, "email")} />
        <Input label="Password" name="password" type="password" autoComplete="current-password" required
          value={password} onInput={setPassword} error={fieldError(error, "password")} />
        <Button type="submit" variant="primary" busy={busy}>Sign in</Button>
        <OidcButtons providers={providers} />
        {info?.registration !== "closed" && (
          <p class="auth-switch">No account? <a href="/signup">Create one</a></p>
        )}
      </form>
    </main>
  );
}

export function SignUp({ onSignedIn }: { onSignedIn: () => Promise<void> }) {
  const [info, providers] = usePublicInfo();
  const [displayName, setDisplayName] = useState("");
  const [email, setEmail] = useState("");
  const [password, setPassword] = useState("");
  const [invite, setInvite] = useState(() => new URLSearchParams(location.search).get("invite") ?? "");
  const [error, setError] = useState<unknown>(null);
  const [busy, setBusy] = useState(false);

  if (info?.registration === "closed") {
    return (
      <main id="main" class="auth-page" tabIndex={-1}>
        <section class="auth-card" aria-labelledby="signup-title">
          <h1 id="signup-title">Registration is closed</h1>
          <p>An administrator creates accounts on this installation.</p>
          <p><a href="/signin">Back to sign in</a></p>
        </section>
      </main>
    );
  }

  async function submit(event: Event) {
    event.preventDefault();
    setBusy(true);
    setError(null);
    try {
      await api("/api/v1/auth/register", {
        body: { email, password, display_name: displayName, ...(invite ? { invite_token: invite } : {}) },
        noRefresh: true,
      });
      await api("/api/v1/auth/session", { body: { email, password }, noRefresh: true });
      await onSignedIn();
      navigate("/", true);
    } catch (reason) {
      setError(reason);
    } finally {
      setBusy(false);
    }
  }

  const needsInvite = info?.registration === "invite";
  return (
    <main id="main" class="auth-page" tabIndex={-1}>
      <form class="auth-card" onSubmit={submit} aria-labelledby="signup-title" noValidate>
        <h1 id="signup-title">Create your account</h1>
        {needsInvite && <p class="ui-hint">This installation needs an invitation to join (except for its
          very first account).</p>}
        <FormError error={error} />
        <Input label="Display name" name="display_name" autoComplete="name" required value={displayName}
          onInput={setDisplayName} error={fieldError(error, "display_name")} />
        <Input label="E-mail" name="email" type="email" autoComplete="email" required value={email}
          onInput={setEmail} error={fieldError(error, "email")} />
        <Input label="Password" name="password" type="password" autoComplete="new-password" required
          value={password} onInput={setPassword} error={fieldError(error, "password")}
          hint="At least 10 characters" />
        {needsInvite && (
          <Input label="Invitation code" name="invite_token" value={invite} onInput={setInvite}
            error={fieldError(error, "invite_token")} />
        )}
        <Button type="submit" variant="primary" busy={busy}>Create account</Button>
        <OidcButtons providers={providers} />
        <p class="auth-switch">Have an account? <a href="/signin">Sign in</a></p>
      </form>
    </main>
  );
}
