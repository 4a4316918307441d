// JSON over fetch for the shell and plugin pages: session cookies, the double-submit CSRF
// header on unsafe methods, one transparent session refresh on 401, and RFC 9457 problem
// details turned into ApiError (whose `field` names the form input at fault).

export interface Problem {
  type?: string;
  title?: string;
  status: number;
  detail: string;
  field?: string;
  request_id?: string;
  errors?: unknown[];
  [key: string]: unknown;
}

export class ApiError extends Error {
  readonly status: number;
  readonly problem: Problem;

  constructor(problem: Problem) {
    super(problem.detail || problem.title || `HTTP ${problem.status}`);
    this.name = "ApiError";
    this.status = problem.status;
    this.problem = problem;
  }

  /** The input field at fault, when the server named one (400 validation problems). */
  get field(): string | undefined {
    return this.problem.field;
  }
}

const CSRF_COOKIE = "sygmax_csrf";
const UNSAFE = new Set(["POST", "PUT", "PATCH", "DELETE"]);

export function csrfToken(): string {
  for (const part of document.cookie.split(";")) {
    const [name, ...rest] = part.trim().split("=");
    if (name === CSRF_COOKIE) return decodeURIComponent(rest.join("="));
  }
  return "";
}

export interface RequestOptions {
  method?: string;
  body?: unknown;
  query?: Record<string, string | number | boolean | undefined | null>;
  headers?: Record<string, string>;
  signal?: AbortSignal;
  /** Do not try a session refresh on 401 (used by the auth calls themselves). */
  noRefresh?: boolean;
}

type Unauthenticated = () => void;
let onUnauthenticated: Unauthenticated = () => {};

/** The shell registers what happens when the session is gone for good (back to sign-in). */
export function setUnauthenticatedHandler(handler: Unauthenticated): void {
  onUnauthenticated = handler;
}

let refreshing: Promise<boolean> | null = null;

/** Exchange the refresh cookie for new session cookies; concurrent callers share one try. */
export function refreshSession(): Promise<boolean> {
  refreshing ??= fetch("/api/v1/auth/session/refresh", {
    method: "POST",
    credentials: "same-origin",
    headers: { "X-CSRF-Token": csrfToken(), Accept: "application/json" },
  })
    .then((response) => response.ok)
    .catch(() => false)
    .finally(() => {
      refreshing = null;
    });
  return refreshing;
}

function url(path: string, query?: RequestOptions["query"]): string {
  if (!query) return path;
  const params = new URLSearchParams();
  for (const [key, value] of Object.entries(query)) {
    if (value !== undefined && value !== null) params.set(key, String(value));
  }
  const text = params.toString();
  return text ? `${path}${path.includes("?") ? "&" : "?"}${text}` : path;
}

async function problemOf(response: Response): Promise<Problem> {
  const type = response.headers.get("content-type") ?? "";
  if (type.includes("json")) {
    try {
      const body = (await response.json()) as Partial<Problem>;
      return { ...body, status: response.status, detail: String(body.detail ?? body.title ?? response.statusText) };
    } catch {
      // fall through: a broken body still gets a readable error
    }
  }
  return { status: response.status, detail: `${response.status} ${response.statusText || "error"}` };
}

/** Call the Sygmax API: `await api<Workspace[]>("/api/v1/workspaces")`. Throws ApiError. */
export async function api<T = unknown>(path: string, options: RequestOptions = {}): Promise<T> {
  const method = (options.method ?? (options.body === undefined ? "GET" : "POST")).toUpperCase();
  const send = () => {
    const headers: Record<string, string> = { Accept: "application/json", ...options.headers };
    if (options.body !== undefined) headers["Content-Type"] = "application/json";
    if (UNSAFE.has(method)) headers["X-CSRF-Token"] = csrfToken();
    return fetch(url(path, options.query), {
      method,
      headers,
      credentials: "same-origin",
      body: options.body === undefined ? undefined : JSON.stringify(options.body),
      signal: options.signal,
    });
  };
  let response: Response;
  try {
    response = await send();
  } catch (error) {
    if ((error as Error).name === "AbortError") throw error;
    throw new ApiError({ status: 0, detail: "The server cannot be reached; check your connection" });
  }
  if (response.status === 401 && !options.noRefresh) {
    if (await refreshSession()) {
      response = await send();
    }
    if (response.status === 401) onUnauthenticated();
  }
  if (!response.ok) throw new ApiError(await problemOf(response));
  if (response.status === 204) return undefined as T;
  const type = response.headers.get("content-type") ?? "";
  return (type.includes("json") ? await response.json() : await response.text()) as T;
}
