-- Merchants, API keys, and the double-entry ledger.
-- Amounts are exact integers in ledger units, stored as decimal TEXT: SQLite's
-- integers are 64-bit and its NUMERIC affinity would turn large values into floats.

CREATE TABLE merchants (
    id INTEGER PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    status TEXT NOT NULL DEFAULT 'active' CHECK (status IN ('active', 'blocked')),
    created_at_ms INTEGER NOT NULL
);

CREATE TABLE api_keys (
    id INTEGER PRIMARY KEY,
    merchant_id INTEGER NOT NULL REFERENCES merchants(id),
    dialect TEXT NOT NULL,
    style TEXT NOT NULL CHECK (style IN ('hmac', 'bearer')),
    public_key TEXT NOT NULL UNIQUE,
    token_hash TEXT UNIQUE,
    secret_nonce BLOB,
    secret_ciphertext BLOB,
    scopes TEXT NOT NULL,
    ip_allowlist TEXT NOT NULL DEFAULT '',
    label TEXT NOT NULL DEFAULT '',
    created_at_ms INTEGER NOT NULL,
    revoked_at_ms INTEGER
);
CREATE INDEX api_keys_merchant ON api_keys (merchant_id);

CREATE TABLE accounts (
    id INTEGER PRIMARY KEY,
    code TEXT NOT NULL UNIQUE,
    currency TEXT NOT NULL,
    kind TEXT NOT NULL,
    merchant_id INTEGER REFERENCES merchants(id),
    user_id INTEGER,
    allow_negative BOOLEAN NOT NULL,
    balance TEXT NOT NULL DEFAULT '0',
    pending_debits TEXT NOT NULL DEFAULT '0',
    pending_credits TEXT NOT NULL DEFAULT '0',
    created_at_ms INTEGER NOT NULL
);
CREATE INDEX accounts_merchant ON accounts (merchant_id, currency);

CREATE TABLE ledger_transactions (
    id INTEGER PRIMARY KEY,
    idempotency_key TEXT NOT NULL UNIQUE,
    content_hash BLOB NOT NULL,
    kind TEXT NOT NULL CHECK (kind IN ('transfer', 'hold', 'post', 'void')),
    hold_id INTEGER REFERENCES ledger_transactions(id),
    hold_status TEXT CHECK (hold_status IN ('pending', 'posted', 'voided')),
    memo TEXT NOT NULL,
    created_at_ms INTEGER NOT NULL
);
-- A hold is posted or voided at most once.
CREATE UNIQUE INDEX ledger_transactions_one_resolution ON ledger_transactions (hold_id) WHERE hold_id IS NOT NULL;

CREATE TABLE ledger_entries (
    id INTEGER PRIMARY KEY,
    tx_id INTEGER NOT NULL REFERENCES ledger_transactions(id),
    account_id INTEGER NOT NULL REFERENCES accounts(id),
    peer_account_id INTEGER NOT NULL REFERENCES accounts(id),
    currency TEXT NOT NULL,
    units TEXT NOT NULL,
    pending BOOLEAN NOT NULL
);
CREATE INDEX ledger_entries_account ON ledger_entries (account_id, id);
CREATE INDEX ledger_entries_tx ON ledger_entries (tx_id);
