-- Merchants, API keys, and the double-entry ledger.
-- Amounts are exact integers in ledger units (NUMERIC(40,0): i128 fits).

CREATE TABLE merchants (
    id BIGSERIAL PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    status TEXT NOT NULL DEFAULT 'active' CHECK (status IN ('active', 'blocked')),
    created_at_ms BIGINT NOT NULL
);

CREATE TABLE api_keys (
    id BIGSERIAL PRIMARY KEY,
    merchant_id BIGINT NOT NULL REFERENCES merchants(id),
    dialect TEXT NOT NULL,
    style TEXT NOT NULL CHECK (style IN ('hmac', 'bearer')),
    public_key TEXT NOT NULL UNIQUE,
    token_hash TEXT UNIQUE,
    secret_nonce BYTEA,
    secret_ciphertext BYTEA,
    scopes TEXT NOT NULL,
    ip_allowlist TEXT NOT NULL DEFAULT '',
    label TEXT NOT NULL DEFAULT '',
    created_at_ms BIGINT NOT NULL,
    revoked_at_ms BIGINT
);
CREATE INDEX api_keys_merchant ON api_keys (merchant_id);

CREATE TABLE accounts (
    id BIGSERIAL PRIMARY KEY,
    code TEXT NOT NULL UNIQUE,
    currency TEXT NOT NULL,
    kind TEXT NOT NULL,
    merchant_id BIGINT REFERENCES merchants(id),
    user_id BIGINT,
    allow_negative BOOLEAN NOT NULL,
    balance NUMERIC(40, 0) NOT NULL DEFAULT 0,
    pending_debits NUMERIC(40, 0) NOT NULL DEFAULT 0,
    pending_credits NUMERIC(40, 0) NOT NULL DEFAULT 0,
    created_at_ms BIGINT NOT NULL
);
CREATE INDEX accounts_merchant ON accounts (merchant_id, currency);

CREATE TABLE ledger_transactions (
    id BIGSERIAL PRIMARY KEY,
    idempotency_key TEXT NOT NULL UNIQUE,
    content_hash BYTEA NOT NULL,
    kind TEXT NOT NULL CHECK (kind IN ('transfer', 'hold', 'post', 'void')),
    hold_id BIGINT REFERENCES ledger_transactions(id),
    hold_status TEXT CHECK (hold_status IN ('pending', 'posted', 'voided')),
    memo TEXT NOT NULL,
    created_at_ms BIGINT NOT NULL
);
-- A hold is posted or voided at most once.
CREATE UNIQUE INDEX ledger_transactions_one_resolution ON ledger_transactions (hold_id) WHERE hold_id IS NOT NULL;

CREATE TABLE ledger_entries (
    id BIGSERIAL PRIMARY KEY,
    tx_id BIGINT NOT NULL REFERENCES ledger_transactions(id),
    account_id BIGINT NOT NULL REFERENCES accounts(id),
    peer_account_id BIGINT NOT NULL REFERENCES accounts(id),
    currency TEXT NOT NULL,
    units NUMERIC(40, 0) NOT NULL,
    pending BOOLEAN NOT NULL
);
CREATE INDEX ledger_entries_account ON ledger_entries (account_id, id);
CREATE INDEX ledger_entries_tx ON ledger_entries (tx_id);
