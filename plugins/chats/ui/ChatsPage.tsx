// The chats page: channel list, the open channel's message log with its composer, and side
// panels (thread, pins, search). Live updates come from one reconnecting WebSocket; after a
// reconnect every channel is re-subscribed from the last sequence number seen, and the server
// sends what was missed, so the log has no gaps and no duplicates (messages are keyed by seq).
import { useCallback, useEffect, useLayoutEffect, useMemo, useRef, useState } from "preact/hooks";
import { Button, Dialog, FormError, connect, navigate, useSession, useToast } from "@sygmax/web";
import type { Frame, PageProps, ReconnectingSocket, SocketState } from "@sygmax/web";
import * as client from "./client";
import { MessageView, PresenceDot } from "./MessageView";
import type { MessageActions } from "./MessageView";
import type { Attachment, Channel, Message, Presence, Reaction, SearchHit, WorkspaceMember } from "./types";

interface Timeline {
  messages: Message[]; // top-level messages of the channel, by seq
  hasOlder: boolean;
  loading: boolean;
}

interface Typist { name: string; until: number }

const TYPING_SEND_MS = 3000;
const TYPING_SHOW_MS = 6000;
const CHANNELS_REFRESH_MS = 10_000;

/** Insert or replace by id, keep seq order; the same message from REST and WS lands once. */
function upsert(list: Message[], message: Message): Message[] {
  const index = list.findIndex((item) => item.id === message.id);
  if (index >= 0) {
    if (list[index].version > message.version) return list; // an older copy arrived late
    const copy = list.slice();
    copy[index] = message;
    return copy;
  }
  const copy = [...list, message];
  if (list.length && list[list.length - 1].seq > message.seq) copy.sort((a, b) => a.seq - b.seq);
  return copy;
}

function merge(list: Message[], more: Message[]): Message[] {
  let result = list;
  for (const message of more) result = upsert(result, message);
  return result;
}

function channelLabel(channel: Channel, names: Map<string, string>, me: string): string {
  if (channel.kind === "channel") return channel.name;
  const others = (channel.member_ids ?? []).filter((id) => id !== me).map((id) => names.get(id) ?? "someone");
  return others.length ? others.join(", ") : channel.name;
}

export function ChatsPage({ params }: PageProps) {
  const session = useSession();
  const toast = useToast();
  const me = session.user.id;
  const workspace = session.workspace;
  const [channels, setChannels] = useState<Channel[]>([]);
  const [channelsError, setChannelsError] = useState<unknown>(null);
  const [channelsLoaded, setChannelsLoaded] = useState(false);
  const [members, setMembers] = useState<WorkspaceMember[]>([]);
  const [timelines, setTimelines] = useState<Record<string, Timeline>>({});
  const [presence, setPresence] = useState<Record<string, Presence>>({});
  const [typing, setTyping] = useState<Record<string, Record<string, Typist>>>({});
  const [threadRoot, setThreadRoot] = useState<Message | null>(null);
  const [threadReplies, setThreadReplies] = useState<Message[]>([]);
  const [panel, setPanel] = useState<"none" | "pins" | "search">("none");
  const [pinned, setPinned] = useState<Message[]>([]);
  const [hits, setHits] = useState<SearchHit[]>([]);
  const [query, setQuery] = useState("");
  const [editingId, setEditingId] = useState<string | null>(null);
  const [socketState, setSocketState] = useState<SocketState>("connecting");
  const [dialog, setDialog] = useState<"none" | "channel" | "direct">("none");

  const socketRef = useRef<ReconnectingSocket | null>(null);
  const lastSeq = useRef(new Map<string, number>()); // highest seq seen per channel: the resume point
  const subscribed = useRef(new Set<string>());
  const channelsRef = useRef<Channel[]>([]);
  channelsRef.current = channels;

  const names = useMemo(() => new Map(members.map((member) => [member.user_id, member.display_name])), [members]);
  const joined = channels.filter((channel) => channel.member);
  const activeId = params.channelId ?? joined[0]?.id ?? null;
  const active = channels.find((channel) => channel.id === activeId) ?? null;
  const activeRef = useRef<string | null>(null);
  activeRef.current = activeId;

  // --- loading -------------------------------------------------------------------------------

  const loadChannels = useCallback(async () => {
    if (!workspace) return;
    try {
      const list = await client.listChannels(workspace.id);
      setChannels(list);
      setChannelsLoaded(true);
      setChannelsError(null);
      for (const channel of list) {
        if (channel.member && !lastSeq.current.has(channel.id)) lastSeq.current.set(channel.id, channel.last_seq);
      }
      subscribeAll(list);
    } catch (error) {
      setChannelsError(error);
    }
  }, [workspace?.id]);

  // New conversations someone else opened with you (a direct message, being added to a private
  // channel) come with no frame on a channel you are subscribed to: look for them every
  // CHANNELS_REFRESH_MS and whenever the tab comes back to the foreground.
  useEffect(() => {
    const refresh = () => {
      if (!document.hidden) loadChannels();
    };
    const timer = setInterval(refresh, CHANNELS_REFRESH_MS);
    document.addEventListener("visibilitychange", refresh);
    return () => {
      clearInterval(timer);
      document.removeEventListener("visibilitychange", refresh);
    };
  }, [loadChannels]);

  useEffect(() => {
    setChannels([]);
    setChannelsLoaded(false);
    setTimelines({});
    lastSeq.current.clear();
    subscribed.current.clear();
    if (!workspace) return;
    loadChannels();
    client.workspaceMembers(workspace.id).then(setMembers, () => setMembers([]));
    client.presence(workspace.id).then(
      (list) => setPresence(Object.fromEntries(list.map((item) => [item.user_id, item.status as Presence]))),
      () => undefined);
  }, [workspace?.id]);

  function subscribe(channelId: string): void {
    const socket = socketRef.current;
    if (!socket || subscribed.current.has(channelId)) return;
    // after_seq: the server first sends what this page missed (after a reconnect), then live frames.
    // Not queued while disconnected: onOpen subscribes every channel once the socket is up.
    if (socket.sendNow({ type: "subscribe", channel_id: channelId, after_seq: lastSeq.current.get(channelId) ?? 0 })) {
      subscribed.current.add(channelId);
    }
  }

  function subscribeAll(list: Channel[]): void {
    for (const channel of list) if (channel.member) subscribe(channel.id);
  }

  const loadOlder = useCallback(async (channelId: string) => {
    let before: number | undefined;
    let skip = false;
    setTimelines((all) => {
      const timeline = all[channelId];
      if (timeline?.loading || (timeline && !timeline.hasOlder)) {
        skip = true;
        return all;
      }
      before = timeline?.messages[0]?.seq;
      return { ...all, [channelId]: { messages: timeline?.messages ?? [], hasOlder: true, loading: true } };
    });
    if (skip) return;
    try {
      const page = await client.messagesBefore(channelId, before);
      const top = page.filter((message) => !message.thread_root_id);
      for (const message of page) noteSeq(channelId, message.seq);
      setTimelines((all) => ({
        ...all,
        [channelId]: { messages: merge(all[channelId]?.messages ?? [], top), hasOlder: page.length >= client.PAGE_SIZE,
          loading: false },
      }));
    } catch (error) {
      setTimelines((all) => ({ ...all, [channelId]: { ...all[channelId], loading: false, hasOlder: false } }));
      toast(error instanceof Error ? error.message : String(error), "error");
    }
  }, []);

  useEffect(() => {
    if (activeId && !timelines[activeId] && active?.member) loadOlder(activeId);
  }, [activeId, active?.member]);

  function noteSeq(channelId: string, seq: number): void {
    if (seq > (lastSeq.current.get(channelId) ?? 0)) lastSeq.current.set(channelId, seq);
  }

  // --- the socket ----------------------------------------------------------------------------

  const onFrame = useRef<(frame: Frame) => void>(() => undefined);
  onFrame.current = (frame: Frame) => {
    const channelId = frame.channel_id as string | undefined;
    switch (frame.type) {
      case "message":
      case "edit": {
        const message = frame.message as Message | undefined;
        if (message) receive(message, frame.type === "message");
        return;
      }
      case "delete":
        patch(frame.message_id as string, (message) => ({
          ...message, deleted_at: message.deleted_at ?? new Date().toISOString(), text: "", html: "", attachments: [],
          reactions: [], version: (frame.version as number | undefined) ?? message.version + 1 }));
        return;
      case "reaction":
        patch(frame.message_id as string, (message) => ({
          ...message, reactions: frame.reactions as Reaction[],
          version: (frame.version as number | undefined) ?? message.version }));
        return;
      case "pin":
        patch(frame.message_id as string, (message) => ({ ...message, pinned: Boolean(frame.pinned) }));
        if (!frame.pinned) setPinned((list) => list.filter((item) => item.id !== frame.message_id));
        return;
      case "channel":
      case "channel_deleted":
      case "member":
        loadChannels();
        return;
      case "unsubscribed": // removed from the channel, or it was deleted
        if (channelId) subscribed.current.delete(channelId);
        loadChannels();
        return;
      case "read": // read in another tab or on another device
        if (frame.user_id === me && channelId) {
          const seq = Number(frame.seq ?? 0);
          setChannels((list) => list.map((channel) => channel.id === channelId && seq >= channel.last_read_seq
            ? { ...channel, last_read_seq: seq, unread: Math.max(0, channel.last_seq - seq) } : channel));
        }
        return;
      case "typing": {
        const userId = frame.user_id as string;
        if (!channelId || userId === me) return;
        const name = (frame.display_name as string | undefined) ?? names.get(userId) ?? "Someone";
        setTyping((all) => ({ ...all, [channelId]: { ...all[channelId], [userId]: { name, until: Date.now() + TYPING_SHOW_MS } } }));
        return;
      }
      case "presence":
        setPresence((all) => ({ ...all, [frame.user_id as string]: frame.status as Presence }));
        return;
      case "error":
        if (frame.code === "resync-required" && channelId) {
          // Too much was missed to replay: reload the history and follow live from its end.
          subscribed.current.delete(channelId);
          lastSeq.current.set(channelId, Number(frame.last_seq ?? 0));
          setTimelines(({ [channelId]: _stale, ...rest }) => rest);
          subscribe(channelId);
          if (channelId === activeRef.current) loadOlder(channelId);
          return;
        }
        if (frame.code === "already-subscribed") return;
        if (channelId) subscribed.current.delete(channelId);
        toast(String(frame.detail ?? "The chat server refused a request"), "error");
        return;
      default:
        return;
    }
  };

  /** Apply a change to every copy of a message this page holds (log, thread, pins). */
  function patch(messageId: string, change: (message: Message) => Message): void {
    const apply = (list: Message[]) => list.some((item) => item.id === messageId)
      ? list.map((item) => (item.id === messageId ? change(item) : item)) : list;
    setTimelines((all) => {
      let changed = false;
      const next: Record<string, Timeline> = {};
      for (const [channelId, timeline] of Object.entries(all)) {
        const messages = apply(timeline.messages);
        changed ||= messages !== timeline.messages;
        next[channelId] = messages === timeline.messages ? timeline : { ...timeline, messages };
      }
      return changed ? next : all;
    });
    setThreadReplies(apply);
    setPinned(apply);
    setThreadRoot((root) => (root && root.id === messageId ? change(root) : root));
  }

  function receive(message: Message, created: boolean): void {
    const channelId = message.channel_id;
    const seen = lastSeq.current.get(channelId) ?? 0;
    noteSeq(channelId, message.seq);
    if (message.thread_root_id) {
      setThreadReplies((list) => (threadRootRef.current === message.thread_root_id ? upsert(list, message) : list));
    } else {
      setTimelines((all) => {
        const timeline = all[channelId];
        if (!timeline) return all; // not opened yet: its history loads when it is
        return { ...all, [channelId]: { ...timeline, messages: upsert(timeline.messages, message) } };
      });
      if (threadRootRef.current === message.id) setThreadRoot(message);
    }
    setPinned((list) => (list.some((item) => item.id === message.id)
      ? (message.pinned ? upsert(list, message) : list.filter((item) => item.id !== message.id)) : list));
    if (created && message.seq > seen) {
      // The root's reply count is not re-sent with each reply: count new replies here.
      const root = message.thread_root_id;
      if (root) patch(root, (current) => ({ ...current, reply_count: current.reply_count + 1 }));
      setTyping((all) => {
        const byUser = all[channelId];
        if (!byUser || !message.author_id || !byUser[message.author_id]) return all;
        const { [message.author_id]: _gone, ...rest } = byUser;
        return { ...all, [channelId]: rest };
      });
      const unread = message.author_id !== me && (channelId !== activeRef.current || document.hidden) ? 1 : 0;
      setChannels((list) => list.map((channel) => channel.id === channelId
        ? { ...channel, unread: channel.unread + unread, last_seq: Math.max(channel.last_seq, message.seq) } : channel));
      if (!channelsRef.current.some((channel) => channel.id === channelId)) loadChannels();
    }
  }

  const threadRootRef = useRef<string | null>(null);
  threadRootRef.current = threadRoot?.id ?? null;

  useEffect(() => {
    const socket = connect("chats", {
      onOpen: (opened) => {
        // A new connection has no subscriptions: subscribe every channel again from its last seq.
        subscribed.current.clear();
        socketRef.current = opened;
        subscribeAll(channelsRef.current);
      },
      onMessage: (frame) => onFrame.current(frame),
      onStateChange: setSocketState,
    });
    socketRef.current = socket;
    const visibility = () => socket.sendNow({ type: "presence", status: document.hidden ? "away" : "online" });
    document.addEventListener("visibilitychange", visibility);
    const sweep = setInterval(() => {
      const now = Date.now();
      setTyping((all) => {
        let changed = false;
        const next: Record<string, Record<string, Typist>> = {};
        for (const [channelId, byUser] of Object.entries(all)) {
          next[channelId] = {};
          for (const [userId, typist] of Object.entries(byUser)) {
            if (typist.until > now) next[channelId][userId] = typist;
            else changed = true;
          }
        }
        return changed ? next : all;
      });
    }, 1000);
    return () => {
      document.removeEventListener("visibilitychange", visibility);
      clearInterval(sweep);
      socket.close();
      socketRef.current = null;
    };
  }, []);

  // --- read markers --------------------------------------------------------------------------

  const activeTimeline = activeId ? timelines[activeId] : undefined;
  const newest = activeTimeline?.messages[activeTimeline.messages.length - 1]?.seq ?? 0;
  useEffect(() => {
    if (!active || !active.member || document.hidden) return;
    const seq = Math.max(newest, lastSeq.current.get(active.id) ?? 0);
    if (seq <= active.last_read_seq && active.unread === 0) return;
    const timer = setTimeout(() => {
      client.markRead(active.id, seq).then(() => setChannels((list) => list.map((channel) => channel.id === active.id
        ? { ...channel, unread: 0, last_read_seq: Math.max(channel.last_read_seq, seq) } : channel)),
      () => undefined);
    }, 300);
    return () => clearTimeout(timer);
  }, [active?.id, newest, active?.unread]);

  // --- actions -------------------------------------------------------------------------------

  async function attempt<T>(work: () => Promise<T>): Promise<T | undefined> {
    try {
      return await work();
    } catch (error) {
      toast(error instanceof Error ? error.message : String(error), "error");
      return undefined;
    }
  }

  const actions: MessageActions = {
    onEdit: (message) => setEditingId(message.id),
    onDelete: async (message) => {
      await attempt(() => client.deleteMessage(message.id));
    },
    onReact: async (message, emoji, mine) => {
      const reactions = await attempt(() => mine ? client.removeReaction(message.id, emoji)
        : client.addReaction(message.id, emoji));
      if (reactions) patch(message.id, (current) => ({ ...current, reactions }));
    },
    onPin: async (message) => {
      const done = await attempt(() => (message.pinned ? client.unpin(message.id) : client.pin(message.id)).then(() => true));
      if (done) patch(message.id, (current) => ({ ...current, pinned: !message.pinned }));
      if (panel === "pins" && active) setPinned((await attempt(() => client.pins(active.id))) ?? []);
    },
    onThread: async (message) => {
      setThreadRoot(message);
      setThreadReplies([]);
      const replies = await attempt(() => client.thread(message.id));
      if (replies) setThreadReplies((list) => merge(list, replies.filter((reply) => reply.id !== message.id)));
    },
  };

  async function finishEdit(message: Message, text: string | null): Promise<void> {
    setEditingId(null);
    if (text === null || text === message.text) return;
    const updated = await attempt(() => client.editMessage(message.id, text));
    if (updated) receive(updated, false);
  }

  async function joinActive(): Promise<void> {
    if (!active) return;
    if (await attempt(() => client.joinChannel(active.id, me).then(() => true))) {
      lastSeq.current.set(active.id, active.last_seq);
      await loadChannels();
    }
  }

  async function openPins(): Promise<void> {
    if (panel === "pins") return setPanel("none");
    setPanel("pins");
    if (active) setPinned((await attempt(() => client.pins(active.id))) ?? []);
  }

  async function runSearch(event: Event): Promise<void> {
    event.preventDefault();
    if (!workspace || !query.trim()) return;
    setPanel("search");
    setHits((await attempt(() => client.search(workspace.id, query.trim()))) ?? []);
  }

  // --- keyboard shortcuts --------------------------------------------------------------------

  const searchRef = useRef<HTMLInputElement>(null);
  useEffect(() => {
    const onKey = (event: KeyboardEvent) => {
      if ((event.ctrlKey || event.metaKey) && event.key.toLowerCase() === "k") {
        event.preventDefault();
        searchRef.current?.focus();
      } else if (event.altKey && (event.key === "ArrowUp" || event.key === "ArrowDown")) {
        const list = channelsRef.current.filter((channel) => channel.member);
        const index = list.findIndex((channel) => channel.id === activeRef.current);
        const next = list[(index + (event.key === "ArrowDown" ? 1 : list.length - 1)) % list.length];
        if (next) {
          event.preventDefault();
          navigate(`/chats/${next.id}`);
        }
      } else if (event.key === "Escape" && threadRootRef.current) {
        setThreadRoot(null);
      }
    };
    addEventListener("keydown", onKey);
    return () => removeEventListener("keydown", onKey);
  }, []);

  if (!workspace) {
    return (
      <section aria-labelledby="chats-title">
        <h1 id="chats-title">Chats</h1>
        <p>Join or create a workspace to start chatting.</p>
      </section>
    );
  }

  const activeTyping = Object.values(activeId ? typing[activeId] ?? {} : {}).map((typist) => typist.name);
  const browse = channels.filter((channel) => !channel.member && channel.kind === "channel");

  return (
    <section class="chats" aria-labelledby="chats-title">
      <h1 id="chats-title" class="visually-hidden">Chats{active ? `: ${channelLabel(active, names, me)}` : ""}</h1>
      <nav class="chats-sidebar" aria-label="Conversations">
        <form class="chats-search" role="search" onSubmit={runSearch}>
          <label for="chats-search-input" class="visually-hidden">Search messages</label>
          <input id="chats-search-input" ref={searchRef} type="search" placeholder="Search messages (Ctrl+K)"
            value={query} onInput={(event) => setQuery((event.target as HTMLInputElement).value)} />
        </form>
        <div class="chats-sidebar-head">
          <h2 id="chats-channels-heading">Channels</h2>
          <button type="button" class="chats-action" aria-label="Create channel" onClick={() => setDialog("channel")}>+</button>
        </div>
        <FormError error={channelsError} />
        <ChannelList label="Channels" labelledBy="chats-channels-heading" me={me} names={names} presence={presence}
          channels={joined.filter((channel) => channel.kind === "channel")} activeId={activeId} />
        <div class="chats-sidebar-head">
          <h2 id="chats-dm-heading">Direct messages</h2>
          <button type="button" class="chats-action" aria-label="New direct message" onClick={() => setDialog("direct")}>+</button>
        </div>
        <ChannelList label="Direct messages" labelledBy="chats-dm-heading" me={me} names={names} presence={presence}
          channels={joined.filter((channel) => channel.kind !== "channel")} activeId={activeId} />
        {browse.length > 0 && (
          <>
            <h2 id="chats-browse-heading">Other channels</h2>
            <ChannelList label="Other channels" labelledBy="chats-browse-heading" me={me} names={names}
              presence={presence} channels={browse} activeId={activeId} />
          </>
        )}
        <p class="chats-connection" role="status">
          {socketState === "open" ? "Connected" : socketState === "connecting" ? "Reconnecting…" : "Offline"}
        </p>
      </nav>

      <div class="chats-main">
        {active ? (
          <>
            <header class="chats-channel-head">
              <h2 class="chats-channel-name">
                {active.kind === "channel" ? (active.private ? "🔒 " : "# ") : ""}{channelLabel(active, names, me)}
              </h2>
              {active.topic && <p class="chats-topic">{active.topic}</p>}
              <Button variant="ghost" aria-pressed={panel === "pins"} onClick={openPins}>Pinned</Button>
            </header>
            {active.member ? (
              <>
                <MessageLog key={active.id} timeline={activeTimeline} me={me} presence={presence}
                  actions={actions} editingId={editingId} onEditDone={finishEdit}
                  onOlder={() => loadOlder(active.id)} label={`Messages in ${channelLabel(active, names, me)}`} />
                <p class="chats-typing" aria-live="polite">
                  {activeTyping.length === 0 ? "" : activeTyping.length === 1 ? `${activeTyping[0]} is typing…`
                    : `${activeTyping.join(", ")} are typing…`}
                </p>
                <Composer channelId={active.id} label={`Message ${channelLabel(active, names, me)}`}
                  socket={socketRef} onSent={(message) => receive(message, true)}
                  onEditLast={() => {
                    const own = activeTimeline?.messages.filter((m) => m.author_id === me && !m.deleted_at);
                    if (own?.length) setEditingId(own[own.length - 1].id);
                  }} />
              </>
            ) : (
              <div class="chats-join">
                <p>You are not a member of this channel.</p>
                <Button variant="primary" onClick={joinActive}>Join channel</Button>
              </div>
            )}
          </>
        ) : params.channelId && channelsLoaded ? (
          <p class="chats-empty" role="status">This conversation does not exist or you cannot see it.</p>
        ) : (
          <p class="chats-empty">{channelsLoaded ? "No conversation yet: create a channel or start a direct message." : ""}</p>
        )}
      </div>

      {threadRoot && (
        <aside class="chats-panel" aria-label="Thread">
          <div class="chats-panel-head">
            <h2>Thread</h2>
            <button type="button" class="chats-action" aria-label="Close thread" onClick={() => setThreadRoot(null)}>×</button>
          </div>
          <MessageView message={threadRoot} me={me} presence={presence[threadRoot.author_id ?? ""] ?? "offline"}
            actions={{ ...actions, onThread: undefined }} editing={editingId === threadRoot.id}
            onEditDone={(text) => finishEdit(threadRoot, text)} />
          <div role="log" aria-label="Replies" class="chats-replies">
            {threadReplies.map((reply) => (
              <MessageView key={reply.id} message={reply} me={me} presence={presence[reply.author_id ?? ""] ?? "offline"}
                actions={{ ...actions, onThread: undefined }} editing={editingId === reply.id}
                onEditDone={(text) => finishEdit(reply, text)} />
            ))}
          </div>
          <Composer channelId={threadRoot.channel_id} threadRootId={threadRoot.id} label="Reply in thread"
            socket={socketRef} onSent={(message) => receive(message, true)} onEditLast={() => undefined} />
        </aside>
      )}
      {panel === "pins" && (
        <aside class="chats-panel" aria-label="Pinned messages">
          <div class="chats-panel-head">
            <h2>Pinned</h2>
            <button type="button" class="chats-action" aria-label="Close pinned messages" onClick={() => setPanel("none")}>×</button>
          </div>
          {pinned.length === 0 ? <p class="chats-muted">Nothing pinned yet.</p> : pinned.map((message) => (
            <MessageView key={message.id} message={message} me={me} presence={presence[message.author_id ?? ""] ?? "offline"}
              actions={{ ...actions, onThread: undefined }} editing={false} onEditDone={() => undefined} />
          ))}
        </aside>
      )}
      {panel === "search" && (
        <aside class="chats-panel" aria-label="Search results">
          <div class="chats-panel-head">
            <h2>Results for “{query}”</h2>
            <button type="button" class="chats-action" aria-label="Close search results" onClick={() => setPanel("none")}>×</button>
          </div>
          {hits.length === 0 ? <p class="chats-muted" role="status">No messages found.</p> : (
            <ul class="chats-hits" aria-label="Search results">
              {hits.map((hit) => {
                const channel = channels.find((item) => item.id === hit.message.channel_id);
                return (
                  <li key={hit.message.id}>
                    <a href={`/chats/${hit.message.channel_id}`} class="chats-hit">
                      <small class="chats-muted">{channel ? channelLabel(channel, names, me) : "a channel"} · {hit.message.author_name}</small>
                      {/* The server's sanitised rendering, not the headline: ts_headline output is not sanitised. */}
                      <div class="chats-body" dangerouslySetInnerHTML={{ __html: hit.message.html }} />
                    </a>
                  </li>
                );
              })}
            </ul>
          )}
        </aside>
      )}

      <NewChannelDialog open={dialog === "channel"} workspaceId={workspace.id} onClose={() => setDialog("none")}
        onCreated={async (channel) => {
          setDialog("none");
          lastSeq.current.set(channel.id, channel.last_seq);
          await loadChannels();
          navigate(`/chats/${channel.id}`);
        }} />
      <DirectDialog open={dialog === "direct"} workspaceId={workspace.id} me={me} members={members}
        onClose={() => setDialog("none")}
        onOpened={async (channel) => {
          setDialog("none");
          if (!lastSeq.current.has(channel.id)) lastSeq.current.set(channel.id, 0);
          await loadChannels();
          navigate(`/chats/${channel.id}`);
        }} />
    </section>
  );
}

/** A listbox of conversations: arrow keys move, Enter or a click opens. */
function ChannelList({ channels, activeId, label, labelledBy, me, names, presence }: {
  channels: Channel[]; activeId: string | null; label: string; labelledBy: string; me: string;
  names: Map<string, string>; presence: Record<string, Presence>;
}) {
  const [focus, setFocus] = useState(0);
  const refs = useRef<(HTMLLIElement | null)[]>([]);
  if (channels.length === 0) return <p class="chats-muted chats-none">None yet</p>;
  const selected = Math.max(0, channels.findIndex((channel) => channel.id === activeId));
  const current = focus < channels.length ? focus : selected;
  const move = (index: number) => {
    const next = (index + channels.length) % channels.length;
    setFocus(next);
    refs.current[next]?.focus();
  };
  return (
    <ul class="chats-channels" role="listbox" aria-label={label} aria-labelledby={labelledBy}>
      {channels.map((channel, index) => {
        const text = channelLabel(channel, names, me);
        const other = channel.kind === "direct" ? (channel.member_ids ?? []).find((id) => id !== me) : undefined;
        const open = () => navigate(`/chats/${channel.id}`);
        return (
          <li key={channel.id} ref={(element) => { refs.current[index] = element; }} role="option"
            aria-selected={channel.id === activeId} tabIndex={index === current ? 0 : -1}
            class={`chats-channel${channel.unread ? " chats-unread" : ""}`} data-channel-id={channel.id}
            onClick={open} onFocus={() => setFocus(index)}
            onKeyDown={(event) => {
              if (event.key === "ArrowDown") { event.preventDefault(); move(index + 1); }
              else if (event.key === "ArrowUp") { event.preventDefault(); move(index - 1); }
              else if (event.key === "Home") { event.preventDefault(); move(0); }
              else if (event.key === "End") { event.preventDefault(); move(channels.length - 1); }
              else if (event.key === "Enter" || event.key === " ") { event.preventDefault(); open(); }
            }}>
            {other ? <PresenceDot status={presence[other] ?? "offline"} />
              : <span aria-hidden="true" class="chats-sigil">{channel.private ? "🔒" : "#"}</span>}
            <span class="chats-channel-label">{text}</span>
            {channel.unread > 0 && (
              <span class="chats-badge" aria-label={`${channel.unread} unread`}>{channel.unread}</span>
            )}
          </li>
        );
      })}
    </ul>
  );
}

/** The message log: role=log, newest at the bottom, older pages loaded when scrolled to the top. */
function MessageLog({ timeline, me, presence, actions, editingId, onEditDone, onOlder, label }: {
  timeline: Timeline | undefined; me: string; presence: Record<string, Presence>; actions: MessageActions;
  editingId: string | null; onEditDone(message: Message, text: string | null): void; onOlder(): void; label: string;
}) {
  const ref = useRef<HTMLDivElement>(null);
  const pinnedToBottom = useRef(true);
  const anchor = useRef<{ first: number; height: number } | null>(null);
  const messages = timeline?.messages ?? [];
  const first = messages[0]?.seq ?? 0;

  useLayoutEffect(() => {
    const element = ref.current;
    if (!element) return;
    if (anchor.current && anchor.current.first !== first) {
      // Older messages were prepended: keep what the reader was looking at in place.
      element.scrollTop += element.scrollHeight - anchor.current.height;
    } else if (pinnedToBottom.current) {
      element.scrollTop = element.scrollHeight;
    }
    anchor.current = null;
  }, [messages]);

  const onScroll = () => {
    const element = ref.current;
    if (!element) return;
    pinnedToBottom.current = element.scrollHeight - element.scrollTop - element.clientHeight < 40;
    if (element.scrollTop < 80 && timeline?.hasOlder && !timeline.loading) {
      anchor.current = { first, height: element.scrollHeight };
      onOlder();
    }
  };

  return (
    <div ref={ref} class="chats-log" role="log" aria-label={label} aria-live="polite" aria-relevant="additions"
      tabIndex={0} onScroll={onScroll}>
      {timeline?.hasOlder && (
        <div class="chats-older">
          <Button variant="ghost" busy={timeline.loading} onClick={() => {
            anchor.current = { first, height: ref.current?.scrollHeight ?? 0 };
            onOlder();
          }}>Load older messages</Button>
        </div>
      )}
      {!timeline && <p role="status" class="chats-muted">Loading…</p>}
      {timeline && !timeline.loading && messages.length === 0 && <p class="chats-muted">No messages yet. Say hello!</p>}
      {messages.map((message) => (
        <MessageView key={message.id} message={message} me={me} presence={presence[message.author_id ?? ""] ?? "offline"}
          actions={actions} editing={editingId === message.id} onEditDone={(text) => onEditDone(message, text)} />
      ))}
    </div>
  );
}

/** The composer: Markdown text, Enter sends, Shift+Enter breaks the line, attachments, typing frames. */
function Composer({ channelId, threadRootId, label, socket, onSent, onEditLast }: {
  channelId: string; threadRootId?: string; label: string; socket: { current: ReconnectingSocket | null };
  onSent(message: Message): void; onEditLast(): void;
}) {
  const [text, setText] = useState("");
  const [files, setFiles] = useState<Attachment[]>([]);
  const [error, setError] = useState<unknown>(null);
  const [busy, setBusy] = useState(false);
  const lastTyping = useRef(0);
  const fileRef = useRef<HTMLInputElement>(null);
  const id = `composer-${threadRootId ?? channelId}`;

  async function send(event?: Event): Promise<void> {
    event?.preventDefault();
    if (busy || (!text.trim() && files.length === 0)) return;
    setBusy(true);
    try {
      const message = await client.postMessage(channelId, text, threadRootId, files.map((file) => file.id));
      setText("");
      setFiles([]);
      setError(null);
      onSent(message);
    } catch (failure) {
      setError(failure); // the draft stays, so nothing typed is lost
    } finally {
      setBusy(false);
    }
  }

  async function attach(list: FileList | null): Promise<void> {
    if (!list) return;
    setBusy(true);
    try {
      for (const file of Array.from(list)) {
        const uploaded = await client.upload(channelId, file);
        setFiles((current) => [...current, uploaded]);
      }
      setError(null);
    } catch (failure) {
      setError(failure);
    } finally {
      setBusy(false);
      if (fileRef.current) fileRef.current.value = "";
    }
  }

  return (
    <form class="chats-composer" onSubmit={send} aria-label={label}>
      <FormError error={error} />
      {files.length > 0 && (
        <ul class="chats-pending" aria-label="Files to send">
          {files.map((file) => (
            <li key={file.id}>
              <span class="chats-filename">{file.filename}</span>
              <button type="button" class="chats-action" aria-label={`Remove ${file.filename}`}
                onClick={() => setFiles((current) => current.filter((item) => item.id !== file.id))}>×</button>
            </li>
          ))}
        </ul>
      )}
      <div class="chats-composer-row">
        <label for={`${id}-file`} class="chats-action chats-attach" title="Attach files">
          <span aria-hidden="true">📎</span><span class="visually-hidden">Attach files</span>
        </label>
        <input id={`${id}-file`} ref={fileRef} type="file" multiple class="visually-hidden"
          onChange={(event) => attach((event.target as HTMLInputElement).files)} />
        <label for={id} class="visually-hidden">{label}</label>
        <textarea id={id} class="chats-input" rows={1} value={text} placeholder={`${label} (Markdown)`}
          aria-describedby={`${id}-hint`}
          onInput={(event) => {
            setText((event.target as HTMLTextAreaElement).value);
            const now = Date.now();
            if (now - lastTyping.current > TYPING_SEND_MS) {
              lastTyping.current = now;
              socket.current?.sendNow({ type: "typing", channel_id: channelId });
            }
          }}
          onKeyDown={(event) => {
            if (event.key === "Enter" && !event.shiftKey && !event.isComposing) send(event);
            else if (event.key === "ArrowUp" && text === "") { event.preventDefault(); onEditLast(); }
          }} />
        <Button type="submit" variant="primary" busy={busy}>Send</Button>
      </div>
      <small id={`${id}-hint`} class="chats-muted chats-hint">
        Enter sends, Shift+Enter adds a line. **bold**, _italic_, `code`, &gt; quote, @name mentions.
      </small>
    </form>
  );
}

function NewChannelDialog({ open, workspaceId, onClose, onCreated }: {
  open: boolean; workspaceId: string; onClose(): void; onCreated(channel: Channel): void;
}) {
  const [name, setName] = useState("");
  const [topic, setTopic] = useState("");
  const [isPrivate, setPrivate] = useState(false);
  const [error, setError] = useState<unknown>(null);
  const [busy, setBusy] = useState(false);
  async function submit(event: Event): Promise<void> {
    event.preventDefault();
    setBusy(true);
    try {
      const channel = await client.createChannel(workspaceId, name.trim(), isPrivate, topic);
      setName("");
      setTopic("");
      setPrivate(false);
      setError(null);
      onCreated(channel);
    } catch (failure) {
      setError(failure);
    } finally {
      setBusy(false);
    }
  }
  return (
    <Dialog open={open} title="Create a channel" onClose={onClose}>
      <form onSubmit={submit} class="chats-dialog-form">
        <FormError error={error} />
        <label for="chats-new-name">Name</label>
        <input id="chats-new-name" required maxLength={80} value={name}
          onInput={(event) => setName((event.target as HTMLInputElement).value)} />
        <label for="chats-new-topic">Topic (optional)</label>
        <input id="chats-new-topic" maxLength={250} value={topic}
          onInput={(event) => setTopic((event.target as HTMLInputElement).value)} />
        <label class="chats-check">
          <input type="checkbox" checked={isPrivate} onChange={(event) => setPrivate((event.target as HTMLInputElement).checked)} />
          Private: only invited members can see it
        </label>
        <div class="chats-row">
          <Button type="submit" variant="primary" busy={busy}>Create</Button>
          <Button onClick={onClose}>Cancel</Button>
        </div>
      </form>
    </Dialog>
  );
}

function DirectDialog({ open, workspaceId, me, members, onClose, onOpened }: {
  open: boolean; workspaceId: string; me: string; members: WorkspaceMember[]; onClose(): void;
  onOpened(channel: Channel): void;
}) {
  const [chosen, setChosen] = useState<string[]>([]);
  const [error, setError] = useState<unknown>(null);
  const [busy, setBusy] = useState(false);
  async function submit(event: Event): Promise<void> {
    event.preventDefault();
    setBusy(true);
    try {
      const channel = await client.openDirect(workspaceId, chosen);
      setChosen([]);
      setError(null);
      onOpened(channel);
    } catch (failure) {
      setError(failure);
    } finally {
      setBusy(false);
    }
  }
  const others = members.filter((member) => member.user_id !== me);
  return (
    <Dialog open={open} title="Direct message" onClose={onClose}>
      <form onSubmit={submit} class="chats-dialog-form">
        <FormError error={error} />
        <fieldset>
          <legend>People (one for a direct message, several for a group)</legend>
          {others.length === 0 && <p class="chats-muted">Nobody else is in this workspace yet.</p>}
          {others.map((member) => (
            <label class="chats-check" key={member.user_id}>
              <input type="checkbox" checked={chosen.includes(member.user_id)}
                onChange={(event) => setChosen((list) => (event.target as HTMLInputElement).checked
                  ? [...list, member.user_id] : list.filter((item) => item !== member.user_id))} />
              {member.display_name}
            </label>
          ))}
        </fieldset>
        <div class="chats-row">
          <Button type="submit" variant="primary" busy={busy} disabled={chosen.length === 0}>Start</Button>
          <Button onClick={onClose}>Cancel</Button>
        </div>
      </form>
    </Dialog>
  );
}
