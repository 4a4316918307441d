// The chats objects as the server sends them (plugins/chats/views.py): REST bodies and the
// `message` objects inside WebSocket frames have the same shape.

export interface Reaction {
  emoji: string;
  count: number;
  user_ids: string[];
}

export interface Attachment {
  id: string;
  channel_id: string;
  filename: string;
  content_type: string;
  size: number;
  width: number | null;
  height: number | null;
  has_thumbnail: boolean;
  message_id: string | null;
}

export interface Message {
  id: string;
  channel_id: string;
  seq: number;
  author_id: string | null;
  author_name: string | null;
  text: string;
  /** Markdown rendered and sanitised by the server (nh3): the only HTML this page injects. */
  html: string;
  thread_root_id: string | null;
  reply_count: number;
  mentions: string[];
  mention_channel: boolean;
  attachments: Attachment[];
  reactions: Reaction[];
  pinned: boolean;
  version: number;
  created_at: string;
  edited_at: string | null;
  deleted_at: string | null;
}

export interface Channel {
  id: string;
  workspace_id: string;
  kind: "channel" | "direct" | "group";
  name: string;
  topic: string;
  private: boolean;
  last_seq: number;
  created_by: string | null;
  created_at: string;
  member: boolean;
  last_read_seq: number;
  unread: number;
  member_ids: string[] | null;
}

export interface WorkspaceMember {
  user_id: string;
  display_name: string;
  email?: string;
}

export interface SearchHit {
  message: Message;
  rank: number;
  headline: string;
}

export type Presence = "online" | "away" | "offline";
