-- Feeds: one fetch state per feed URL (shared by every subscriber, so a feed is fetched once
-- however many people follow it), items per feed, subscriptions per user or per workspace,
-- and each reader's own state (read, starred, tags) beside the items.

CREATE TABLE feeds_feed (
    id              uuid        PRIMARY KEY,
    url             text        NOT NULL UNIQUE,
    site_url        text,
    title           text        NOT NULL DEFAULT '',
    language        text,
    etag            text,
    last_modified   text,
    next_poll_at    timestamptz NOT NULL DEFAULT now(),
    last_polled_at  timestamptz,
    last_success_at timestamptz,
    error_count     integer     NOT NULL DEFAULT 0,
    last_error      text,
    created_at      timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX feeds_feed_due ON feeds_feed (next_poll_at);

CREATE TABLE feeds_item (
    id            uuid        PRIMARY KEY,
    -- A 63-bit number per item: the Google Reader API names items by integers, and
    -- "mark all read up to" compares them (arrival order).
    seq           bigserial   NOT NULL UNIQUE,
    feed_id       uuid        NOT NULL REFERENCES feeds_feed (id) ON DELETE CASCADE,
    dedupe_key    text        NOT NULL,
    content_hash  bytea       NOT NULL,
    guid          text,
    url           text,
    title         text        NOT NULL DEFAULT '',
    author        text        NOT NULL DEFAULT '',
    content_html  text        NOT NULL DEFAULT '',
    content_text  text        NOT NULL DEFAULT '',
    published_at  timestamptz NOT NULL,
    fetched_at    timestamptz NOT NULL DEFAULT now(),
    ts_config     regconfig   NOT NULL DEFAULT 'simple',
    ai_summary    text,
    ai_tags       text[]      NOT NULL DEFAULT '{}',
    search        tsvector    GENERATED ALWAYS AS (
                      setweight(to_tsvector(ts_config, coalesce(title, '')), 'A') ||
                      setweight(to_tsvector(ts_config, left(coalesce(content_text, ''), 200000)), 'B')) STORED,
    -- guid, else link, else content hash: one key, so ON CONFLICT drops a re-sent item.
    CONSTRAINT feeds_item_dedupe UNIQUE (feed_id, dedupe_key),
    -- The same text republished under a new guid is the same item.
    CONSTRAINT feeds_item_content UNIQUE (feed_id, content_hash)
);
CREATE INDEX feeds_item_feed_seq ON feeds_item (feed_id, seq DESC);
CREATE INDEX feeds_item_fetched ON feeds_item (fetched_at);
CREATE INDEX feeds_item_search ON feeds_item USING gin (search);

CREATE TABLE feeds_folder (
    id            uuid        PRIMARY KEY,
    user_id       uuid        REFERENCES sygmax_user (id) ON DELETE CASCADE,
    workspace_id  uuid        REFERENCES sygmax_workspace (id) ON DELETE CASCADE,
    name          text        NOT NULL,
    created_at    timestamptz NOT NULL DEFAULT now(),
    CHECK ((user_id IS NULL) <> (workspace_id IS NULL))
);
CREATE UNIQUE INDEX feeds_folder_user_name ON feeds_folder (user_id, lower(name)) WHERE user_id IS NOT NULL;
CREATE UNIQUE INDEX feeds_folder_ws_name ON feeds_folder (workspace_id, lower(name)) WHERE workspace_id IS NOT NULL;

CREATE TABLE feeds_subscription (
    id            uuid        PRIMARY KEY,
    feed_id       uuid        NOT NULL REFERENCES feeds_feed (id),
    user_id       uuid        REFERENCES sygmax_user (id) ON DELETE CASCADE,
    workspace_id  uuid        REFERENCES sygmax_workspace (id) ON DELETE CASCADE,
    folder_id     uuid        REFERENCES feeds_folder (id) ON DELETE SET NULL,
    title         text,
    annotate      boolean     NOT NULL DEFAULT false,
    created_by    uuid        REFERENCES sygmax_user (id) ON DELETE SET NULL,
    created_at    timestamptz NOT NULL DEFAULT now(),
    CHECK ((user_id IS NULL) <> (workspace_id IS NULL))
);
CREATE UNIQUE INDEX feeds_subscription_user_feed ON feeds_subscription (user_id, feed_id) WHERE user_id IS NOT NULL;
CREATE UNIQUE INDEX feeds_subscription_ws_feed ON feeds_subscription (workspace_id, feed_id)
    WHERE workspace_id IS NOT NULL;
CREATE INDEX feeds_subscription_feed ON feeds_subscription (feed_id);

-- A reader's explicit state of one item; an item without a row is unread unless a
-- mark-all-read watermark (feeds_read_mark) covers it.
CREATE TABLE feeds_item_state (
    user_id     uuid        NOT NULL REFERENCES sygmax_user (id) ON DELETE CASCADE,
    item_id     uuid        NOT NULL REFERENCES feeds_item (id) ON DELETE CASCADE,
    read        boolean,
    starred     boolean     NOT NULL DEFAULT false,
    tags        text[]      NOT NULL DEFAULT '{}',
    changed_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (user_id, item_id)
);
CREATE INDEX feeds_item_state_starred ON feeds_item_state (user_id) WHERE starred;

-- "Mark all read up to item seq N" per reader and feed: new arrivals (higher seq) stay unread.
CREATE TABLE feeds_read_mark (
    user_id     uuid   NOT NULL REFERENCES sygmax_user (id) ON DELETE CASCADE,
    feed_id     uuid   NOT NULL REFERENCES feeds_feed (id) ON DELETE CASCADE,
    up_to_seq   bigint NOT NULL,
    PRIMARY KEY (user_id, feed_id)
);

CREATE TABLE feeds_rule (
    id               uuid        PRIMARY KEY,
    user_id          uuid        NOT NULL REFERENCES sygmax_user (id) ON DELETE CASCADE,
    subscription_id  uuid        REFERENCES feeds_subscription (id) ON DELETE CASCADE,
    field            text        NOT NULL CHECK (field IN ('title', 'content', 'any', 'author', 'url')),
    keyword          text        NOT NULL,
    action           text        NOT NULL CHECK (action IN ('mark_read', 'star', 'tag')),
    tag              text,
    created_at       timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX feeds_rule_user ON feeds_rule (user_id);

CREATE TABLE feeds_preference (
    user_id          uuid        PRIMARY KEY REFERENCES sygmax_user (id) ON DELETE CASCADE,
    digest           text        NOT NULL DEFAULT 'off' CHECK (digest IN ('off', 'daily', 'weekly')),
    digest_sent_at   timestamptz,
    api_password     text
);

-- Google Reader API sessions (ClientLogin's Auth=...): only a hash is stored.
CREATE TABLE feeds_greader_session (
    token_hash  bytea       PRIMARY KEY,
    user_id     uuid        NOT NULL REFERENCES sygmax_user (id) ON DELETE CASCADE,
    created_at  timestamptz NOT NULL DEFAULT now(),
    expires_at  timestamptz NOT NULL
);
