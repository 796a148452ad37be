-- PostgreSQL's form of migrations/0009_session_daemon.sql (same number, same tables and
-- columns): INTEGER is BIGINT, REAL is DOUBLE PRECISION, a rowid key is an
-- identity column. Applied inside each project's schema.
-- Which daemon ran each session: its cluster id (`host:pid:start`) when
-- several daemons share a PostgreSQL store, NULL for a daemon alone on its
-- files. A daemon that starts ends only the sessions of daemons no longer
-- seen, and the leader gives back the runs of a daemon that stopped being
-- seen, never another live daemon's.
ALTER TABLE session ADD COLUMN daemon TEXT;
CREATE INDEX session_daemon_running ON session(daemon) WHERE ended_at IS NULL;
