-- PostgreSQL's form of migrations/0005_schedules.sql (same number, same tables and
-- columns): INTEGER is BIGINT, REAL is DOUBLE PRECISION, a rowid key is an
-- identity column. Applied inside each project's schema.
-- Schedules: recurring tasks. A schedule is a cron expression read in its
-- time zone, or a fixed interval from its anchor, plus a task template.
-- Each firing (or skipped slot) is recorded under the key
-- (schedule_id, scheduled_at) in the same transaction that creates its task,
-- so a restart, a manual tick or a second daemon never fires a slot twice.
CREATE TABLE schedule (
    id              TEXT PRIMARY KEY,
    cron            TEXT,
    interval_ms     BIGINT CHECK (interval_ms IS NULL OR interval_ms >= 1000),
    timezone        TEXT NOT NULL DEFAULT 'UTC',
    title           TEXT NOT NULL CHECK (length(title) > 0),
    description     TEXT NOT NULL DEFAULT '',
    kind            TEXT,
    assignee        TEXT,
    priority        BIGINT NOT NULL DEFAULT 3 CHECK (priority BETWEEN 1 AND 4),
    tags            TEXT NOT NULL DEFAULT '',            -- comma-separated
    review_protocol TEXT,
    depends_on_tags TEXT NOT NULL DEFAULT '',            -- comma-separated
    overlap         TEXT NOT NULL DEFAULT 'skip' CHECK (overlap IN ('skip','queue','allow')),
    missed          TEXT NOT NULL DEFAULT 'skip' CHECK (missed IN ('skip','once')),
    jitter_ms       BIGINT NOT NULL DEFAULT 0 CHECK (jitter_ms >= 0),
    enabled         BIGINT NOT NULL DEFAULT 1 CHECK (enabled IN (0, 1)),
    source          TEXT NOT NULL DEFAULT 'operator' CHECK (source IN ('operator','config')),
    anchor_at       BIGINT NOT NULL,                    -- slots at or before it never fire
    created_at      BIGINT NOT NULL,
    updated_at      BIGINT NOT NULL,
    CHECK ((cron IS NULL) <> (interval_ms IS NULL))
);

CREATE TABLE schedule_firing (
    schedule_id  TEXT NOT NULL REFERENCES schedule(id) ON DELETE CASCADE,
    scheduled_at BIGINT NOT NULL,                       -- the slot, UTC ms
    manual       BIGINT NOT NULL DEFAULT 0 CHECK (manual IN (0, 1)), -- run-now: keyed by when it was asked
    recorded_at  BIGINT NOT NULL,
    reason       TEXT NOT NULL
                 CHECK (reason IN ('on_time','catch_up','manual','overlap','missed','paused')),
    slots        BIGINT NOT NULL DEFAULT 1 CHECK (slots >= 1), -- slots a skip row stands for
    task_id      TEXT REFERENCES task(id),
    -- A run-now is keyed apart from the slots, so it can never take a slot's key.
    PRIMARY KEY (schedule_id, scheduled_at, manual)
);
CREATE INDEX schedule_firing_task ON schedule_firing(task_id);
