-- Payout plans (scheduled split payouts): a deposit address, the payouts it pays once
-- its deposit is credited and a delay has passed, and the fee. The payouts are
-- withdrawals sharing the plan's batch key, held when the deposit is credited and
-- sent by the broadcaster not before their time, all in one transaction.

CREATE TABLE referral_codes (
    code TEXT PRIMARY KEY,
    merchant_id INTEGER NOT NULL REFERENCES merchants(id),
    created_at_ms INTEGER NOT NULL
);

CREATE TABLE payout_plans (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    public_id TEXT NOT NULL UNIQUE,
    merchant_id INTEGER NOT NULL REFERENCES merchants(id),
    currency TEXT NOT NULL,
    address_id INTEGER NOT NULL UNIQUE REFERENCES deposit_addresses(id),
    split BOOLEAN NOT NULL,
    delay_hours INTEGER NOT NULL,
    ref_code TEXT REFERENCES referral_codes(code),
    status TEXT NOT NULL CHECK (status IN ('pending', 'confirming', 'processing', 'sent', 'complete', 'expired', 'failed')),
    expected_units TEXT,
    fee_units TEXT,
    deposit_units TEXT,
    deposit_txid TEXT,
    valid_until_ms INTEGER NOT NULL,
    confirmed_at_ms INTEGER,
    scheduled BOOLEAN NOT NULL DEFAULT FALSE,
    txid TEXT,
    failure TEXT,
    created_at_ms INTEGER NOT NULL,
    updated_at_ms INTEGER NOT NULL
);
CREATE INDEX payout_plans_merchant ON payout_plans (merchant_id, id);
CREATE INDEX payout_plans_open ON payout_plans (status);

CREATE TABLE payout_plan_payouts (
    plan_id INTEGER NOT NULL REFERENCES payout_plans(id),
    position INTEGER NOT NULL,
    address TEXT NOT NULL,
    planned_units TEXT,
    paid_units TEXT,
    PRIMARY KEY (plan_id, position)
);

-- A withdrawal not sent before this time (NULL: at once), and the key of the
-- withdrawals one transaction pays together (NULL: none).
ALTER TABLE withdrawals ADD COLUMN not_before_ms INTEGER;
ALTER TABLE withdrawals ADD COLUMN batch_key TEXT;
CREATE INDEX withdrawals_batch ON withdrawals (batch_key) WHERE batch_key IS NOT NULL;
