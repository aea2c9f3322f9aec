-- One record per idempotent request: the engine's single entry point claims a key
-- (per merchant and scope) before running the request, records how it ended, and
-- answers a repeat from the record. Replaces signed_requests (the WestWallet replay
-- guard), whose entries live at most three timestamp windows anyway.

CREATE TABLE idempotency_claims (
    merchant_id INTEGER NOT NULL REFERENCES merchants(id),
    scope TEXT NOT NULL,
    request_key TEXT NOT NULL,
    -- A hash of what was asked: the same key with another request is refused.
    fingerprint BLOB NOT NULL,
    -- NULL while running (or interrupted); 'done', or 'refused' with the reason.
    outcome TEXT,
    refusal TEXT,
    created_at_ms INTEGER NOT NULL,
    expires_at_ms INTEGER NOT NULL,
    PRIMARY KEY (merchant_id, scope, request_key)
);
CREATE INDEX idempotency_claims_expiry ON idempotency_claims (expires_at_ms);

DROP TABLE signed_requests;
