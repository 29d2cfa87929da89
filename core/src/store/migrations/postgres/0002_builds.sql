-- Repositories connected to apps, their builds and the webhook deliveries seen.
-- Everything goes with its app (ON DELETE CASCADE).

-- One repository per app: pushes to `branch` deploy, fetched from `repo_url` only.
CREATE TABLE repo_connections (
    app_id       BIGINT      PRIMARY KEY REFERENCES apps (id) ON DELETE CASCADE,
    repo_url     TEXT        NOT NULL,
    branch       TEXT        NOT NULL,
    secret       TEXT        NOT NULL,
    -- {"public": …, "private": …} for SSH URLs.
    deploy_key   JSONB,
    created_at   TIMESTAMPTZ NOT NULL DEFAULT now()
);

-- A webhook push's build, from queued to succeeded, failed or superseded.
CREATE TABLE builds (
    id              BIGSERIAL   PRIMARY KEY,
    app_id          BIGINT      NOT NULL REFERENCES apps (id) ON DELETE CASCADE,
    source          TEXT        NOT NULL,
    commit_sha      TEXT        NOT NULL,
    reference       TEXT        NOT NULL,
    pusher          TEXT        NOT NULL,
    message         TEXT        NOT NULL,
    delivery        TEXT,
    -- The gateway whose queue holds it (a restart fails only its own).
    gateway         TEXT,
    status          TEXT        NOT NULL
                    CHECK (status IN ('queued', 'running', 'succeeded', 'failed', 'superseded')),
    release_version INTEGER,
    failure         TEXT,
    created_at      TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at      TIMESTAMPTZ NOT NULL DEFAULT now()
);

CREATE INDEX builds_app_id ON builds (app_id, id);
CREATE INDEX builds_unfinished ON builds (status) WHERE status IN ('queued', 'running');

-- A build's log, in chunks kept in the order they were appended (by id).
CREATE TABLE build_logs (
    id          BIGSERIAL PRIMARY KEY,
    build_id    BIGINT    NOT NULL REFERENCES builds (id) ON DELETE CASCADE,
    text        TEXT      NOT NULL
);

CREATE INDEX build_logs_build_id ON build_logs (build_id, id);

-- Webhook delivery IDs already handled, so a redelivery deploys nothing.
CREATE TABLE received_deliveries (
    app_id      BIGINT      NOT NULL REFERENCES apps (id) ON DELETE CASCADE,
    delivery    TEXT        NOT NULL,
    created_at  TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (app_id, delivery)
);
