-- Withdrawals and the on-chain payouts (one transaction, possibly batched) that pay them.

CREATE TABLE payouts (
    id INTEGER PRIMARY KEY,
    chain TEXT NOT NULL,
    currency TEXT NOT NULL,
    status TEXT NOT NULL CHECK (status IN ('preparing', 'signed', 'broadcast', 'confirmed', 'failed')),
    txid TEXT,
    raw_hex TEXT,
    network_fee_units TEXT,
    fee_booked BOOLEAN NOT NULL DEFAULT FALSE,
    failure TEXT,
    created_at_ms INTEGER NOT NULL,
    updated_at_ms INTEGER NOT NULL
);
CREATE INDEX payouts_open ON payouts (chain, status);

-- AUTOINCREMENT: ids appear in ledger idempotency keys, so a deleted id is never reused.
CREATE TABLE withdrawals (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    merchant_id INTEGER NOT NULL REFERENCES merchants(id),
    currency TEXT NOT NULL,
    chain TEXT NOT NULL,
    address TEXT NOT NULL,
    amount_units TEXT NOT NULL,
    fee_units TEXT NOT NULL,
    priority TEXT NOT NULL CHECK (priority IN ('low', 'medium', 'high')),
    idempotency_key TEXT NOT NULL,
    request_hash BLOB NOT NULL,
    status TEXT NOT NULL CHECK (status IN ('requested', 'queued', 'signed', 'broadcast', 'confirmed', 'failed', 'cancelled')),
    hold_tx_id INTEGER,
    hold_posted BOOLEAN NOT NULL DEFAULT FALSE,
    payout_id INTEGER REFERENCES payouts(id),
    txid TEXT,
    vout INTEGER,
    confirmations INTEGER NOT NULL DEFAULT 0,
    failure TEXT,
    created_at_ms INTEGER NOT NULL,
    updated_at_ms INTEGER NOT NULL,
    UNIQUE (merchant_id, idempotency_key)
);
CREATE INDEX withdrawals_open ON withdrawals (chain, status);
CREATE INDEX withdrawals_merchant ON withdrawals (merchant_id, id);
CREATE INDEX withdrawals_payout ON withdrawals (payout_id);
