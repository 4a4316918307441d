-- Chats: channels (public, private, direct and group messages), members with read markers,
-- messages with a per-channel sequence number, edit history, reactions, pins, attachments.

CREATE TABLE chats_channel (
    id            uuid        PRIMARY KEY,
    workspace_id  uuid        NOT NULL REFERENCES sygmax_workspace (id) ON DELETE CASCADE,
    kind          text        NOT NULL CHECK (kind IN ('channel', 'direct', 'group')),
    name          text        NOT NULL,
    topic         text        NOT NULL DEFAULT '',
    private       boolean     NOT NULL DEFAULT false,
    -- Sorted participant ids of a direct or group conversation: one conversation per set of people.
    direct_key    text,
    -- The last sequence number handed out; bumped under the row lock in the transaction that
    -- inserts the message, so when seq N is committed every seq below N is committed too.
    last_seq      bigint      NOT NULL DEFAULT 0,
    created_by    uuid        REFERENCES sygmax_user (id) ON DELETE SET NULL,
    created_at    timestamptz NOT NULL DEFAULT now(),
    CHECK (kind = 'channel' OR (private AND direct_key IS NOT NULL))
);
CREATE UNIQUE INDEX chats_channel_name ON chats_channel (workspace_id, lower(name)) WHERE kind = 'channel';
CREATE UNIQUE INDEX chats_channel_direct ON chats_channel (workspace_id, direct_key) WHERE direct_key IS NOT NULL;

-- Who is in a channel. A membership ends with the workspace membership (the foreign key).
CREATE TABLE chats_member (
    channel_id     uuid        NOT NULL REFERENCES chats_channel (id) ON DELETE CASCADE,
    workspace_id   uuid        NOT NULL,
    user_id        uuid        NOT NULL,
    last_read_seq  bigint      NOT NULL DEFAULT 0,
    joined_at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (channel_id, user_id),
    FOREIGN KEY (workspace_id, user_id) REFERENCES sygmax_membership (workspace_id, user_id) ON DELETE CASCADE
);
CREATE INDEX chats_member_user ON chats_member (user_id, workspace_id);

CREATE TABLE chats_message (
    id               uuid        PRIMARY KEY,
    channel_id       uuid        NOT NULL REFERENCES chats_channel (id) ON DELETE CASCADE,
    workspace_id     uuid        NOT NULL,
    seq              bigint      NOT NULL,
    author_id        uuid        REFERENCES sygmax_user (id) ON DELETE SET NULL,
    thread_root_id   uuid        REFERENCES chats_message (id) ON DELETE CASCADE,
    text             text        NOT NULL,          -- Markdown source as written
    html             text        NOT NULL,          -- rendered and sanitised
    mentions         uuid[]      NOT NULL DEFAULT '{}',
    mention_channel  boolean     NOT NULL DEFAULT false,
    reply_count      integer     NOT NULL DEFAULT 0,
    version          integer     NOT NULL DEFAULT 1, -- bumped by every edit, delete and reaction
    language         regconfig   NOT NULL DEFAULT 'english',
    -- Exact words ('simple') and stemmed words of the message's language, so "runs" finds
    -- "running" and a name or a word of another language is still found as written.
    search           tsvector    GENERATED ALWAYS AS
                         (to_tsvector('simple'::regconfig, text) || to_tsvector(language, text)) STORED,
    idempotency_key  text,
    created_at       timestamptz NOT NULL DEFAULT now(),
    edited_at        timestamptz,
    deleted_at       timestamptz,
    UNIQUE (channel_id, seq)
);
CREATE INDEX chats_message_thread ON chats_message (thread_root_id, seq) WHERE thread_root_id IS NOT NULL;
CREATE INDEX chats_message_search ON chats_message USING gin (search);
CREATE INDEX chats_message_workspace ON chats_message (workspace_id);
CREATE UNIQUE INDEX chats_message_idempotency ON chats_message (channel_id, author_id, idempotency_key)
    WHERE idempotency_key IS NOT NULL;

-- Earlier versions of edited messages (removed with the message's content on delete).
CREATE TABLE chats_message_edit (
    id          bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    message_id  uuid        NOT NULL REFERENCES chats_message (id) ON DELETE CASCADE,
    text        text        NOT NULL,
    html        text        NOT NULL,
    edited_by   uuid        REFERENCES sygmax_user (id) ON DELETE SET NULL,
    replaced_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX chats_message_edit_message ON chats_message_edit (message_id, id);

CREATE TABLE chats_reaction (
    message_id  uuid        NOT NULL REFERENCES chats_message (id) ON DELETE CASCADE,
    user_id     uuid        NOT NULL REFERENCES sygmax_user (id) ON DELETE CASCADE,
    emoji       text        NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (message_id, emoji, user_id)
);

CREATE TABLE chats_pin (
    channel_id  uuid        NOT NULL REFERENCES chats_channel (id) ON DELETE CASCADE,
    message_id  uuid        NOT NULL REFERENCES chats_message (id) ON DELETE CASCADE,
    pinned_by   uuid        REFERENCES sygmax_user (id) ON DELETE SET NULL,
    pinned_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (channel_id, message_id)
);

-- Files uploaded into a channel; message_id is set when a message carries them.
CREATE TABLE chats_attachment (
    id             uuid        PRIMARY KEY,
    workspace_id   uuid        NOT NULL,
    channel_id     uuid        NOT NULL REFERENCES chats_channel (id) ON DELETE CASCADE,
    uploader_id    uuid        REFERENCES sygmax_user (id) ON DELETE SET NULL,
    message_id     uuid        REFERENCES chats_message (id) ON DELETE SET NULL,
    storage_key    text        NOT NULL,
    filename       text        NOT NULL,
    content_type   text        NOT NULL,
    size           bigint      NOT NULL,
    width          integer,
    height         integer,
    thumbnail_key  text,
    created_at     timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX chats_attachment_message ON chats_attachment (message_id) WHERE message_id IS NOT NULL;
