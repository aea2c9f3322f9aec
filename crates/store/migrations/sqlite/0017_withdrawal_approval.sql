-- Withdrawal limits with approval. Per merchant and currency: a per-transaction and a
-- per-day limit, in units of limit_currency (the withdrawal's own currency, or a fiat
-- equivalent at the current rate). A withdrawal over one is held and waits, status
-- 'pending', for an operator's decision. (SQLite's CHECK on withdrawals.status is
-- widened to 'pending' by the store after this migration: a table rebuild.)
CREATE TABLE withdrawal_limits (
    merchant_id INTEGER NOT NULL REFERENCES merchants(id),
    currency TEXT NOT NULL,
    limit_currency TEXT NOT NULL,
    per_transaction_units TEXT,
    per_day_units TEXT,
    updated_at_ms INTEGER NOT NULL,
    PRIMARY KEY (merchant_id, currency)
);
-- Why a withdrawal waits for approval (NULL: it does not), fixed when it is stored.
ALTER TABLE withdrawals ADD COLUMN approval_reason TEXT;
-- One decision per withdrawal, ever: who, when, why.
CREATE TABLE withdrawal_decisions (
    withdrawal_id INTEGER PRIMARY KEY REFERENCES withdrawals(id),
    decision TEXT NOT NULL CHECK (decision IN ('approved', 'declined')),
    decided_by TEXT NOT NULL,
    reason TEXT,
    decided_at_ms INTEGER NOT NULL
);
