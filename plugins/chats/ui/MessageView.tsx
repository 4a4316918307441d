// One message: author, time, the server's sanitised HTML, attachments, reactions and the
// actions the reader may take on it. Everything but `html` is rendered as text by Preact.
import { useState } from "preact/hooks";
import { Button } from "@sygmax/web";
import { attachmentUrl, thumbnailUrl } from "./client";
import type { Message, Presence } from "./types";

export const QUICK_REACTIONS = ["👍", "🎉", "😄", "❤️", "👀"];

export interface MessageActions {
  onEdit(message: Message): void;
  onDelete(message: Message): void;
  onReact(message: Message, emoji: string, mine: boolean): void;
  onPin(message: Message): void;
  onThread?(message: Message): void;
}

function time(iso: string): string {
  return new Date(iso).toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
}

function size(bytes: number): string {
  if (bytes < 1024) return `${bytes} B`;
  if (bytes < 1024 * 1024) return `${(bytes / 1024).toFixed(1)} KB`;
  return `${(bytes / 1024 / 1024).toFixed(1)} MB`;
}

function replies(count: number): string {
  return `${count} repl${count === 1 ? "y" : "ies"}`;
}

export function PresenceDot({ status }: { status: Presence }) {
  return <span class={`chats-presence chats-presence-${status}`} role="img" aria-label={status} title={status} />;
}

export function MessageView({ message, me, presence, actions, editing, onEditDone }: {
  message: Message;
  me: string;
  presence: Presence;
  actions: MessageActions;
  editing: boolean;
  onEditDone(text: string | null): void;
}) {
  const mine = message.author_id === me;
  const [draft, setDraft] = useState(message.text);
  const [picking, setPicking] = useState(false);
  if (message.deleted_at) {
    return (
      <article class="chats-message chats-deleted" aria-label={`Deleted message ${message.seq}`} data-seq={message.seq}>
        <p class="chats-muted">This message was deleted.</p>
      </article>
    );
  }
  const author = message.author_name ?? "Deleted user";
  return (
    <article class={`chats-message${mine ? " chats-mine" : ""}`} data-seq={message.seq} data-id={message.id}
      aria-label={`${author} at ${time(message.created_at)}`}>
      <header class="chats-message-head">
        <PresenceDot status={presence} />
        <strong class="chats-author">{author}</strong>
        <time dateTime={message.created_at}>{time(message.created_at)}</time>
        {message.edited_at && <span class="chats-muted chats-edited">(edited)</span>}
        {message.pinned && <span class="chats-pinned-flag">Pinned</span>}
      </header>
      {editing ? (
        <form class="chats-edit" onSubmit={(event) => { event.preventDefault(); onEditDone(draft); }}>
          <label class="visually-hidden" for={`edit-${message.id}`}>Edit message</label>
          <textarea id={`edit-${message.id}`} value={draft} rows={3} autoFocus
            onInput={(event) => setDraft((event.target as HTMLTextAreaElement).value)}
            onKeyDown={(event) => {
              if (event.key === "Escape") onEditDone(null);
              if (event.key === "Enter" && !event.shiftKey) { event.preventDefault(); onEditDone(draft); }
            }} />
          <div class="chats-row">
            <Button type="submit" variant="primary">Save</Button>
            <Button onClick={() => onEditDone(null)}>Cancel</Button>
          </div>
        </form>
      ) : (
        // The one place HTML is injected: the server rendered the Markdown and sanitised it with nh3.
        <div class="chats-body" dangerouslySetInnerHTML={{ __html: message.html }} />
      )}
      {message.attachments.length > 0 && (
        <ul class="chats-attachments" aria-label="Attachments">
          {message.attachments.map((attachment) => (
            <li key={attachment.id}>
              <a href={attachmentUrl(attachment)} download={attachment.filename} class="chats-attachment">
                {attachment.has_thumbnail && (
                  <img src={thumbnailUrl(attachment)} alt={attachment.filename} loading="lazy"
                    width={attachment.width ?? undefined} height={attachment.height ?? undefined} />
                )}
                <span class="chats-filename">{attachment.filename}</span>
                <small class="chats-muted">{size(attachment.size)}</small>
              </a>
            </li>
          ))}
        </ul>
      )}
      <div class="chats-reactions" role="group" aria-label="Reactions">
        {message.reactions.map((reaction) => {
          const reacted = reaction.user_ids.includes(me);
          return (
            <button key={reaction.emoji} type="button" class="chats-reaction" aria-pressed={reacted}
              aria-label={`${reaction.emoji} ${reaction.count}, ${reacted ? "remove your reaction" : "react"}`}
              onClick={() => actions.onReact(message, reaction.emoji, reacted)}>
              {reaction.emoji} <span>{reaction.count}</span>
            </button>
          );
        })}
      </div>
      <div class="chats-actions" role="toolbar" aria-label="Message actions">
        <button type="button" class="chats-action" aria-label="Add reaction" aria-expanded={picking}
          onClick={() => setPicking(!picking)}>☺</button>
        {picking && QUICK_REACTIONS.map((emoji) => (
          <button key={emoji} type="button" class="chats-action" aria-label={`React with ${emoji}`}
            onClick={() => {
              setPicking(false);
              const mine = message.reactions.some((r) => r.emoji === emoji && r.user_ids.includes(me));
              actions.onReact(message, emoji, mine);
            }}>{emoji}</button>
        ))}
        {actions.onThread && (
          <button type="button" class="chats-action" onClick={() => actions.onThread?.(message)}
            aria-label={message.reply_count ? `Thread, ${replies(message.reply_count)}` : "Reply in thread"}>
            {message.reply_count ? replies(message.reply_count) : "Reply"}
          </button>
        )}
        <button type="button" class="chats-action" onClick={() => actions.onPin(message)}>
          {message.pinned ? "Unpin" : "Pin"}
        </button>
        {mine && (
          <>
            <button type="button" class="chats-action" onClick={() => { setDraft(message.text); actions.onEdit(message); }}>
              Edit
            </button>
            <button type="button" class="chats-action chats-danger" onClick={() => actions.onDelete(message)}>
              Delete
            </button>
          </>
        )}
      </div>
    </article>
  );
}
