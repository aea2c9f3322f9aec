-- Quotes (a price held for a while) and exchanges between a merchant's currencies.

CREATE TABLE quotes (
    id BIGSERIAL PRIMARY KEY,
    public_id TEXT NOT NULL UNIQUE,
    merchant_id BIGINT NOT NULL REFERENCES merchants(id),
    from_currency TEXT NOT NULL,
    to_currency TEXT NOT NULL,
    sender_units NUMERIC(40, 0) NOT NULL,
    fee_units NUMERIC(40, 0) NOT NULL,
    receiver_units NUMERIC(40, 0) NOT NULL,
    rate TEXT NOT NULL,
    source TEXT NOT NULL,
    created_at_ms BIGINT NOT NULL,
    expires_at_ms BIGINT NOT NULL
);
CREATE INDEX quotes_merchant ON quotes (merchant_id, id);

CREATE TABLE exchanges (
    id BIGSERIAL PRIMARY KEY,
    public_id TEXT NOT NULL UNIQUE,
    merchant_id BIGINT NOT NULL REFERENCES merchants(id),
    client_id TEXT NOT NULL,
    request_hash BYTEA NOT NULL,
    kind TEXT NOT NULL CHECK (kind IN ('fixed', 'market')),
    quote_id BIGINT UNIQUE REFERENCES quotes(id),
    from_currency TEXT NOT NULL,
    to_currency TEXT NOT NULL,
    sender_units NUMERIC(40, 0) NOT NULL,
    fee_units NUMERIC(40, 0) NOT NULL,
    receiver_units NUMERIC(40, 0) NOT NULL,
    rate TEXT NOT NULL,
    status TEXT NOT NULL CHECK (status IN ('pending', 'done', 'failed')),
    failure TEXT,
    ledger_tx_id BIGINT,
    created_at_ms BIGINT NOT NULL,
    updated_at_ms BIGINT NOT NULL,
    UNIQUE (merchant_id, client_id)
);
CREATE INDEX exchanges_merchant ON exchanges (merchant_id, id);
CREATE INDEX exchanges_unfinished ON exchanges (id) WHERE status <> 'done';
