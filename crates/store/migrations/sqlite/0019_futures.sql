-- Futures (CoinsPaid-style v2): a price fixed for the next deposit of exactly
-- sender_units to one of the merchant's conversion addresses, arriving before
-- ts_release_ms. The deposit that takes it is recorded once (deposit_id), and the
-- deposit records the futures it converted at.
CREATE TABLE futures (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    merchant_id INTEGER NOT NULL REFERENCES merchants(id),
    address_id INTEGER NOT NULL REFERENCES deposit_addresses(id),
    sender_currency TEXT NOT NULL,
    receiver_currency TEXT NOT NULL,
    sender_units TEXT NOT NULL,
    receiver_units TEXT NOT NULL,
    fee_units TEXT NOT NULL,
    rate TEXT NOT NULL,
    ts_fixed_ms INTEGER NOT NULL,
    ts_release_ms INTEGER NOT NULL,
    deposit_id INTEGER UNIQUE REFERENCES deposits(id),
    created_at_ms INTEGER NOT NULL
);
CREATE INDEX futures_address ON futures (address_id, id);
ALTER TABLE deposits ADD COLUMN futures_id INTEGER REFERENCES futures(id);
