// The feeds reader: feeds and folders with unread counts, the article list, the reader view.
// Keyboard: j/k next/previous article, m toggle read, s toggle star, r reload, / search.
// Article HTML is rendered only as the server sanitised it on arrival (nh3 in
// plugins/feeds/parser.py); everything else is text.
import { useCallback, useEffect, useMemo, useRef, useState } from "preact/hooks";
import { ApiError, Button, Dialog, FormError, Input, api, csrfToken, fieldError, useToast } from "@sygmax/web";
import type { PageProps } from "@sygmax/web";
import type { Folder, ImportResult, Item, ItemPage, Preferences, Scope, Subscription } from "./types";

const F = "/api/v1/feeds";

function scopeQuery(scope: Scope): Record<string, string> {
  if (scope.kind === "starred") return { starred: "true" };
  if (scope.kind === "folder") return { folder: scope.id };
  if (scope.kind === "feed") return { subscription: scope.id };
  return {};
}

function typingInField(event: KeyboardEvent): boolean {
  const target = event.target as HTMLElement | null;
  return !!target && (target.isContentEditable || ["INPUT", "TEXTAREA", "SELECT"].includes(target.tagName));
}

export function FeedsPage(_: PageProps) {
  const toast = useToast();
  const [subscriptions, setSubscriptions] = useState<Subscription[]>([]);
  const [folders, setFolders] = useState<Folder[]>([]);
  const [scope, setScope] = useState<Scope>({ kind: "all" });
  const [unreadOnly, setUnreadOnly] = useState(true);
  const [query, setQuery] = useState("");
  const [items, setItems] = useState<Item[]>([]);
  const [cursor, setCursor] = useState<string | null>(null);
  const [selected, setSelected] = useState<string | null>(null);
  const [loadError, setLoadError] = useState<unknown>(null);
  const [loading, setLoading] = useState(false);
  const [dialog, setDialog] = useState<"none" | "add" | "opml" | "prefs">("none");
  const searchRef = useRef<HTMLInputElement>(null);
  const itemsRef = useRef<Item[]>([]);
  itemsRef.current = items;

  const loadFeeds = useCallback(async () => {
    try {
      const [subs, dirs] = await Promise.all([api<Subscription[]>(`${F}/subscriptions`), api<Folder[]>(`${F}/folders`)]);
      setSubscriptions(subs);
      setFolders(dirs);
    } catch (error) {
      setLoadError(error);
    }
  }, []);

  const generation = useRef(0);
  const loadItems = useCallback(async (more: boolean) => {
    const mine = ++generation.current;
    setLoading(true);
    try {
      const page = await api<ItemPage>(`${F}/items`, {
        query: { ...scopeQuery(scope), unread: unreadOnly && scope.kind !== "starred" ? "true" : undefined,
                 q: query.trim() || undefined, cursor: more ? cursor : undefined, limit: 50 },
      });
      // A slower answer to an earlier request (another feed, the old filter) must not win.
      if (mine !== generation.current) return;
      setItems((list) => (more ? [...list, ...page.items] : page.items));
      setCursor(page.next_cursor);
      setLoadError(null);
      if (!more) setSelected(null);
    } catch (error) {
      if (mine === generation.current) setLoadError(error);
    } finally {
      if (mine === generation.current) setLoading(false);
    }
  }, [scope, unreadOnly, query, cursor]);

  useEffect(() => { void loadFeeds(); }, [loadFeeds]);
  useEffect(() => { void loadItems(false); }, [scope, unreadOnly]); // eslint-disable-line react-hooks/exhaustive-deps

  const current = items.find((item) => item.id === selected) ?? null;
  const byId = useMemo(() => new Map(subscriptions.map((sub) => [sub.id, sub])), [subscriptions]);
  const totalUnread = subscriptions.reduce((sum, sub) => sum + sub.unread_count, 0);

  const changeItem = useCallback(async (item: Item, change: { read?: boolean; starred?: boolean }) => {
    try {
      const updated = await api<Item>(`${F}/items/${item.id}`, { method: "PATCH", body: change });
      setItems((list) => list.map((entry) => (entry.id === item.id ? updated : entry)));
      if (change.read !== undefined && change.read !== item.read) {
        const delta = change.read ? -1 : 1;
        setSubscriptions((subs) => subs.map((sub) =>
          sub.id === item.subscription_id ? { ...sub, unread_count: Math.max(0, sub.unread_count + delta) } : sub));
      }
    } catch (error) {
      toast(error instanceof Error ? error.message : String(error), "error");
    }
  }, [toast]);

  const open = useCallback((item: Item) => {
    setSelected(item.id);
    if (!item.read) void changeItem(item, { read: true });
    document.getElementById(`feeds-item-${item.id}`)?.scrollIntoView({ block: "nearest" });
  }, [changeItem]);

  const step = useCallback((delta: number) => {
    const list = itemsRef.current;
    if (!list.length) return;
    const index = list.findIndex((item) => item.id === selected);
    const next = index < 0 ? 0 : Math.min(list.length - 1, Math.max(0, index + delta));
    open(list[next]);
  }, [selected, open]);

  useEffect(() => {
    const onKey = (event: KeyboardEvent) => {
      if (event.ctrlKey || event.metaKey || event.altKey || typingInField(event) || dialog !== "none") return;
      const item = itemsRef.current.find((entry) => entry.id === selected);
      if (event.key === "j") step(1);
      else if (event.key === "k") step(-1);
      else if (event.key === "m" && item) void changeItem(item, { read: !item.read });
      else if (event.key === "s" && item) void changeItem(item, { starred: !item.starred });
      else if (event.key === "r") { void loadFeeds(); void loadItems(false); }
      else if (event.key === "/") searchRef.current?.focus();
      else return;
      event.preventDefault();
    };
    window.addEventListener("keydown", onKey);
    return () => window.removeEventListener("keydown", onKey);
  }, [selected, step, changeItem, loadFeeds, loadItems, dialog]);

  const markAllRead = async () => {
    const newest = items.reduce((max, item) => Math.max(max, item.seq), 0);
    if (!newest) return;
    const body: Record<string, unknown> = { up_to_seq: newest };
    if (scope.kind === "feed") body.subscription_id = scope.id;
    if (scope.kind === "folder") body.folder_id = scope.id;
    try {
      await api(`${F}/items/mark-read`, { method: "POST", body });
      await Promise.all([loadFeeds(), loadItems(false)]);
    } catch (error) {
      toast(error instanceof Error ? error.message : String(error), "error");
    }
  };

  const scopeTitle = scope.kind === "all" ? "All articles" : scope.kind === "starred" ? "Starred"
    : scope.kind === "folder" ? (folders.find((folder) => folder.id === scope.id)?.name ?? "Folder")
    : (byId.get(scope.id)?.title ?? "Feed");
  const isActive = (other: Scope) => other.kind === scope.kind && ("id" in other ? other.id === (scope as { id?: string }).id : true);
  const unfiled = subscriptions.filter((sub) => !sub.folder_id);

  const feedButton = (sub: Subscription) => (
    <li key={sub.id}>
      <button type="button" class={`feeds-nav-item ${isActive({ kind: "feed", id: sub.id }) ? "is-active" : ""}`}
        aria-current={isActive({ kind: "feed", id: sub.id }) ? "true" : undefined}
        onClick={() => setScope({ kind: "feed", id: sub.id })} title={sub.last_error ?? sub.url}>
        <span class="feeds-nav-title">{sub.title}</span>
        {sub.last_error && <span class="feeds-error-dot" role="img" aria-label={`Error: ${sub.last_error}`}>!</span>}
        {sub.unread_count > 0 && <span class="feeds-count" aria-label={`${sub.unread_count} unread`}>{sub.unread_count}</span>}
      </button>
    </li>
  );

  return (
    <section class="feeds" aria-labelledby="feeds-title">
      <header class="feeds-head">
        <h1 id="feeds-title">Feeds</h1>
        <div class="feeds-actions">
          <Button variant="primary" onClick={() => setDialog("add")}>Add feed</Button>
          <Button onClick={() => setDialog("opml")}>Import OPML</Button>
          <a class="ui-button ui-secondary" href={`${F}/opml`} download="sygmax-feeds.opml">Export OPML</a>
          <Button variant="ghost" onClick={() => setDialog("prefs")}>Preferences</Button>
        </div>
      </header>
      {loadError ? <FormError error={loadError} /> : null}
      <div class="feeds-columns">
        <nav class="feeds-nav" aria-label="Feeds and folders">
          <ul>
            <li>
              <button type="button" class={`feeds-nav-item ${isActive({ kind: "all" }) ? "is-active" : ""}`}
                aria-current={isActive({ kind: "all" }) ? "true" : undefined} onClick={() => setScope({ kind: "all" })}>
                <span class="feeds-nav-title">All articles</span>
                {totalUnread > 0 && <span class="feeds-count" aria-label={`${totalUnread} unread`}>{totalUnread}</span>}
              </button>
            </li>
            <li>
              <button type="button" class={`feeds-nav-item ${isActive({ kind: "starred" }) ? "is-active" : ""}`}
                aria-current={isActive({ kind: "starred" }) ? "true" : undefined}
                onClick={() => setScope({ kind: "starred" })}>
                <span class="feeds-nav-title">Starred</span>
              </button>
            </li>
          </ul>
          {folders.map((folder) => (
            <div key={folder.id} class="feeds-folder">
              <button type="button" class={`feeds-nav-item feeds-folder-name ${isActive({ kind: "folder", id: folder.id }) ? "is-active" : ""}`}
                aria-current={isActive({ kind: "folder", id: folder.id }) ? "true" : undefined}
                onClick={() => setScope({ kind: "folder", id: folder.id })}>
                <span class="feeds-nav-title">{folder.name}</span>
                {folder.unread_count > 0 && <span class="feeds-count" aria-label={`${folder.unread_count} unread`}>{folder.unread_count}</span>}
              </button>
              <ul aria-label={`Feeds in ${folder.name}`}>
                {subscriptions.filter((sub) => sub.folder_id === folder.id).map(feedButton)}
              </ul>
            </div>
          ))}
          {unfiled.length > 0 && <ul aria-label="Feeds without a folder">{unfiled.map(feedButton)}</ul>}
          {subscriptions.length === 0 && <p class="ui-empty">No feeds yet: add one, or import an OPML file.</p>}
        </nav>

        <div class="feeds-list" role="region" aria-label="Articles">
          <div class="feeds-list-head">
            <h2>{scopeTitle}</h2>
            <form role="search" onSubmit={(event) => { event.preventDefault(); void loadItems(false); }}>
              <label class="feeds-visually-hidden" for="feeds-search">Search articles</label>
              <input id="feeds-search" ref={searchRef} type="search" placeholder="Search (/)" value={query}
                onInput={(event) => setQuery((event.target as HTMLInputElement).value)} maxLength={500} />
            </form>
            <label class="feeds-toggle">
              <input type="checkbox" checked={unreadOnly} onChange={(event) => setUnreadOnly((event.target as HTMLInputElement).checked)} />
              Unread only
            </label>
            <Button variant="ghost" onClick={() => void markAllRead()} disabled={!items.length}>Mark all read</Button>
          </div>
          {scope.kind === "feed" && byId.get(scope.id)?.last_error && (
            <p class="feeds-feed-error" role="status">This feed could not be read: {byId.get(scope.id)?.last_error}</p>
          )}
          {items.length === 0 && !loading ? <p class="ui-empty">No articles here.</p> : (
            <ul class="feeds-items" aria-label="Article list">
              {items.map((item) => (
                <li key={item.id} id={`feeds-item-${item.id}`}>
                  <button type="button" class={`feeds-item ${item.read ? "is-read" : ""} ${item.id === selected ? "is-selected" : ""}`}
                    aria-current={item.id === selected ? "true" : undefined} onClick={() => open(item)}>
                    <span class="feeds-item-title">{item.starred ? "★ " : ""}{item.title || "(untitled)"}</span>
                    <span class="feeds-item-meta">
                      {byId.get(item.subscription_id)?.title ?? ""} · <time dateTime={item.published_at}>{new Date(item.published_at).toLocaleString()}</time>
                    </span>
                  </button>
                </li>
              ))}
            </ul>
          )}
          {cursor && <Button onClick={() => void loadItems(true)} busy={loading}>More</Button>}
        </div>

        <article class="feeds-reader" aria-label="Reader" aria-live="polite">
          {current ? (
            <>
              <header>
                <h2 class="feeds-reader-title">
                  {current.url ? <a href={current.url} target="_blank" rel="noopener noreferrer">{current.title || "(untitled)"}</a>
                    : (current.title || "(untitled)")}
                </h2>
                <p class="feeds-item-meta">
                  {byId.get(current.subscription_id)?.title}{current.author ? ` · ${current.author}` : ""} · {new Date(current.published_at).toLocaleString()}
                </p>
                <div class="feeds-reader-actions">
                  <Button onClick={() => void changeItem(current, { read: !current.read })}>
                    {current.read ? "Mark unread (m)" : "Mark read (m)"}
                  </Button>
                  <Button onClick={() => void changeItem(current, { starred: !current.starred })} aria-pressed={current.starred}>
                    {current.starred ? "Unstar (s)" : "Star (s)"}
                  </Button>
                </div>
              </header>
              {current.ai_summary && (
                <aside class="feeds-summary" aria-label="AI summary"><strong>Summary:</strong> {current.ai_summary}
                  {current.ai_tags.length > 0 && <span class="feeds-tags"> {current.ai_tags.map((tag) => `#${tag}`).join(" ")}</span>}
                </aside>
              )}
              {/* content_html was sanitised by the server (nh3 allow-list) when the item arrived. */}
              <div class="feeds-content" dangerouslySetInnerHTML={{ __html: current.content_html }} />
            </>
          ) : <p class="ui-empty">Choose an article (j / k to move, m read, s star).</p>}
        </article>
      </div>

      <AddFeedDialog open={dialog === "add"} folders={folders} onClose={() => setDialog("none")}
        onAdded={(sub) => { setDialog("none"); void loadFeeds(); setScope({ kind: "feed", id: sub.id }); }} />
      <OpmlDialog open={dialog === "opml"} onClose={() => setDialog("none")}
        onImported={() => { void loadFeeds(); void loadItems(false); }} />
      <PreferencesDialog open={dialog === "prefs"} onClose={() => setDialog("none")} />
    </section>
  );
}

function AddFeedDialog({ open, folders, onClose, onAdded }: {
  open: boolean; folders: Folder[]; onClose: () => void; onAdded: (sub: Subscription) => void;
}) {
  const [url, setUrl] = useState("");
  const [folder, setFolder] = useState("");
  const [error, setError] = useState<unknown>(null);
  const [busy, setBusy] = useState(false);
  const submit = async (event: Event) => {
    event.preventDefault();
    setBusy(true);
    setError(null);
    try {
      const sub = await api<Subscription>(`${F}/subscriptions`, {
        method: "POST", body: { url: url.trim(), folder: folder.trim() || undefined },
      });
      setUrl("");
      setFolder("");
      onAdded(sub);
    } catch (caught) {
      setError(caught);
    } finally {
      setBusy(false);
    }
  };
  return (
    <Dialog open={open} title="Add a feed" onClose={onClose}>
      <form onSubmit={submit} class="feeds-form">
        <Input label="Feed or site address" name="url" type="url" value={url} onInput={setUrl} required
          error={fieldError(error, "url")} hint="A site's address works too: its feed is found for you." />
        <Input label="Folder (optional)" name="folder" value={folder} onInput={setFolder} error={fieldError(error, "folder")}
          hint={folders.length ? `Existing: ${folders.map((entry) => entry.name).join(", ")}` : "Created if it does not exist."} />
        {error && !fieldError(error, "url") && !fieldError(error, "folder") ? <FormError error={error} /> : null}
        <Button variant="primary" type="submit" busy={busy}>Subscribe</Button>
      </form>
    </Dialog>
  );
}

function OpmlDialog({ open, onClose, onImported }: { open: boolean; onClose: () => void; onImported: () => void }) {
  const [file, setFile] = useState<File | null>(null);
  const [result, setResult] = useState<ImportResult | null>(null);
  const [error, setError] = useState<unknown>(null);
  const [busy, setBusy] = useState(false);
  const submit = async (event: Event) => {
    event.preventDefault();
    if (!file) return;
    setBusy(true);
    setError(null);
    try {
      // The body is the OPML document itself, not JSON: fetch directly, with the CSRF header.
      const response = await fetch(`${F}/opml`, {
        method: "POST", credentials: "same-origin", body: await file.text(),
        headers: { "Content-Type": "text/x-opml", Accept: "application/json", "X-CSRF-Token": csrfToken() },
      });
      const body = await response.json();
      if (!response.ok) throw new ApiError({ ...body, status: response.status });
      setResult(body as ImportResult);
      onImported();
    } catch (caught) {
      setError(caught);
    } finally {
      setBusy(false);
    }
  };
  return (
    <Dialog open={open} title="Import OPML" onClose={() => { setResult(null); setError(null); onClose(); }}>
      <form onSubmit={submit} class="feeds-form">
        <div class="ui-field">
          <label for="feeds-opml-file">OPML file from another reader</label>
          <input id="feeds-opml-file" name="opml" type="file" accept=".opml,.xml,text/x-opml,application/xml,text/xml"
            onChange={(event) => setFile((event.target as HTMLInputElement).files?.[0] ?? null)} />
        </div>
        <FormError error={error} />
        {result && (
          <div role="status" class="feeds-import-result">
            <p>{result.imported} feed{result.imported === 1 ? "" : "s"} imported, {result.already_subscribed} already subscribed.
              New feeds are fetched within a minute.</p>
            {result.failed.length > 0 && (
              <ul aria-label="Feeds not imported">
                {result.failed.map((failure) => <li key={failure.url}>{failure.url}: {failure.error}</li>)}
              </ul>
            )}
          </div>
        )}
        <Button variant="primary" type="submit" busy={busy} disabled={!file}>Import</Button>
      </form>
    </Dialog>
  );
}

function PreferencesDialog({ open, onClose }: { open: boolean; onClose: () => void }) {
  const toast = useToast();
  const [prefs, setPrefs] = useState<Preferences | null>(null);
  const [password, setPassword] = useState("");
  const [error, setError] = useState<unknown>(null);
  useEffect(() => {
    if (open) api<Preferences>(`${F}/preferences`).then(setPrefs, setError);
  }, [open]);
  const save = async (change: Record<string, unknown>) => {
    setError(null);
    try {
      setPrefs(await api<Preferences>(`${F}/preferences`, { method: "PUT", body: change }));
      setPassword("");
      toast("Saved");
    } catch (caught) {
      setError(caught);
    }
  };
  return (
    <Dialog open={open} title="Feed preferences" onClose={onClose}>
      <div class="feeds-form">
        <div class="ui-field">
          <label for="feeds-digest">Email digest of unread articles</label>
          <select id="feeds-digest" value={prefs?.digest ?? "off"}
            onChange={(event) => void save({ digest: (event.target as HTMLSelectElement).value })}>
            <option value="off">Off</option>
            <option value="daily">Daily</option>
            <option value="weekly">Weekly</option>
          </select>
        </div>
        <form onSubmit={(event) => { event.preventDefault(); void save({ api_password: password }); }}>
          <Input label="API password for reader apps (Google Reader API)" name="api_password" type="password"
            value={password} onInput={setPassword} autoComplete="new-password" error={fieldError(error, "api_password")}
            hint={`Base URL: ${location.origin}/api/v1/feeds/greader. ${prefs?.api_password_set ? "A password is set." : "No password set."}`} />
          <Button type="submit" disabled={password.length < 10}>Set API password</Button>
          {prefs?.api_password_set && <Button variant="danger" onClick={() => void save({ clear_api_password: true })}>Remove</Button>}
        </form>
        {error && !fieldError(error, "api_password") ? <FormError error={error} /> : null}
      </div>
    </Dialog>
  );
}
