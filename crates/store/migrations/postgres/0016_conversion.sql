-- Conversion on deposit. An address may name the currency its deposits are converted
-- to on arrival (NULL: kept as received).
ALTER TABLE deposit_addresses ADD COLUMN convert_to TEXT;
-- What a deposit's first credit converted, fixed then as its fee is (a reversal takes
-- back exactly that, a credit after a reversal converts the same way): the currency,
-- the amount it gave in it, the exchange fee (in the deposit's currency) and the rate;
-- or, for a deposit to such an address credited as received, why (conversion_note).
-- All NULL until credited, and for addresses without conversion.
ALTER TABLE deposits ADD COLUMN converted_currency TEXT;
ALTER TABLE deposits ADD COLUMN converted_units NUMERIC(40, 0);
ALTER TABLE deposits ADD COLUMN exchange_fee_units NUMERIC(40, 0);
ALTER TABLE deposits ADD COLUMN exchange_rate TEXT;
ALTER TABLE deposits ADD COLUMN conversion_note TEXT;

-- Withdrawal with exchange: paid from a balance in another currency (source_currency),
-- converted when it is requested, in the same ledger transaction as its hold:
-- source_units is what that balance gives, the exchange fee (in it) included, at
-- exchange_rate. NULL for a withdrawal paid from its own currency.
ALTER TABLE withdrawals ADD COLUMN source_currency TEXT;
ALTER TABLE withdrawals ADD COLUMN source_units NUMERIC(40, 0);
ALTER TABLE withdrawals ADD COLUMN source_fee_units NUMERIC(40, 0);
ALTER TABLE withdrawals ADD COLUMN exchange_rate TEXT;

-- The API an exchange was made through: its exchange.done event is reported in that
-- dialect's callback format too.
ALTER TABLE exchanges ADD COLUMN origin TEXT NOT NULL DEFAULT 'native';
