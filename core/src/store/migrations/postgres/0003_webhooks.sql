-- Outgoing webhooks and their deliveries. Timestamps come from the database clock.

-- What else an event says (commit, source, timings, config keys…).
ALTER TABLE events ADD COLUMN data JSONB NOT NULL DEFAULT '{}';

-- Where to post which events. Keyed by app name without a foreign key, like events: an
-- app's webhooks hear of its destruction. app_name NULL: every app's events.
CREATE TABLE outgoing_webhooks (
    id          BIGSERIAL   PRIMARY KEY,
    app_name    TEXT        COLLATE "C",
    url         TEXT        NOT NULL,
    -- Event name patterns (`deploy.*`).
    events      JSONB       NOT NULL,
    format      TEXT        NOT NULL CHECK (format IN ('json', 'slack')),
    secret      TEXT        NOT NULL,
    creator     TEXT        NOT NULL,
    created_at  TIMESTAMPTZ NOT NULL DEFAULT now()
);

CREATE INDEX outgoing_webhooks_app_name ON outgoing_webhooks (app_name, id);

-- One event on its way to one webhook, queued in the transaction that records the event.
-- A pending delivery is due at next_attempt_at; claiming it (FOR UPDATE SKIP LOCKED)
-- moves next_attempt_at past a short lease and names the claimer, so one gateway
-- attempts it at a time.
CREATE TABLE outgoing_deliveries (
    seq             BIGSERIAL   PRIMARY KEY,
    id              TEXT        NOT NULL UNIQUE,
    webhook_id      BIGINT      NOT NULL REFERENCES outgoing_webhooks (id) ON DELETE CASCADE,
    event_id        BIGINT,
    event           TEXT        NOT NULL,
    payload         JSONB       NOT NULL,
    status          TEXT        NOT NULL CHECK (status IN ('pending', 'delivered', 'failed')),
    attempts        INTEGER     NOT NULL DEFAULT 0,
    next_attempt_at TIMESTAMPTZ,
    claimed_by      TEXT,
    created_at      TIMESTAMPTZ NOT NULL DEFAULT now()
);

CREATE INDEX outgoing_deliveries_due ON outgoing_deliveries (next_attempt_at)
    WHERE status = 'pending';
CREATE INDEX outgoing_deliveries_webhook ON outgoing_deliveries (webhook_id, seq);

-- Every attempt of a delivery.
CREATE TABLE outgoing_attempts (
    delivery_id  TEXT        NOT NULL REFERENCES outgoing_deliveries (id) ON DELETE CASCADE,
    number       INTEGER     NOT NULL CHECK (number > 0),
    attempted_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    status_code  INTEGER,
    error        TEXT,
    duration_ms  BIGINT      NOT NULL,
    -- At most 1 KB of the answer's body.
    response     TEXT        NOT NULL,
    PRIMARY KEY (delivery_id, number)
);
