-- API gateway: feature flags and external (OpenID Connect / OAuth2) login identities.

-- A flag is on for a caller when `enabled` (the kill switch) is set and any rule matches:
-- the caller is listed in `users`, the request's workspace in `workspaces`, or the caller's
-- stable bucket (SHA-256 of name + user id, 0..99) falls under `percentage`. 100 = everyone.
CREATE TABLE sygmax_feature_flag (
    name         text        PRIMARY KEY CHECK (name ~ '^[a-z][a-z0-9_.-]{0,63}$' AND name <> 'me'),
    description  text        NOT NULL DEFAULT '',
    enabled      boolean     NOT NULL DEFAULT false,
    percentage   smallint    NOT NULL DEFAULT 0 CHECK (percentage BETWEEN 0 AND 100),
    users        uuid[]      NOT NULL DEFAULT '{}',
    workspaces   uuid[]      NOT NULL DEFAULT '{}',
    created_at   timestamptz NOT NULL DEFAULT now(),
    updated_at   timestamptz NOT NULL DEFAULT now(),
    updated_by   uuid        REFERENCES sygmax_user (id) ON DELETE SET NULL
);

-- One row per (provider, subject): the provider's stable user id linked to a local account.
-- The e-mail is what the provider said at the last login (for admins; never used to link again).
CREATE TABLE sygmax_oidc_identity (
    provider       text        NOT NULL,
    subject        text        NOT NULL,
    user_id        uuid        NOT NULL REFERENCES sygmax_user (id) ON DELETE CASCADE,
    email          text,
    created_at     timestamptz NOT NULL DEFAULT now(),
    last_login_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (provider, subject)
);
CREATE INDEX sygmax_oidc_identity_user ON sygmax_oidc_identity (user_id);
