-- Futures (CoinsPaid-style v2): a price fixed for the next deposit of exactly
-- sender_units to one of the merchant's conversion addresses, arriving before
-- ts_release_ms. The deposit that takes it is recorded once (deposit_id), and the
-- deposit records the futures it converted at.
CREATE TABLE futures (
    id BIGSERIAL PRIMARY KEY,
    merchant_id BIGINT NOT NULL REFERENCES merchants(id),
    address_id BIGINT NOT NULL REFERENCES deposit_addresses(id),
    sender_currency TEXT NOT NULL,
    receiver_currency TEXT NOT NULL,
    sender_units NUMERIC(40, 0) NOT NULL,
    receiver_units NUMERIC(40, 0) NOT NULL,
    fee_units NUMERIC(40, 0) NOT NULL,
    rate TEXT NOT NULL,
    ts_fixed_ms BIGINT NOT NULL,
    ts_release_ms BIGINT NOT NULL,
    deposit_id BIGINT UNIQUE REFERENCES deposits(id),
    created_at_ms BIGINT NOT NULL
);
CREATE INDEX futures_address ON futures (address_id, id);
ALTER TABLE deposits ADD COLUMN futures_id BIGINT REFERENCES futures(id);
