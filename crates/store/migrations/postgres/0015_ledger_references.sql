-- A ledger entry's account, peer account and transaction were foreign keys: PostgreSQL
-- checks those one row at a time, with a query and a row lock each, three per entry,
-- which cost half of a ledger batch's time. The writer has already locked the accounts
-- and inserted the transactions in the same database transaction, so the check is now
-- one query per statement over all the rows it wrote. What the foreign keys also
-- guaranteed, that a referenced row cannot disappear, holds because the ledger is
-- append-only: its rows cannot be deleted or renumbered. (A data-only restore into a
-- migrated schema needs pg_restore --disable-triggers, as with any trigger.)
ALTER TABLE ledger_entries
    DROP CONSTRAINT ledger_entries_tx_id_fkey,
    DROP CONSTRAINT ledger_entries_account_id_fkey,
    DROP CONSTRAINT ledger_entries_peer_account_id_fkey;

-- The ids are gathered into arrays first so that the lookups are index scans of the
-- rows written, whatever the planner thinks of a transition table.
CREATE FUNCTION ledger_entries_check_references() RETURNS trigger LANGUAGE plpgsql SET search_path FROM CURRENT AS $$
DECLARE
    account_ids BIGINT[];
    tx_ids BIGINT[];
    bad RECORD;
BEGIN
    SELECT array_agg(DISTINCT id) INTO account_ids
    FROM (SELECT account_id FROM written_entries UNION SELECT peer_account_id FROM written_entries) AS s(id);
    SELECT array_agg(DISTINCT tx_id) INTO tx_ids FROM written_entries;
    IF account_ids IS NULL THEN
        RETURN NULL;
    END IF;
    IF (SELECT count(*) FROM accounts WHERE id = ANY(account_ids)) = cardinality(account_ids)
       AND (SELECT count(*) FROM ledger_transactions WHERE id = ANY(tx_ids)) = cardinality(tx_ids) THEN
        RETURN NULL;
    END IF;
    SELECT e.id, e.tx_id, e.account_id, e.peer_account_id INTO bad FROM written_entries e
    WHERE NOT EXISTS (SELECT 1 FROM accounts a WHERE a.id = e.account_id)
       OR NOT EXISTS (SELECT 1 FROM accounts a WHERE a.id = e.peer_account_id)
       OR NOT EXISTS (SELECT 1 FROM ledger_transactions t WHERE t.id = e.tx_id)
    LIMIT 1;
    IF NOT FOUND THEN
        RETURN NULL;
    END IF;
    RAISE EXCEPTION 'ledger entry % refers to a missing account (% or %) or transaction (%)',
        bad.id, bad.account_id, bad.peer_account_id, bad.tx_id
        USING ERRCODE = 'foreign_key_violation';
END
$$;

CREATE TRIGGER ledger_entries_references_on_insert AFTER INSERT ON ledger_entries
    REFERENCING NEW TABLE AS written_entries
    FOR EACH STATEMENT EXECUTE FUNCTION ledger_entries_check_references();
CREATE TRIGGER ledger_entries_references_on_update AFTER UPDATE ON ledger_entries
    REFERENCING NEW TABLE AS written_entries
    FOR EACH STATEMENT EXECUTE FUNCTION ledger_entries_check_references();

CREATE FUNCTION ledger_is_append_only() RETURNS trigger LANGUAGE plpgsql SET search_path FROM CURRENT AS $$
BEGIN
    RAISE EXCEPTION 'the ledger is append-only: % on % refused', TG_OP, TG_TABLE_NAME
        USING ERRCODE = 'restrict_violation';
END
$$;

CREATE TRIGGER accounts_append_only BEFORE DELETE OR TRUNCATE OR UPDATE OF id ON accounts
    FOR EACH STATEMENT EXECUTE FUNCTION ledger_is_append_only();
CREATE TRIGGER ledger_transactions_append_only BEFORE DELETE OR TRUNCATE OR UPDATE OF id ON ledger_transactions
    FOR EACH STATEMENT EXECUTE FUNCTION ledger_is_append_only();
CREATE TRIGGER ledger_entries_append_only BEFORE DELETE OR TRUNCATE OR UPDATE OF id ON ledger_entries
    FOR EACH STATEMENT EXECUTE FUNCTION ledger_is_append_only();
