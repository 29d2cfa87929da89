-- Outgoing webhooks and their deliveries. Timestamps are unix milliseconds (UTC).

-- What else an event says (commit, source, timings, config keys…), as a JSON object.
ALTER TABLE events ADD COLUMN data TEXT NOT NULL DEFAULT '{}';

-- Where to post which events. Keyed by app name without a foreign key, like events: an
-- app's webhooks hear of its destruction. app_name NULL: every app's events.
CREATE TABLE outgoing_webhooks (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    app_name    TEXT,
    url         TEXT    NOT NULL,
    -- JSON array of event name patterns (`deploy.*`).
    events      TEXT    NOT NULL,
    format      TEXT    NOT NULL CHECK (format IN ('json', 'slack')),
    secret      TEXT    NOT NULL,
    creator     TEXT    NOT NULL,
    created_at  INTEGER NOT NULL
);

CREATE INDEX outgoing_webhooks_app_name ON outgoing_webhooks (app_name, id);

-- One event on its way to one webhook, queued in the transaction that records the event.
-- A pending delivery is due at next_attempt_at; claiming it moves next_attempt_at past a
-- short lease and names the claimer, so one gateway attempts it at a time.
CREATE TABLE outgoing_deliveries (
    seq             INTEGER PRIMARY KEY AUTOINCREMENT,
    id              TEXT    NOT NULL UNIQUE,
    webhook_id      INTEGER NOT NULL REFERENCES outgoing_webhooks (id) ON DELETE CASCADE,
    event_id        INTEGER,
    event           TEXT    NOT NULL,
    payload         TEXT    NOT NULL,
    status          TEXT    NOT NULL CHECK (status IN ('pending', 'delivered', 'failed')),
    attempts        INTEGER NOT NULL DEFAULT 0,
    next_attempt_at INTEGER,
    claimed_by      TEXT,
    created_at      INTEGER NOT NULL
);

CREATE INDEX outgoing_deliveries_due ON outgoing_deliveries (next_attempt_at)
    WHERE status = 'pending';
CREATE INDEX outgoing_deliveries_webhook ON outgoing_deliveries (webhook_id, seq);

-- Every attempt of a delivery.
CREATE TABLE outgoing_attempts (
    delivery_id  TEXT    NOT NULL REFERENCES outgoing_deliveries (id) ON DELETE CASCADE,
    number       INTEGER NOT NULL CHECK (number > 0),
    attempted_at INTEGER NOT NULL,
    status_code  INTEGER,
    error        TEXT,
    duration_ms  INTEGER NOT NULL,
    -- At most 1 KB of the answer's body.
    response     TEXT    NOT NULL,
    PRIMARY KEY (delivery_id, number)
) WITHOUT ROWID;
