-- Callback formats are registered by the API dialects and checked at start-up, not
-- listed in the schema (a new dialect needs no migration).

ALTER TABLE webhook_endpoints DROP CONSTRAINT IF EXISTS webhook_endpoints_format_check;
