-- Callback formats are registered by the API dialects and checked at start-up, not
-- listed in the schema (a new dialect needs no migration). SQLite cannot drop the
-- CHECK of webhook_endpoints.format inside a migration's transaction; Store::migrate
-- rebuilds that table right after the migrations run. Nothing else changes here.
SELECT 1;
