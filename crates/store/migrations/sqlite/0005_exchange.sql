-- Quotes (a price held for a while) and exchanges between a merchant's currencies.

CREATE TABLE quotes (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    public_id TEXT NOT NULL UNIQUE,
    merchant_id INTEGER NOT NULL REFERENCES merchants(id),
    from_currency TEXT NOT NULL,
    to_currency TEXT NOT NULL,
    sender_units TEXT NOT NULL,
    fee_units TEXT NOT NULL,
    receiver_units TEXT NOT NULL,
    rate TEXT NOT NULL,
    source TEXT NOT NULL,
    created_at_ms INTEGER NOT NULL,
    expires_at_ms INTEGER NOT NULL
);
CREATE INDEX quotes_merchant ON quotes (merchant_id, id);

CREATE TABLE exchanges (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    public_id TEXT NOT NULL UNIQUE,
    merchant_id INTEGER NOT NULL REFERENCES merchants(id),
    client_id TEXT NOT NULL,
    request_hash BLOB NOT NULL,
    kind TEXT NOT NULL CHECK (kind IN ('fixed', 'market')),
    quote_id INTEGER UNIQUE REFERENCES quotes(id),
    from_currency TEXT NOT NULL,
    to_currency TEXT NOT NULL,
    sender_units TEXT NOT NULL,
    fee_units TEXT NOT NULL,
    receiver_units TEXT NOT NULL,
    rate TEXT NOT NULL,
    status TEXT NOT NULL CHECK (status IN ('pending', 'done', 'failed')),
    failure TEXT,
    ledger_tx_id INTEGER,
    created_at_ms INTEGER NOT NULL,
    updated_at_ms INTEGER NOT NULL,
    UNIQUE (merchant_id, client_id)
);
CREATE INDEX exchanges_merchant ON exchanges (merchant_id, id);
CREATE INDEX exchanges_unfinished ON exchanges (id) WHERE status <> 'done';
