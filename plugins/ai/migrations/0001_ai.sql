-- Local AI: model registry, durable jobs and the vectors of semantic search.

-- One row per model an ai process may load. `is_default` marks the model of its kind that
-- users get; `rollout_percent` > 0 sends that share of users (a stable hash of model name and
-- user id) to this model instead of the default (canary; 50 is an A/B test).
CREATE TABLE ai_model (
    name             text        PRIMARY KEY CHECK (name ~ '^[a-z0-9][a-z0-9._-]{0,63}$'),
    kind             text        NOT NULL CHECK (kind IN ('llm', 'stt', 'embedding', 'ner')),
    path             text        NOT NULL,
    version          text        NOT NULL DEFAULT '1',
    options          jsonb       NOT NULL DEFAULT '{}',
    is_default       boolean     NOT NULL DEFAULT false,
    rollout_percent  integer     NOT NULL DEFAULT 0 CHECK (rollout_percent BETWEEN 0 AND 100),
    created_at       timestamptz NOT NULL DEFAULT now(),
    updated_at       timestamptz NOT NULL DEFAULT now()
);
CREATE UNIQUE INDEX ai_model_one_default ON ai_model (kind) WHERE is_default;

-- Async jobs: API requests answered 202, and work other modules' events asked for (feed
-- annotations, chat transcripts). PostgreSQL is the queue of record: an ai process claims a
-- row (status running, owner = its instance name); a row left running by a dead instance is
-- queued again, or failed once `attempts` reaches the configured limit. Never lost silently.
CREATE TABLE ai_job (
    id           uuid        PRIMARY KEY,
    user_id      uuid        REFERENCES sygmax_user (id) ON DELETE CASCADE,
    op           text        NOT NULL,
    model        text        NOT NULL,
    params       jsonb       NOT NULL DEFAULT '{}',
    input_text   text,
    input_key    text,          -- object-storage key of an uploaded or attached audio file
    delete_input boolean     NOT NULL DEFAULT false,
    notify       jsonb,         -- {"target_type": ..., "target_id": ...}: publish an event when done
    status       text        NOT NULL DEFAULT 'queued' CHECK (status IN ('queued', 'running', 'done', 'failed')),
    owner        text,
    attempts     integer     NOT NULL DEFAULT 0,
    result       jsonb,
    error        text,
    created_at   timestamptz NOT NULL DEFAULT now(),
    started_at   timestamptz,
    finished_at  timestamptz
);
CREATE INDEX ai_job_claim ON ai_job (model, created_at) WHERE status = 'queued';
CREATE INDEX ai_job_running ON ai_job (owner) WHERE status = 'running';
CREATE INDEX ai_job_user ON ai_job (user_id, created_at);

-- Semantic search. One row per indexed thing (a chat message, a feed item), with what the
-- ACL check needs: the workspace and object it belongs to (a chat channel) or its only
-- reader (a personal feed item). `vector` is NULL until embedded; `seq` grows on every change
-- (deletes leave a tombstone) so each ai process applies changes to its FAISS index
-- incrementally.
CREATE SEQUENCE ai_vector_seq;
CREATE TABLE ai_vector (
    id            bigserial   PRIMARY KEY,
    source_type   text        NOT NULL,      -- 'chats.message', 'feeds.item'
    source_id     uuid        NOT NULL,
    workspace_id  uuid,
    object_type   text,                      -- 'chats.channel'; NULL: no per-object ACL
    object_id     text,
    user_id       uuid,                      -- personal feed items: their only reader
    text          text        NOT NULL,
    model         text,
    vector        bytea,                     -- float32 little-endian, L2-normalised
    deleted       boolean     NOT NULL DEFAULT false,
    seq           bigint      NOT NULL DEFAULT nextval('ai_vector_seq'),
    updated_at    timestamptz NOT NULL DEFAULT now(),
    UNIQUE (source_type, source_id)
);
CREATE INDEX ai_vector_seq_idx ON ai_vector (seq);
CREATE INDEX ai_vector_pending ON ai_vector (id) WHERE vector IS NULL AND NOT deleted;
