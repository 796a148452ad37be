-- PostgreSQL's form of migrations/0002_inbox_applied.sql (same number, same tables and
-- columns): INTEGER is BIGINT, REAL is DOUBLE PRECISION, a rowid key is an
-- identity column. Applied inside each project's schema.
-- Inbox lines already applied to this project (SPEC §5: each line applied once,
-- across restarts). The key is "<inbox inode>:<byte offset>"; it is written in
-- the same transaction as the line's effect.
CREATE TABLE inbox_applied (
    key        TEXT PRIMARY KEY,
    applied_at BIGINT NOT NULL
);
