-- The ledger is append-only: its accounts, transactions and entries cannot be deleted
-- or renumbered (on PostgreSQL this is what lets entries be checked against their
-- accounts once per statement; here the foreign keys stay, SQLite checks them cheaply).
-- Renumbering is caught whichever name it uses (id, rowid, oid, _rowid_).
CREATE TRIGGER accounts_no_delete BEFORE DELETE ON accounts
BEGIN SELECT RAISE(ABORT, 'the ledger is append-only: DELETE on accounts refused'); END;
CREATE TRIGGER accounts_no_renumber BEFORE UPDATE ON accounts WHEN NEW.id IS NOT OLD.id
BEGIN SELECT RAISE(ABORT, 'the ledger is append-only: renumbering accounts refused'); END;
CREATE TRIGGER ledger_transactions_no_delete BEFORE DELETE ON ledger_transactions
BEGIN SELECT RAISE(ABORT, 'the ledger is append-only: DELETE on ledger_transactions refused'); END;
CREATE TRIGGER ledger_transactions_no_renumber BEFORE UPDATE ON ledger_transactions WHEN NEW.id IS NOT OLD.id
BEGIN SELECT RAISE(ABORT, 'the ledger is append-only: renumbering ledger_transactions refused'); END;
CREATE TRIGGER ledger_entries_no_delete BEFORE DELETE ON ledger_entries
BEGIN SELECT RAISE(ABORT, 'the ledger is append-only: DELETE on ledger_entries refused'); END;
CREATE TRIGGER ledger_entries_no_renumber BEFORE UPDATE ON ledger_entries WHEN NEW.id IS NOT OLD.id
BEGIN SELECT RAISE(ABORT, 'the ledger is append-only: renumbering ledger_entries refused'); END;
