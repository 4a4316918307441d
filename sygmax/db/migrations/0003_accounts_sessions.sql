-- Accounts: passwords, verification, disabling and erasure; login sessions as refresh-token
-- families; one-time e-mail links. Secrets (refresh tokens, link tokens) are stored only as
-- SHA-256 digests: they carry 256 random bits, so a fast hash is enough and a database leak
-- yields nothing usable.
ALTER TABLE sygmax_user
    ADD COLUMN password_hash        text,
    ADD COLUMN password_changed_at  timestamptz,
    ADD COLUMN email_verified_at    timestamptz,
    ADD COLUMN disabled_at          timestamptz,
    ADD COLUMN erased_at            timestamptz,
    ADD COLUMN last_login_at        timestamptz,
    ADD COLUMN is_owner             boolean     NOT NULL DEFAULT false,
    ADD COLUMN updated_at           timestamptz NOT NULL DEFAULT now();

-- At most one owner, whatever the timing of concurrent first registrations.
CREATE UNIQUE INDEX sygmax_user_single_owner ON sygmax_user (is_owner) WHERE is_owner;

-- Personal API tokens: when each was last used (coarse, for the token list).
ALTER TABLE sygmax_api_token ADD COLUMN last_used_at timestamptz;

-- A login session is a refresh-token family: every refresh replaces the family's token,
-- and presenting a replaced one again revokes the whole family (token theft detected).
CREATE TABLE sygmax_session (
    id              uuid        PRIMARY KEY,
    user_id         uuid        NOT NULL REFERENCES sygmax_user (id) ON DELETE CASCADE,
    source          text        NOT NULL,
    created_at      timestamptz NOT NULL DEFAULT now(),
    last_used_at    timestamptz NOT NULL DEFAULT now(),
    expires_at      timestamptz NOT NULL,
    revoked_at      timestamptz,
    revoked_reason  text,
    created_ip      text,
    user_agent      text
);
CREATE INDEX sygmax_session_user ON sygmax_session (user_id) WHERE revoked_at IS NULL;

CREATE TABLE sygmax_refresh_token (
    token_hash   bytea       PRIMARY KEY,
    session_id   uuid        NOT NULL REFERENCES sygmax_session (id) ON DELETE CASCADE,
    generation   integer     NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now(),
    used_at      timestamptz
);
CREATE INDEX sygmax_refresh_token_session ON sygmax_refresh_token (session_id);

-- One-time links sent by e-mail: verify an address, reset or set a password.
CREATE TABLE sygmax_email_link (
    token_hash   bytea       PRIMARY KEY,
    user_id      uuid        NOT NULL REFERENCES sygmax_user (id) ON DELETE CASCADE,
    purpose      text        NOT NULL CHECK (purpose IN ('verify', 'reset')),
    email        text        NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now(),
    expires_at   timestamptz NOT NULL,
    used_at      timestamptz
);
CREATE INDEX sygmax_email_link_user ON sygmax_email_link (user_id, purpose);
