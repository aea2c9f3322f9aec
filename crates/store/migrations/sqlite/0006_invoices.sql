-- Invoices: an amount (crypto or fiat) payable in accepted currencies, one address each,
-- with a rate fixed for the invoice's lifetime; its status follows its payments.

CREATE TABLE invoices (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    public_id TEXT NOT NULL UNIQUE,
    token TEXT NOT NULL UNIQUE,
    merchant_id INTEGER NOT NULL REFERENCES merchants(id),
    order_id TEXT NOT NULL,
    request_hash BLOB NOT NULL,
    currency TEXT NOT NULL,
    amount_units TEXT NOT NULL,
    description TEXT NOT NULL,
    success_url TEXT,
    tolerance_e6 INTEGER NOT NULL,
    status TEXT NOT NULL CHECK (status IN ('new', 'partially_paid', 'paid', 'overpaid', 'paid_late', 'expired')),
    expires_at_ms INTEGER NOT NULL,
    paid_at_ms INTEGER,
    created_at_ms INTEGER NOT NULL,
    updated_at_ms INTEGER NOT NULL,
    UNIQUE (merchant_id, order_id)
);
CREATE INDEX invoices_merchant ON invoices (merchant_id, id);
CREATE INDEX invoices_due ON invoices (expires_at_ms) WHERE status = 'new';

CREATE TABLE invoice_options (
    invoice_id INTEGER NOT NULL REFERENCES invoices(id),
    currency TEXT NOT NULL,
    address_id INTEGER NOT NULL UNIQUE REFERENCES deposit_addresses(id),
    due_units TEXT NOT NULL,
    min_units TEXT NOT NULL,
    rate TEXT,
    PRIMARY KEY (invoice_id, currency)
);
