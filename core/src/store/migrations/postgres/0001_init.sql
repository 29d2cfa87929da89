-- Empire's schema on PostgreSQL: the same tables as SQLite's migrations 0001 and 0002.
-- Timestamps come from the database clock (now()), so every gateway compares lease
-- expiries against one clock. Names sort bytewise (COLLATE "C"), as on SQLite, whatever
-- the database's locale.

CREATE TABLE users (
    id          BIGSERIAL   PRIMARY KEY,
    name        TEXT        COLLATE "C" NOT NULL UNIQUE,
    admin       BOOLEAN     NOT NULL DEFAULT FALSE,
    created_at  TIMESTAMPTZ NOT NULL DEFAULT now()
);

CREATE TABLE keys (
    id          BIGSERIAL   PRIMARY KEY,
    fingerprint TEXT        NOT NULL UNIQUE,
    public_key  TEXT        NOT NULL,
    user_id     BIGINT      NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    created_at  TIMESTAMPTZ NOT NULL DEFAULT now()
);

CREATE INDEX keys_user_id ON keys (user_id);

CREATE TABLE apps (
    id              BIGSERIAL   PRIMARY KEY,
    name            TEXT        COLLATE "C" NOT NULL UNIQUE,
    owner_id        BIGINT      NOT NULL REFERENCES users (id),
    -- The version of the release that serves now.
    current_release INTEGER,
    -- The last version handed out; versions are never reused.
    last_version    INTEGER     NOT NULL DEFAULT 0,
    -- The config the next deploy runs with (a succeeded release copies its own here).
    config          JSONB       NOT NULL DEFAULT '{}',
    created_at      TIMESTAMPTZ NOT NULL DEFAULT now()
);

CREATE INDEX apps_owner_id ON apps (owner_id);

CREATE TABLE releases (
    id            BIGSERIAL   PRIMARY KEY,
    app_id        BIGINT      NOT NULL REFERENCES apps (id) ON DELETE CASCADE,
    version       INTEGER     NOT NULL CHECK (version > 0),
    status        TEXT        NOT NULL
                  CHECK (status IN ('pending', 'building', 'deploying', 'succeeded', 'failed')),
    image         TEXT,
    image_id      TEXT,
    procfile      TEXT,
    -- Process type -> command.
    process_types JSONB       NOT NULL DEFAULT '{}',
    -- Config var -> value.
    config        JSONB       NOT NULL DEFAULT '{}',
    commit_sha    TEXT,
    user_name     TEXT        NOT NULL,
    description   TEXT        NOT NULL,
    failure       TEXT,
    created_at    TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at    TIMESTAMPTZ NOT NULL DEFAULT now(),
    UNIQUE (app_id, version)
);

CREATE INDEX releases_in_progress ON releases (status)
    WHERE status IN ('pending', 'building', 'deploying');

-- A release's deploy log, in chunks kept in the order they were appended (by id).
CREATE TABLE deploy_logs (
    id          BIGSERIAL PRIMARY KEY,
    release_id  BIGINT    NOT NULL REFERENCES releases (id) ON DELETE CASCADE,
    text        TEXT      NOT NULL
);

CREATE INDEX deploy_logs_release_id ON deploy_logs (release_id, id);

-- Per-app deploy leases. Keyed by app name without a foreign key, so a lease can guard
-- the first deploy of an app that does not exist yet; delete_app removes it.
CREATE TABLE leases (
    app         TEXT        PRIMARY KEY,
    owner       TEXT        NOT NULL,
    user_name   TEXT        NOT NULL,
    expires_at  TIMESTAMPTZ NOT NULL
);

-- How many instances of each process type run, and how big they are.
CREATE TABLE formation (
    app_id       BIGINT  NOT NULL REFERENCES apps (id) ON DELETE CASCADE,
    process      TEXT    NOT NULL,
    quantity     INTEGER NOT NULL CHECK (quantity >= 0),
    cpu_shares   INTEGER NOT NULL CHECK (cpu_shares > 0),
    memory_bytes BIGINT  NOT NULL CHECK (memory_bytes > 0),
    PRIMARY KEY (app_id, process)
);

-- Custom hostnames the router serves for an app; a hostname belongs to one app.
CREATE TABLE domains (
    hostname    TEXT        COLLATE "C" PRIMARY KEY,
    app_id      BIGINT      NOT NULL REFERENCES apps (id) ON DELETE CASCADE,
    created_at  TIMESTAMPTZ NOT NULL DEFAULT now()
);

CREATE INDEX domains_app_id ON domains (app_id, hostname);

-- API tokens, kept as the SHA-256 (lowercase hex) of their secret.
CREATE TABLE tokens (
    id          BIGSERIAL   PRIMARY KEY,
    user_id     BIGINT      NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    digest      TEXT        NOT NULL UNIQUE,
    description TEXT        NOT NULL,
    created_at  TIMESTAMPTZ NOT NULL DEFAULT now()
);

CREATE INDEX tokens_user_id ON tokens (user_id, id);

-- Who may operate an app (admins may operate every app).
CREATE TABLE collaborators (
    app_id      BIGINT NOT NULL REFERENCES apps (id) ON DELETE CASCADE,
    user_id     BIGINT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    PRIMARY KEY (app_id, user_id)
);

CREATE INDEX collaborators_user_id ON collaborators (user_id, app_id);

-- Who changed what, when. The app's name is kept as text so that an app's events (its
-- deletion included) outlive it; app_id links to the app while it exists.
CREATE TABLE events (
    id              BIGSERIAL   PRIMARY KEY,
    app_id          BIGINT      REFERENCES apps (id) ON DELETE SET NULL,
    app_name        TEXT,
    user_name       TEXT        NOT NULL,
    action          TEXT        NOT NULL,
    release_version INTEGER,
    message         TEXT        NOT NULL,
    created_at      TIMESTAMPTZ NOT NULL DEFAULT now()
);

CREATE INDEX events_app_name ON events (app_name, id);
CREATE INDEX events_app_id ON events (app_id);
