-- Empire's first schema. Timestamps are unix milliseconds (UTC) from the database clock.

CREATE TABLE users (
    id          INTEGER PRIMARY KEY,
    name        TEXT    NOT NULL UNIQUE,
    admin       INTEGER NOT NULL DEFAULT 0 CHECK (admin IN (0, 1)),
    created_at  INTEGER NOT NULL
);

CREATE TABLE keys (
    id          INTEGER PRIMARY KEY,
    fingerprint TEXT    NOT NULL UNIQUE,
    public_key  TEXT    NOT NULL,
    user_id     INTEGER NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    created_at  INTEGER NOT NULL
);

CREATE INDEX keys_user_id ON keys (user_id);

CREATE TABLE apps (
    id              INTEGER PRIMARY KEY,
    name            TEXT    NOT NULL UNIQUE,
    owner_id        INTEGER NOT NULL REFERENCES users (id),
    -- The version of the release that serves now.
    current_release INTEGER,
    -- The last version handed out; versions are never reused.
    last_version    INTEGER NOT NULL DEFAULT 0,
    created_at      INTEGER NOT NULL
);

CREATE INDEX apps_owner_id ON apps (owner_id);

CREATE TABLE releases (
    id            INTEGER PRIMARY KEY,
    app_id        INTEGER NOT NULL REFERENCES apps (id) ON DELETE CASCADE,
    version       INTEGER NOT NULL CHECK (version > 0),
    status        TEXT    NOT NULL
                  CHECK (status IN ('pending', 'building', 'deploying', 'succeeded', 'failed')),
    image         TEXT,
    image_id      TEXT,
    procfile      TEXT,
    -- JSON object: process type -> command.
    process_types TEXT    NOT NULL DEFAULT '{}',
    -- JSON object: config var -> value.
    config        TEXT    NOT NULL DEFAULT '{}',
    commit_sha    TEXT,
    user_name     TEXT    NOT NULL,
    description   TEXT    NOT NULL,
    failure       TEXT,
    created_at    INTEGER NOT NULL,
    updated_at    INTEGER NOT NULL,
    UNIQUE (app_id, version)
);

CREATE INDEX releases_in_progress ON releases (status)
    WHERE status IN ('pending', 'building', 'deploying');

-- A release's deploy log, in chunks kept in the order they were appended (by id).
CREATE TABLE deploy_logs (
    id          INTEGER PRIMARY KEY,
    release_id  INTEGER NOT NULL REFERENCES releases (id) ON DELETE CASCADE,
    text        TEXT    NOT NULL
);

CREATE INDEX deploy_logs_release_id ON deploy_logs (release_id, id);

-- Per-app deploy leases. Keyed by app name without a foreign key, so a lease can guard
-- the first deploy of an app that does not exist yet; delete_app removes it.
CREATE TABLE leases (
    app         TEXT    PRIMARY KEY,
    owner       TEXT    NOT NULL,
    user_name   TEXT    NOT NULL,
    expires_at  INTEGER NOT NULL
);
