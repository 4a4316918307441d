// A reconnecting WebSocket for /ws/<plugin>: exponential backoff with jitter, JSON frames,
// and an `open` hook run at every (re)connection so page code can re-subscribe and resume.
//
//   const socket = connect("chats", {
//     onOpen: (s) => s.send({ type: "subscribe", channel_id, after: lastSeq }),
//     onMessage: (frame) => ...,
//   });
//   socket.close();   // when the page unmounts

import { refreshSession } from "./api";

export type Frame = { type: string; [key: string]: unknown };

export type SocketState = "connecting" | "open" | "closed";

export interface SocketOptions {
  /** Called after every successful (re)connection, before queued frames are flushed. */
  onOpen?: (socket: ReconnectingSocket) => void;
  onMessage?: (frame: Frame) => void;
  onStateChange?: (state: SocketState) => void;
  /** First retry delay (ms); doubles up to maxDelay. */
  minDelay?: number;
  maxDelay?: number;
  /**
   * Override the URL; default: this page's origin + /ws/<plugin> (behind Caddy, which spreads
   * sockets over the realtime processes). Several URLs: each retry after a failure moves to
   * the next one, so a client fails over between realtime processes addressed directly.
   */
  url?: string | string[];
}

export class ReconnectingSocket {
  state: SocketState = "connecting";
  private socket: WebSocket | null = null;
  private attempts = 0;
  private timer: ReturnType<typeof setTimeout> | null = null;
  private stopped = false;
  private queue: string[] = [];

  private readonly targets: string[];
  private target = 0;

  constructor(target: string | string[], private readonly options: SocketOptions = {}) {
    this.targets = Array.isArray(target) ? target : [target];
    if (this.targets.length === 0) throw new Error("ReconnectingSocket needs a URL");
    this.open();
  }

  /** The URL of the current (or next) connection attempt. */
  get url(): string {
    return this.targets[this.target];
  }

  /** Send a frame now, or when the connection (re)opens. */
  send(frame: Frame): void {
    const text = JSON.stringify(frame);
    if (this.socket && this.socket.readyState === WebSocket.OPEN) this.socket.send(text);
    else this.queue.push(text);
  }

  /** Send only if connected now (typing indicators and other frames not worth queueing). */
  sendNow(frame: Frame): boolean {
    if (!this.socket || this.socket.readyState !== WebSocket.OPEN) return false;
    this.socket.send(JSON.stringify(frame));
    return true;
  }

  /** Drop the current connection and reconnect at once (keeps subscriptions via onOpen). */
  reconnect(): void {
    this.attempts = 0;
    this.socket?.close();
  }

  close(): void {
    this.stopped = true;
    if (this.timer) clearTimeout(this.timer);
    this.socket?.close(1000);
    this.setState("closed");
  }

  private setState(state: SocketState): void {
    if (this.state === state) return;
    this.state = state;
    this.options.onStateChange?.(state);
  }

  private open(): void {
    if (this.stopped) return;
    this.setState("connecting");
    let socket: WebSocket;
    try {
      socket = new WebSocket(this.url);
    } catch {
      // A URL the page may not open (Content-Security-Policy, bad scheme) throws here instead of
      // firing onclose: move on to the next target rather than staying stuck on "connecting".
      this.target = (this.target + 1) % this.targets.length;
      this.schedule();
      return;
    }
    this.socket = socket;
    let opened = false;
    socket.onopen = () => {
      opened = true;
      this.attempts = 0;
      this.setState("open");
      this.options.onOpen?.(this);
      const queued = this.queue;
      this.queue = [];
      for (const text of queued) socket.send(text);
    };
    socket.onmessage = (event) => {
      let frame: Frame;
      try {
        frame = JSON.parse(String(event.data)) as Frame;
      } catch {
        return; // not ours: the protocol is JSON objects only
      }
      this.options.onMessage?.(frame);
    };
    socket.onclose = async (event) => {
      if (this.socket !== socket) return;
      this.socket = null;
      if (this.stopped) return;
      this.setState("connecting");
      // A refused handshake may mean an expired access cookie: refresh before retrying.
      if (!opened || event.code === 4401 || event.code === 1008) await refreshSession();
      if (this.stopped) return;
      this.target = (this.target + 1) % this.targets.length;
      this.schedule();
    };
  }

  private schedule(): void {
    const min = this.options.minDelay ?? 250;
    const max = this.options.maxDelay ?? 10_000;
    const delay = Math.min(max, min * 2 ** this.attempts);
    this.attempts += 1;
    // Full jitter, so clients of a restarted process do not all come back at once.
    this.timer = setTimeout(() => this.open(), delay / 2 + Math.random() * (delay / 2));
  }
}

/**
 * Developer override of the socket URLs: localStorage["sygmax.ws.<plugin>"] = JSON list of
 * URLs. Browser tests use it to point a page at several realtime processes without a proxy.
 */
function overridden(plugin: string): string[] | null {
  try {
    const value = JSON.parse(localStorage.getItem(`sygmax.ws.${plugin}`) ?? "null") as unknown;
    return Array.isArray(value) && value.length > 0 && value.every((item) => typeof item === "string")
      ? value : null;
  } catch {
    return null;
  }
}

/** Open a reconnecting socket to this installation's /ws/<plugin> endpoint. */
export function connect(plugin: string, options: SocketOptions = {}): ReconnectingSocket {
  const scheme = location.protocol === "https:" ? "wss:" : "ws:";
  const target = options.url ?? overridden(plugin) ?? `${scheme}//${location.host}/ws/${plugin}`;
  return new ReconnectingSocket(target, options);
}
