-- PostgreSQL's form of migrations/0008_session_sandbox.sql (same number, same tables and
-- columns): INTEGER is BIGINT, REAL is DOUBLE PRECISION, a rowid key is an
-- identity column. Applied inside each project's schema.
-- What each run could touch and reach, as the daemon started it (JSON,
-- `wire::RunSandbox`): its permissions mode and, inside a sandbox, the
-- folders it may change and read, its network and the allowed hosts.
-- NULL for runs recorded before this column.
ALTER TABLE session ADD COLUMN sandbox TEXT;
