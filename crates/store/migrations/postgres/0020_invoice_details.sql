-- What an invoice shows and where it is reported: the API it came through (its
-- status changes are reported in that API's format, to its own callback URL when it
-- has one), a title, the page's failure link, the payer's e-mail, and whether the
-- payer's pick of a currency fixes its rate (rate_fixed_at_ms: when a rate was fixed).
ALTER TABLE invoices ADD COLUMN origin TEXT NOT NULL DEFAULT 'native';
ALTER TABLE invoices ADD COLUMN callback_url TEXT;
ALTER TABLE invoices ADD COLUMN title TEXT NOT NULL DEFAULT '';
ALTER TABLE invoices ADD COLUMN failure_url TEXT;
ALTER TABLE invoices ADD COLUMN payer_email TEXT;
ALTER TABLE invoices ADD COLUMN rate_on_pick BOOLEAN NOT NULL DEFAULT FALSE;
ALTER TABLE invoices ADD COLUMN rate_fixed_at_ms BIGINT;
UPDATE invoices SET origin = COALESCE((SELECT a.origin FROM invoice_options o JOIN deposit_addresses a ON a.id = o.address_id
    WHERE o.invoice_id = invoices.id ORDER BY o.currency LIMIT 1), 'native'),
  callback_url = (SELECT a.callback_url FROM invoice_options o JOIN deposit_addresses a ON a.id = o.address_id
    WHERE o.invoice_id = invoices.id ORDER BY o.currency LIMIT 1),
  rate_fixed_at_ms = created_at_ms;
