-- Operating apps: config on the app, formation, custom domains, API tokens, access
-- control (collaborators) and events. Timestamps are unix milliseconds (UTC).

-- The config the next deploy runs with: the current release's, or what was set before
-- the first deploy. A release that succeeds copies its config here.
ALTER TABLE apps ADD COLUMN config TEXT NOT NULL DEFAULT '{}';

-- `GET /apps` lists every app by name: read it from the index alone, in order.
CREATE INDEX apps_listing ON apps (name, id, current_release, created_at);

UPDATE apps SET config = COALESCE(
    (SELECT r.config FROM releases r
     WHERE r.app_id = apps.id AND r.version = apps.current_release),
    '{}');

-- How many instances of each process type run, and how big they are. Lives on the app,
-- not in releases: scaling makes no release.
CREATE TABLE formation (
    app_id       INTEGER NOT NULL REFERENCES apps (id) ON DELETE CASCADE,
    process      TEXT    NOT NULL,
    quantity     INTEGER NOT NULL CHECK (quantity >= 0),
    cpu_shares   INTEGER NOT NULL CHECK (cpu_shares > 0),
    memory_bytes INTEGER NOT NULL CHECK (memory_bytes > 0),
    PRIMARY KEY (app_id, process)
) WITHOUT ROWID;

-- Custom hostnames the router serves for an app; a hostname belongs to one app.
CREATE TABLE domains (
    hostname    TEXT    PRIMARY KEY,
    app_id      INTEGER NOT NULL REFERENCES apps (id) ON DELETE CASCADE,
    created_at  INTEGER NOT NULL
);

CREATE INDEX domains_app_id ON domains (app_id, hostname);

-- API tokens, kept as the SHA-256 (lowercase hex) of their secret.
CREATE TABLE tokens (
    id          INTEGER PRIMARY KEY,
    user_id     INTEGER NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    digest      TEXT    NOT NULL UNIQUE,
    description TEXT    NOT NULL,
    created_at  INTEGER NOT NULL
);

CREATE INDEX tokens_user_id ON tokens (user_id, id);

-- Who may operate an app (admins may operate every app).
CREATE TABLE collaborators (
    app_id      INTEGER NOT NULL REFERENCES apps (id) ON DELETE CASCADE,
    user_id     INTEGER NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    PRIMARY KEY (app_id, user_id)
) WITHOUT ROWID;

-- `apps_for` walks a user's collaborations.
CREATE INDEX collaborators_user_id ON collaborators (user_id, app_id);

-- Apps pushed before access control existed belong to their first pusher.
INSERT INTO collaborators (app_id, user_id) SELECT id, owner_id FROM apps;

-- Who changed what, when. The app's name is kept as text so that an app's events
-- (its deletion included) outlive it; app_id links to the app while it exists.
CREATE TABLE events (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    app_id          INTEGER REFERENCES apps (id) ON DELETE SET NULL,
    app_name        TEXT,
    user_name       TEXT    NOT NULL,
    action          TEXT    NOT NULL,
    release_version INTEGER,
    message         TEXT    NOT NULL,
    created_at      INTEGER NOT NULL
);

CREATE INDEX events_app_name ON events (app_name, id);
CREATE INDEX events_app_id ON events (app_id);
