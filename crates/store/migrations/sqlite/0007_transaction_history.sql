-- A merchant's transaction history across deposits and withdrawals (API dialects
-- that list both together), a free-text description on withdrawals, and receive
-- lookups by address label.

ALTER TABLE withdrawals ADD COLUMN description TEXT;
CREATE INDEX withdrawals_merchant_created ON withdrawals (merchant_id, created_at_ms);
CREATE INDEX deposits_merchant_seen ON deposits (merchant_id, first_seen_at_ms);
CREATE INDEX deposit_addresses_label ON deposit_addresses (merchant_id, label);
