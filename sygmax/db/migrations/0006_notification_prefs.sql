-- Per-user notification preferences: one row per (user, category) the user has changed.
-- Categories are declared by plugins (Plugin.notification_categories); a category without a
-- row here uses the plugin's default channels, so adding a category needs no data migration.
CREATE TABLE sygmax_notification_pref (
    user_id     uuid        NOT NULL REFERENCES sygmax_user (id) ON DELETE CASCADE,
    category    text        NOT NULL CHECK (category ~ '^[a-z][a-z0-9_]*\.[a-z][a-z0-9_.-]{0,62}$'),
    in_app      boolean     NOT NULL,
    email       boolean     NOT NULL,
    updated_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (user_id, category)
);
