-- PostgreSQL's form of migrations/0007_event_ack.sql (same number, same tables and
-- columns): INTEGER is BIGINT, REAL is DOUBLE PRECISION, a rowid key is an
-- identity column. Applied inside each project's schema.
-- Acknowledgements of alerts (events at level `urgent` or `attention`):
-- who acknowledged which event, and when. The event log itself stays
-- append-only; an alert is "unacknowledged" while it has no row here, so
-- the dashboard's and `bb events`' counts are the store's, whatever was
-- restarted in between.
CREATE TABLE event_ack (
    event_id   BIGINT PRIMARY KEY REFERENCES event(id) ON DELETE CASCADE,
    acked_at   BIGINT NOT NULL,       -- ms since the epoch
    acked_by   TEXT NOT NULL           -- the actor's name
);
-- The alerts, newest first, for "unacknowledged first" and the counts.
CREATE INDEX event_alert ON event(level, id) WHERE level IN ('urgent', 'attention');
