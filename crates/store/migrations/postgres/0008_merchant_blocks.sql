-- Why and when an operator blocked a merchant (cleared when unblocked).

ALTER TABLE merchants ADD COLUMN blocked_reason TEXT;
ALTER TABLE merchants ADD COLUMN status_changed_at_ms BIGINT;
