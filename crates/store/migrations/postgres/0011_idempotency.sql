-- How an idempotent request ended, per merchant, scope and key: the engine's single
-- entry point answers a repeat from the effect the request stored under its key, or
-- from a refusal kept here (answered again as itself). Nothing is written before the
-- request runs, so one interrupted before it took effect is processed as new.
-- Replaces signed_requests (the WestWallet replay guard).

CREATE TABLE idempotency_claims (
    merchant_id BIGINT NOT NULL REFERENCES merchants(id),
    scope TEXT NOT NULL,
    request_key TEXT NOT NULL,
    -- A hash of what was asked: the same key with another request is refused.
    fingerprint BYTEA NOT NULL,
    -- 'done', or 'refused' with the refusal as the engine records it (JSON).
    outcome TEXT NOT NULL CHECK (outcome IN ('done', 'refused')),
    refusal TEXT,
    created_at_ms BIGINT NOT NULL,
    expires_at_ms BIGINT NOT NULL,
    PRIMARY KEY (merchant_id, scope, request_key)
);
CREATE INDEX idempotency_claims_expiry ON idempotency_claims (expires_at_ms);

DROP TABLE signed_requests;
