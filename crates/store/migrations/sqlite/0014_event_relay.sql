-- Events are first written to the outbox, in the transaction of the state change they
-- report, with no sequence number: state changes of one merchant no longer wait for
-- each other on its event counter. The relay (one at a time) moves them to `events`,
-- numbering each merchant's events in the order they became visible, and creates their
-- deliveries. Rows stay here for milliseconds, so there is no foreign key to lock.
CREATE TABLE outbox (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    public_id TEXT NOT NULL,
    merchant_id INTEGER NOT NULL,
    type TEXT NOT NULL,
    object_kind TEXT NOT NULL,
    object_id INTEGER NOT NULL,
    origin TEXT NOT NULL,
    data TEXT NOT NULL,
    callback_url TEXT,
    -- A test event goes to this endpoint only.
    only_endpoint_id INTEGER,
    created_at_ms INTEGER NOT NULL
);
