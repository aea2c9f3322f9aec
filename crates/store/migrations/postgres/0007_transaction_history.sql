-- A merchant's transaction history across deposits and withdrawals (API dialects
-- that list both together), a free-text description on withdrawals, and receive
-- lookups by address label.

ALTER TABLE withdrawals ADD COLUMN description TEXT;
CREATE INDEX withdrawals_merchant_created ON withdrawals (merchant_id, created_at_ms);
CREATE INDEX deposits_merchant_seen ON deposits (merchant_id, first_seen_at_ms);
CREATE INDEX deposit_addresses_label ON deposit_addresses (merchant_id, label);

-- Signed requests already seen (by their timestamp and signature), kept for as long
-- as a replay could still be accepted: a replayed money-moving request is answered
-- from what the first one did, never run again.
CREATE TABLE signed_requests (
    merchant_id BIGINT NOT NULL REFERENCES merchants(id),
    request_key TEXT NOT NULL,
    created_at_ms BIGINT NOT NULL,
    PRIMARY KEY (merchant_id, request_key)
);
CREATE INDEX signed_requests_age ON signed_requests (created_at_ms);
