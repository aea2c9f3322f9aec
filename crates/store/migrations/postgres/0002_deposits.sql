-- Chains: scan checkpoints, halts and the watcher lease; deposit addresses; deposits.

CREATE TABLE chain_state (
    chain TEXT PRIMARY KEY,
    halted_reason TEXT,
    halted_at_ms BIGINT,
    lease_owner TEXT,
    lease_until_ms BIGINT
);

-- Blocks scanned, recent ones kept for reorg detection; the highest is the checkpoint.
CREATE TABLE chain_blocks (
    chain TEXT NOT NULL,
    height BIGINT NOT NULL,
    hash TEXT NOT NULL,
    PRIMARY KEY (chain, height)
);

CREATE TABLE deposit_addresses (
    id BIGSERIAL PRIMARY KEY,
    merchant_id BIGINT NOT NULL REFERENCES merchants(id),
    user_id BIGINT,
    currency TEXT NOT NULL,
    chain TEXT NOT NULL,
    address TEXT NOT NULL,
    label TEXT,
    foreign_id TEXT,
    created_at_ms BIGINT NOT NULL,
    UNIQUE (chain, address)
);
CREATE UNIQUE INDEX deposit_addresses_foreign_id ON deposit_addresses (merchant_id, currency, foreign_id) WHERE foreign_id IS NOT NULL;
CREATE INDEX deposit_addresses_merchant ON deposit_addresses (merchant_id, id);
-- The watcher loads addresses of its chain by increasing id.
CREATE INDEX deposit_addresses_chain_id ON deposit_addresses (chain, id);

CREATE TABLE deposits (
    id BIGSERIAL PRIMARY KEY,
    chain TEXT NOT NULL,
    currency TEXT NOT NULL,
    txid TEXT NOT NULL,
    vout BIGINT NOT NULL,
    address_id BIGINT NOT NULL REFERENCES deposit_addresses(id),
    merchant_id BIGINT NOT NULL REFERENCES merchants(id),
    amount_units NUMERIC(40, 0) NOT NULL,
    dust_units NUMERIC(40, 0) NOT NULL,
    status TEXT NOT NULL CHECK (status IN ('seen', 'confirming', 'credited', 'reversed', 'dropped')),
    block_height BIGINT,
    block_hash TEXT,
    confirmations BIGINT NOT NULL DEFAULT 0,
    credits BIGINT NOT NULL DEFAULT 0,
    reversals BIGINT NOT NULL DEFAULT 0,
    first_seen_at_ms BIGINT NOT NULL,
    updated_at_ms BIGINT NOT NULL,
    UNIQUE (chain, txid, vout)
);
CREATE INDEX deposits_open ON deposits (chain, status);
CREATE INDEX deposits_merchant ON deposits (merchant_id, id);
CREATE INDEX deposits_block ON deposits (chain, block_height);
