-- A chain whose node's tip has stopped moving for longer than the chain's stall time
-- (while the node reports itself synced) is marked lagging: since when, at which tip.
-- Invoices paid on it are not expired while it lags.
ALTER TABLE chain_state ADD COLUMN lagging_since_ms INTEGER;
ALTER TABLE chain_state ADD COLUMN lagging_tip_hash TEXT;
