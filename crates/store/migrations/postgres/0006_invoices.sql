-- Invoices: an amount (crypto or fiat) payable in accepted currencies, one address each,
-- with a rate fixed for the invoice's lifetime; its status follows its payments.

CREATE TABLE invoices (
    id BIGSERIAL PRIMARY KEY,
    public_id TEXT NOT NULL UNIQUE,
    token TEXT NOT NULL UNIQUE,
    merchant_id BIGINT NOT NULL REFERENCES merchants(id),
    order_id TEXT NOT NULL,
    request_hash BYTEA NOT NULL,
    currency TEXT NOT NULL,
    amount_units NUMERIC(40, 0) NOT NULL,
    description TEXT NOT NULL,
    success_url TEXT,
    tolerance_e6 BIGINT NOT NULL,
    status TEXT NOT NULL CHECK (status IN ('new', 'partially_paid', 'paid', 'overpaid', 'paid_late', 'expired')),
    expires_at_ms BIGINT NOT NULL,
    paid_at_ms BIGINT,
    created_at_ms BIGINT NOT NULL,
    updated_at_ms BIGINT NOT NULL,
    UNIQUE (merchant_id, order_id)
);
CREATE INDEX invoices_merchant ON invoices (merchant_id, id);
CREATE INDEX invoices_due ON invoices (expires_at_ms) WHERE status = 'new';

CREATE TABLE invoice_options (
    invoice_id BIGINT NOT NULL REFERENCES invoices(id),
    currency TEXT NOT NULL,
    address_id BIGINT NOT NULL UNIQUE REFERENCES deposit_addresses(id),
    due_units NUMERIC(40, 0) NOT NULL,
    min_units NUMERIC(40, 0) NOT NULL,
    rate TEXT,
    PRIMARY KEY (invoice_id, currency)
);
