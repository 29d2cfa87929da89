-- Repositories connected to apps, their builds and the webhook deliveries seen.
-- Everything goes with its app (ON DELETE CASCADE). Timestamps are unix milliseconds.

-- One repository per app: pushes to `branch` deploy, fetched from `repo_url` only.
CREATE TABLE repo_connections (
    app_id       INTEGER PRIMARY KEY REFERENCES apps (id) ON DELETE CASCADE,
    repo_url     TEXT    NOT NULL,
    branch       TEXT    NOT NULL,
    secret       TEXT    NOT NULL,
    -- JSON {"public": …, "private": …} for SSH URLs.
    deploy_key   TEXT,
    created_at   INTEGER NOT NULL
);

-- A webhook push's build, from queued to succeeded, failed or superseded.
CREATE TABLE builds (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    app_id          INTEGER NOT NULL REFERENCES apps (id) ON DELETE CASCADE,
    source          TEXT    NOT NULL,
    commit_sha      TEXT    NOT NULL,
    reference       TEXT    NOT NULL,
    pusher          TEXT    NOT NULL,
    message         TEXT    NOT NULL,
    delivery        TEXT,
    -- The gateway whose queue holds it (a restart fails only its own).
    gateway         TEXT,
    status          TEXT    NOT NULL
                    CHECK (status IN ('queued', 'running', 'succeeded', 'failed', 'superseded')),
    release_version INTEGER,
    failure         TEXT,
    created_at      INTEGER NOT NULL,
    updated_at      INTEGER NOT NULL
);

CREATE INDEX builds_app_id ON builds (app_id, id);
CREATE INDEX builds_unfinished ON builds (status) WHERE status IN ('queued', 'running');

-- A build's log, in chunks kept in the order they were appended (by id).
CREATE TABLE build_logs (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    build_id    INTEGER NOT NULL REFERENCES builds (id) ON DELETE CASCADE,
    text        TEXT    NOT NULL
);

CREATE INDEX build_logs_build_id ON build_logs (build_id, id);

-- Webhook delivery IDs already handled, so a redelivery deploys nothing.
CREATE TABLE received_deliveries (
    app_id      INTEGER NOT NULL REFERENCES apps (id) ON DELETE CASCADE,
    delivery    TEXT    NOT NULL,
    created_at  INTEGER NOT NULL,
    PRIMARY KEY (app_id, delivery)
) WITHOUT ROWID;
