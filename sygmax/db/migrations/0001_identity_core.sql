-- Accounts and personal API tokens: the minimum every authenticated route needs.
CREATE TABLE sygmax_user (
    id            uuid        PRIMARY KEY,
    email         text        NOT NULL,
    display_name  text        NOT NULL,
    is_admin      boolean     NOT NULL DEFAULT false,
    is_active     boolean     NOT NULL DEFAULT true,
    created_at    timestamptz NOT NULL DEFAULT now()
);
CREATE UNIQUE INDEX sygmax_user_email_key ON sygmax_user (lower(email));

-- Only the SHA-256 of a token is stored: a database leak does not leak usable tokens.
CREATE TABLE sygmax_api_token (
    id            uuid        PRIMARY KEY,
    user_id       uuid        NOT NULL REFERENCES sygmax_user (id) ON DELETE CASCADE,
    name          text        NOT NULL,
    token_hash    bytea       NOT NULL UNIQUE,
    scopes        text[]      NOT NULL DEFAULT '{}',
    created_at    timestamptz NOT NULL DEFAULT now(),
    expires_at    timestamptz,
    revoked_at    timestamptz
);
CREATE INDEX sygmax_api_token_user ON sygmax_api_token (user_id);

-- Event handlers with database side effects record the event id in the same transaction,
-- which makes their effect exactly-once even if the process dies before acknowledging.
CREATE TABLE sygmax_processed_event (
    consumer_group  text        NOT NULL,
    event_id        text        NOT NULL,
    processed_at    timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (consumer_group, event_id)
);
