// Shapes of the feeds REST API (plugins/feeds/actions.py views).
export interface Subscription {
  id: string;
  feed_id: string;
  url: string;
  site_url: string | null;
  title: string;
  feed_title: string;
  folder_id: string | null;
  folder: string | null;
  workspace_id: string | null;
  annotate: boolean;
  unread_count: number;
  error_count: number;
  last_error: string | null;
  last_polled_at: string | null;
  next_poll_at: string;
}

export interface Folder { id: string; name: string; workspace_id: string | null; unread_count: number }

export interface Item {
  id: string;
  seq: number;
  feed_id: string;
  subscription_id: string;
  url: string | null;
  title: string;
  author: string;
  content_html: string;
  published_at: string;
  read: boolean;
  starred: boolean;
  tags: string[];
  ai_summary: string | null;
  ai_tags: string[];
}

export interface ItemPage { items: Item[]; next_cursor: string | null }

export interface Preferences { digest: "off" | "daily" | "weekly"; digest_sent_at: string | null; api_password_set: boolean }

export interface ImportResult { imported: number; already_subscribed: number; failed: { url: string; error: string }[] }

/** What the article list shows: everything, starred, one folder or one feed. */
export type Scope =
  | { kind: "all" }
  | { kind: "starred" }
  | { kind: "folder"; id: string }
  | { kind: "feed"; id: string };
