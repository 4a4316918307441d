// Every REST call the chats page makes, in one place (the routes are documented in
// docs/api.md, "Chats").
import { api, csrfToken, ApiError } from "@sygmax/web";
import type { Attachment, Channel, Message, Reaction, SearchHit, WorkspaceMember } from "./types";

const BASE = "/api/v1/chats";
export const PAGE_SIZE = 50;

export const listChannels = (workspaceId: string) =>
  api<Channel[]>(`${BASE}/channels`, { query: { workspace_id: workspaceId } });

export const createChannel = (workspaceId: string, name: string, isPrivate: boolean, topic: string) =>
  api<Channel>(`${BASE}/channels`, { body: { workspace_id: workspaceId, name, private: isPrivate, topic } });

export const openDirect = (workspaceId: string, userIds: string[]) =>
  api<Channel>(`${BASE}/direct`, { body: { workspace_id: workspaceId, user_ids: userIds } });

/** Join a public channel (the same route adds someone else, for managers). */
export const joinChannel = (channelId: string, userId: string) =>
  api<void>(`${BASE}/channels/${channelId}/members`, { body: { user_id: userId } });

export const workspaceMembers = (workspaceId: string) =>
  api<WorkspaceMember[]>(`/api/v1/workspaces/${workspaceId}/members`);

/** The page of messages just before `before` (a sequence number), oldest first. */
export const messagesBefore = (channelId: string, before?: number) =>
  api<Message[]>(`${BASE}/channels/${channelId}/messages`, { query: { before, limit: PAGE_SIZE } });

export const messagesAfter = (channelId: string, after: number) =>
  api<Message[]>(`${BASE}/channels/${channelId}/messages`, { query: { after, limit: 200 } });

export const postMessage = (channelId: string, text: string, threadRootId?: string | null,
  attachmentIds: string[] = []) =>
  api<Message>(`${BASE}/channels/${channelId}/messages`, {
    body: { text, ...(threadRootId ? { thread_root_id: threadRootId } : {}),
      ...(attachmentIds.length ? { attachment_ids: attachmentIds } : {}) },
  });

export const editMessage = (messageId: string, text: string) =>
  api<Message>(`${BASE}/messages/${messageId}`, { method: "PATCH", body: { text } });

export const deleteMessage = (messageId: string) =>
  api<void>(`${BASE}/messages/${messageId}`, { method: "DELETE" });

export const addReaction = (messageId: string, emoji: string) =>
  api<Reaction[]>(`${BASE}/messages/${messageId}/reactions`, { body: { emoji } });

export const removeReaction = (messageId: string, emoji: string) =>
  api<Reaction[]>(`${BASE}/messages/${messageId}/reactions/${encodeURIComponent(emoji)}`, { method: "DELETE" });

export const pin = (messageId: string) => api<unknown>(`${BASE}/messages/${messageId}/pin`, { method: "POST" });
export const unpin = (messageId: string) => api<unknown>(`${BASE}/messages/${messageId}/pin`, { method: "DELETE" });
export const pins = (channelId: string) => api<Message[]>(`${BASE}/channels/${channelId}/pins`);

export const thread = (messageId: string) => api<Message[]>(`${BASE}/messages/${messageId}/thread`);

export const markRead = (channelId: string, seq: number) =>
  api<unknown>(`${BASE}/channels/${channelId}/read`, { body: { seq } });

export const search = (workspaceId: string, q: string) =>
  api<SearchHit[]>(`${BASE}/search`, { query: { workspace_id: workspaceId, q } });

export const presence = (workspaceId: string) =>
  api<{ user_id: string; status: string }[]>(`${BASE}/presence`, { query: { workspace_id: workspaceId } });

export const attachmentUrl = (attachment: Attachment) => `${BASE}/attachments/${attachment.id}`;
export const thumbnailUrl = (attachment: Attachment) => `${BASE}/attachments/${attachment.id}/thumbnail`;

/** Upload a file into a channel (multipart field "file"), before the message that carries it. */
export async function upload(channelId: string, file: File): Promise<Attachment> {
  const form = new FormData();
  form.append("file", file, file.name);
  const response = await fetch(`${BASE}/channels/${channelId}/attachments`, {
    method: "POST",
    credentials: "same-origin",
    headers: { "X-CSRF-Token": csrfToken(), Accept: "application/json" },
    body: form,
  });
  if (!response.ok) {
    let detail = `${response.status} ${response.statusText}`;
    try {
      const body = await response.json();
      detail = String(body.detail ?? body.title ?? detail);
    } catch {
      // a body that is not JSON keeps the status line
    }
    throw new ApiError({ status: response.status, detail });
  }
  return (await response.json()) as Attachment;
}
