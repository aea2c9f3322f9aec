-- Notifications: the outbox of events (written in the transaction that changes the
-- state they report), merchants' webhook endpoints, deliveries and their attempts.

-- Per-merchant event sequence (row-locked while an event is written, so sequences
-- commit in order and a merchant can pull events gap-free).
ALTER TABLE merchants ADD COLUMN event_seq BIGINT NOT NULL DEFAULT 0;

-- Which API created an object and where its own callbacks go (WestWallet's ipn_url).
ALTER TABLE deposit_addresses ADD COLUMN origin TEXT NOT NULL DEFAULT 'native';
ALTER TABLE deposit_addresses ADD COLUMN callback_url TEXT;
ALTER TABLE withdrawals ADD COLUMN origin TEXT NOT NULL DEFAULT 'native';
ALTER TABLE withdrawals ADD COLUMN callback_url TEXT;

-- The status last reported by an event; a difference is an event still to write.
ALTER TABLE deposits ADD COLUMN reported_status TEXT NOT NULL DEFAULT '';
UPDATE deposits SET reported_status = status;
CREATE INDEX deposits_unreported ON deposits (id) WHERE status <> reported_status;
ALTER TABLE withdrawals ADD COLUMN reported_status TEXT NOT NULL DEFAULT '';
UPDATE withdrawals SET reported_status = status;
CREATE INDEX withdrawals_unreported ON withdrawals (id) WHERE status <> reported_status;

CREATE TABLE webhook_endpoints (
    id BIGSERIAL PRIMARY KEY,
    merchant_id BIGINT NOT NULL REFERENCES merchants(id),
    url TEXT NOT NULL,
    format TEXT NOT NULL CHECK (format IN ('standard', 'westwallet', 'coinspaid_v1', 'coinspaid_v2')),
    event_types TEXT NOT NULL,
    secret_nonce BYTEA,
    secret_ciphertext BYTEA,
    previous_secret_nonce BYTEA,
    previous_secret_ciphertext BYTEA,
    previous_secret_until_ms BIGINT,
    status TEXT NOT NULL CHECK (status IN ('active', 'disabled')),
    disabled_reason TEXT,
    created_at_ms BIGINT NOT NULL,
    updated_at_ms BIGINT NOT NULL
);
CREATE INDEX webhook_endpoints_merchant ON webhook_endpoints (merchant_id, id);

CREATE TABLE events (
    id BIGSERIAL PRIMARY KEY,
    public_id TEXT NOT NULL UNIQUE,
    merchant_id BIGINT NOT NULL REFERENCES merchants(id),
    seq BIGINT NOT NULL,
    type TEXT NOT NULL,
    object_kind TEXT NOT NULL,
    object_id BIGINT NOT NULL,
    origin TEXT NOT NULL,
    data TEXT NOT NULL,
    -- Kassa's own webhook body, frozen when first rendered (pulled = delivered).
    standard_body TEXT,
    created_at_ms BIGINT NOT NULL,
    UNIQUE (merchant_id, seq)
);

CREATE TABLE deliveries (
    id BIGSERIAL PRIMARY KEY,
    event_id BIGINT NOT NULL REFERENCES events(id),
    merchant_id BIGINT NOT NULL REFERENCES merchants(id),
    endpoint_id BIGINT REFERENCES webhook_endpoints(id),
    format TEXT NOT NULL,
    url TEXT NOT NULL,
    status TEXT NOT NULL CHECK (status IN ('pending', 'delivered', 'failed')),
    attempts INTEGER NOT NULL DEFAULT 0,
    next_attempt_at_ms BIGINT NOT NULL,
    locked_by TEXT,
    locked_until_ms BIGINT,
    body TEXT,
    last_status_code INTEGER,
    last_error TEXT,
    delivered_at_ms BIGINT,
    created_at_ms BIGINT NOT NULL,
    updated_at_ms BIGINT NOT NULL
);
CREATE INDEX deliveries_due ON deliveries (next_attempt_at_ms, id) WHERE status = 'pending';
CREATE INDEX deliveries_event ON deliveries (event_id);
CREATE INDEX deliveries_merchant ON deliveries (merchant_id, id);
CREATE INDEX deliveries_endpoint ON deliveries (endpoint_id) WHERE status = 'pending';

CREATE TABLE delivery_attempts (
    id BIGSERIAL PRIMARY KEY,
    delivery_id BIGINT NOT NULL REFERENCES deliveries(id),
    attempted_at_ms BIGINT NOT NULL,
    status_code INTEGER,
    latency_ms BIGINT NOT NULL,
    error TEXT,
    instance TEXT NOT NULL
);
CREATE INDEX delivery_attempts_delivery ON delivery_attempts (delivery_id, id);
