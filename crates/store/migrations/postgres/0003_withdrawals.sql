-- Withdrawals and the on-chain payouts (one transaction, possibly batched) that pay them.

CREATE TABLE payouts (
    id BIGSERIAL PRIMARY KEY,
    chain TEXT NOT NULL,
    currency TEXT NOT NULL,
    status TEXT NOT NULL CHECK (status IN ('preparing', 'signed', 'broadcast', 'confirmed', 'failed')),
    txid TEXT,
    raw_hex TEXT,
    network_fee_units NUMERIC(40, 0),
    fee_booked BOOLEAN NOT NULL DEFAULT FALSE,
    failure TEXT,
    created_at_ms BIGINT NOT NULL,
    updated_at_ms BIGINT NOT NULL
);
CREATE INDEX payouts_open ON payouts (chain, status);

CREATE TABLE withdrawals (
    id BIGSERIAL PRIMARY KEY,
    merchant_id BIGINT NOT NULL REFERENCES merchants(id),
    currency TEXT NOT NULL,
    chain TEXT NOT NULL,
    address TEXT NOT NULL,
    amount_units NUMERIC(40, 0) NOT NULL,
    fee_units NUMERIC(40, 0) NOT NULL,
    priority TEXT NOT NULL CHECK (priority IN ('low', 'medium', 'high')),
    idempotency_key TEXT NOT NULL,
    request_hash BYTEA NOT NULL,
    status TEXT NOT NULL CHECK (status IN ('requested', 'queued', 'signed', 'broadcast', 'confirmed', 'failed', 'cancelled')),
    hold_tx_id BIGINT,
    hold_posted BOOLEAN NOT NULL DEFAULT FALSE,
    payout_id BIGINT REFERENCES payouts(id),
    txid TEXT,
    vout BIGINT,
    confirmations BIGINT NOT NULL DEFAULT 0,
    failure TEXT,
    created_at_ms BIGINT NOT NULL,
    updated_at_ms BIGINT NOT NULL,
    UNIQUE (merchant_id, idempotency_key)
);
CREATE INDEX withdrawals_open ON withdrawals (chain, status);
CREATE INDEX withdrawals_merchant ON withdrawals (merchant_id, id);
CREATE INDEX withdrawals_payout ON withdrawals (payout_id);
