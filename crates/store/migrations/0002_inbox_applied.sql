-- Inbox lines already applied to this project (SPEC §5: each line applied once,
-- across restarts). The key is "<inbox inode>:<byte offset>"; it is written in
-- the same transaction as the line's effect.
CREATE TABLE inbox_applied (
    key        TEXT PRIMARY KEY,
    applied_at INTEGER NOT NULL
) WITHOUT ROWID;
