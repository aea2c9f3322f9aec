-- Chains: scan checkpoints, halts and the watcher lease; deposit addresses; deposits.

CREATE TABLE chain_state (
    chain TEXT PRIMARY KEY,
    halted_reason TEXT,
    halted_at_ms INTEGER,
    lease_owner TEXT,
    lease_until_ms INTEGER
);

-- Blocks scanned, recent ones kept for reorg detection; the highest is the checkpoint.
CREATE TABLE chain_blocks (
    chain TEXT NOT NULL,
    height INTEGER NOT NULL,
    hash TEXT NOT NULL,
    PRIMARY KEY (chain, height)
);

CREATE TABLE deposit_addresses (
    id INTEGER PRIMARY KEY,
    merchant_id INTEGER NOT NULL REFERENCES merchants(id),
    user_id INTEGER,
    currency TEXT NOT NULL,
    chain TEXT NOT NULL,
    address TEXT NOT NULL,
    label TEXT,
    foreign_id TEXT,
    created_at_ms INTEGER NOT NULL,
    UNIQUE (chain, address)
);
CREATE UNIQUE INDEX deposit_addresses_foreign_id ON deposit_addresses (merchant_id, currency, foreign_id) WHERE foreign_id IS NOT NULL;
CREATE INDEX deposit_addresses_merchant ON deposit_addresses (merchant_id, id);
-- The watcher loads addresses of its chain by increasing id.
CREATE INDEX deposit_addresses_chain_id ON deposit_addresses (chain, id);

CREATE TABLE deposits (
    id INTEGER PRIMARY KEY,
    chain TEXT NOT NULL,
    currency TEXT NOT NULL,
    txid TEXT NOT NULL,
    vout INTEGER NOT NULL,
    address_id INTEGER NOT NULL REFERENCES deposit_addresses(id),
    merchant_id INTEGER NOT NULL REFERENCES merchants(id),
    amount_units TEXT NOT NULL,
    dust_units TEXT NOT NULL,
    status TEXT NOT NULL CHECK (status IN ('seen', 'confirming', 'credited', 'reversed', 'dropped')),
    block_height INTEGER,
    block_hash TEXT,
    confirmations INTEGER NOT NULL DEFAULT 0,
    credits INTEGER NOT NULL DEFAULT 0,
    reversals INTEGER NOT NULL DEFAULT 0,
    first_seen_at_ms INTEGER NOT NULL,
    updated_at_ms INTEGER NOT NULL,
    UNIQUE (chain, txid, vout)
);
CREATE INDEX deposits_open ON deposits (chain, status);
CREATE INDEX deposits_merchant ON deposits (merchant_id, id);
CREATE INDEX deposits_block ON deposits (chain, block_height);
