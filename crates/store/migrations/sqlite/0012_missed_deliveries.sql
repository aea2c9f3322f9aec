-- Events raised while an endpoint is disabled get no delivery row each: the endpoint
-- records the first event it missed and how many, and a redelivery of their time
-- range (after enabling it) creates their deliveries from the events kept. Events
-- keep the callback URL of their object, so routing them again gives the same targets.
ALTER TABLE webhook_endpoints ADD COLUMN missed_from_event_id INTEGER;
ALTER TABLE webhook_endpoints ADD COLUMN missed_events INTEGER NOT NULL DEFAULT 0;
ALTER TABLE events ADD COLUMN callback_url TEXT;
