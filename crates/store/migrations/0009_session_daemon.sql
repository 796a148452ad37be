-- Which daemon ran each session: its cluster id (`host:pid:start`) when
-- several daemons share a PostgreSQL store, NULL for a daemon alone on its
-- files. A daemon that starts ends only the sessions of daemons no longer
-- seen, and the leader gives back the runs of a daemon that stopped being
-- seen, never another live daemon's.
ALTER TABLE session ADD COLUMN daemon TEXT;
CREATE INDEX session_daemon_running ON session(daemon) WHERE ended_at IS NULL;
