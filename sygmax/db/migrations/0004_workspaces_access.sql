-- Workspaces, memberships, custom roles, teams, invitations and per-object ACLs.
-- Built-in roles (owner, admin, editor, viewer) live in code (sygmax/auth/policy.py); a
-- member holds either a built-in role (`role`) or one custom role of the same workspace
-- (`role_id`). Composite foreign keys (workspace_id, ...) make it impossible for a row to
-- point at another workspace's team, role or member.

CREATE TABLE sygmax_workspace (
    id          uuid        PRIMARY KEY,
    name        text        NOT NULL,
    created_by  uuid        REFERENCES sygmax_user (id) ON DELETE SET NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE sygmax_role (
    id            uuid        PRIMARY KEY,
    workspace_id  uuid        NOT NULL REFERENCES sygmax_workspace (id) ON DELETE CASCADE,
    name          text        NOT NULL,
    description   text        NOT NULL DEFAULT '',
    permissions   text[]      NOT NULL DEFAULT '{}',
    created_at    timestamptz NOT NULL DEFAULT now(),
    updated_at    timestamptz NOT NULL DEFAULT now(),
    UNIQUE (workspace_id, id)
);
CREATE UNIQUE INDEX sygmax_role_name ON sygmax_role (workspace_id, lower(name));

CREATE TABLE sygmax_membership (
    workspace_id  uuid        NOT NULL REFERENCES sygmax_workspace (id) ON DELETE CASCADE,
    user_id       uuid        NOT NULL REFERENCES sygmax_user (id) ON DELETE CASCADE,
    role          text        CHECK (role IN ('owner', 'admin', 'editor', 'viewer')),
    role_id       uuid,
    joined_at     timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (workspace_id, user_id),
    FOREIGN KEY (workspace_id, role_id) REFERENCES sygmax_role (workspace_id, id),
    CHECK ((role IS NULL) <> (role_id IS NULL))
);
CREATE INDEX sygmax_membership_user ON sygmax_membership (user_id);
CREATE INDEX sygmax_membership_role ON sygmax_membership (role_id) WHERE role_id IS NOT NULL;

CREATE TABLE sygmax_team (
    id            uuid        PRIMARY KEY,
    workspace_id  uuid        NOT NULL REFERENCES sygmax_workspace (id) ON DELETE CASCADE,
    name          text        NOT NULL,
    description   text        NOT NULL DEFAULT '',
    created_at    timestamptz NOT NULL DEFAULT now(),
    UNIQUE (workspace_id, id)
);
CREATE UNIQUE INDEX sygmax_team_name ON sygmax_team (workspace_id, lower(name));

-- Team members must be members of the team's workspace; leaving the workspace leaves its teams.
CREATE TABLE sygmax_team_member (
    workspace_id  uuid        NOT NULL,
    team_id       uuid        NOT NULL,
    user_id       uuid        NOT NULL,
    added_at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (team_id, user_id),
    FOREIGN KEY (workspace_id, team_id) REFERENCES sygmax_team (workspace_id, id) ON DELETE CASCADE,
    FOREIGN KEY (workspace_id, user_id) REFERENCES sygmax_membership (workspace_id, user_id) ON DELETE CASCADE
);
CREATE INDEX sygmax_team_member_user ON sygmax_team_member (workspace_id, user_id);

-- Invitations: only the SHA-256 of the token is stored. A link is single-use and expires.
CREATE TABLE sygmax_invite (
    id            uuid        PRIMARY KEY,
    workspace_id  uuid        NOT NULL REFERENCES sygmax_workspace (id) ON DELETE CASCADE,
    token_hash    bytea       NOT NULL UNIQUE,
    email         text,
    role          text        CHECK (role IN ('owner', 'admin', 'editor', 'viewer')),
    role_id       uuid,
    created_by    uuid        REFERENCES sygmax_user (id) ON DELETE SET NULL,
    created_at    timestamptz NOT NULL DEFAULT now(),
    expires_at    timestamptz NOT NULL,
    used_at       timestamptz,
    used_by       uuid        REFERENCES sygmax_user (id) ON DELETE SET NULL,
    FOREIGN KEY (workspace_id, role_id) REFERENCES sygmax_role (workspace_id, id) ON DELETE CASCADE,
    CHECK ((role IS NULL) <> (role_id IS NULL))
);
CREATE INDEX sygmax_invite_workspace ON sygmax_invite (workspace_id, created_at);

-- Per-object access control for objects any plugin owns, addressed by (object_type, object_id)
-- inside one workspace. A restricted object is visible only to its explicit grantees, whatever
-- their workspace role.
CREATE TABLE sygmax_acl_object (
    workspace_id  uuid        NOT NULL REFERENCES sygmax_workspace (id) ON DELETE CASCADE,
    object_type   text        NOT NULL,
    object_id     text        NOT NULL,
    restricted    boolean     NOT NULL DEFAULT false,
    updated_at    timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (workspace_id, object_type, object_id)
);

-- One grant gives one principal (a member, a team, a custom role or a built-in role) a set of
-- permissions on one object. Grants to a member or team vanish with the membership or team.
CREATE TABLE sygmax_acl_grant (
    id              bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    workspace_id    uuid        NOT NULL REFERENCES sygmax_workspace (id) ON DELETE CASCADE,
    object_type     text        NOT NULL,
    object_id       text        NOT NULL,
    principal_kind  text        NOT NULL CHECK (principal_kind IN ('user', 'team', 'role')),
    user_id         uuid,
    team_id         uuid,
    role_id         uuid,
    role            text        CHECK (role IN ('owner', 'admin', 'editor', 'viewer')),
    permissions     text[]      NOT NULL,
    created_by      uuid,
    created_at      timestamptz NOT NULL DEFAULT now(),
    FOREIGN KEY (workspace_id, user_id) REFERENCES sygmax_membership (workspace_id, user_id) ON DELETE CASCADE,
    FOREIGN KEY (workspace_id, team_id) REFERENCES sygmax_team (workspace_id, id) ON DELETE CASCADE,
    FOREIGN KEY (workspace_id, role_id) REFERENCES sygmax_role (workspace_id, id) ON DELETE CASCADE,
    CHECK (num_nonnulls(user_id, team_id, role_id, role) = 1),
    CHECK (principal_kind <> 'user' OR user_id IS NOT NULL),
    CHECK (principal_kind <> 'team' OR team_id IS NOT NULL),
    CHECK (principal_kind <> 'role' OR role_id IS NOT NULL OR role IS NOT NULL)
);
CREATE UNIQUE INDEX sygmax_acl_grant_principal ON sygmax_acl_grant
    (workspace_id, object_type, object_id, principal_kind,
     coalesce(user_id, team_id, role_id, '00000000-0000-0000-0000-000000000000'::uuid), coalesce(role, ''));
CREATE INDEX sygmax_acl_grant_user ON sygmax_acl_grant (workspace_id, user_id) WHERE user_id IS NOT NULL;
CREATE INDEX sygmax_acl_grant_team ON sygmax_acl_grant (team_id) WHERE team_id IS NOT NULL;
CREATE INDEX sygmax_acl_grant_role ON sygmax_acl_grant (role_id) WHERE role_id IS NOT NULL;
