-- PostgreSQL only (migrations/0010 is empty): the tick's probe
-- (`Blackboard::tick_probe`) as a function of each project's schema.
--
-- A connection serves many projects, one schema at a time, and PostgreSQL
-- plans a cached statement again whenever the connection's search_path
-- changed since: on 8 connections serving 100 projects, the probe was
-- planned on nearly every tick, at about 1 ms each, three times its
-- execution. A PL/pgSQL function keeps its statements' plans for the
-- connection's life, and its own search_path (fixed here to this schema)
-- keeps them valid whatever the caller's. Same statement as on SQLite.
CREATE FUNCTION tick_probe(now_ms BIGINT, waits_before BIGINT)
RETURNS TABLE (
    leases_due     BIGINT,
    decisions_due  BIGINT,
    in_review      BIGINT,
    open_tasks     BIGINT,
    last_event_id  BIGINT,
    working_tasks  BIGINT,
    long_waits     BIGINT,
    schedules      BIGINT,
    active_lessons BIGINT
)
LANGUAGE plpgsql STABLE
SET search_path FROM CURRENT
AS $$
BEGIN
    RETURN QUERY SELECT
        CASE WHEN EXISTS (SELECT 1 FROM task t WHERE t.status = 'working' AND t.lease_expires_at <= now_ms)
             THEN 1::BIGINT ELSE 0::BIGINT END,
        CASE WHEN EXISTS (SELECT 1 FROM decision d WHERE d.status = 'proposed' AND d.expires_at <= now_ms)
             THEN 1::BIGINT ELSE 0::BIGINT END,
        (SELECT COUNT(*) FROM task t WHERE t.status = 'review'),
        (SELECT COUNT(*) FROM task t WHERE t.status IN ('pending', 'working', 'review')),
        (SELECT COALESCE(MAX(e.id), 0)::BIGINT FROM event e),
        (SELECT COUNT(*) FROM task t WHERE t.status = 'working'),
        CASE WHEN EXISTS (SELECT 1 FROM task t JOIN dependency dep ON dep.task_id = t.id
                          WHERE t.status = 'pending' AND t.updated_at <= waits_before)
             THEN 1::BIGINT ELSE 0::BIGINT END,
        (SELECT COUNT(*) FROM schedule s),
        (SELECT COUNT(*) FROM experience x WHERE x.status = 'active');
END
$$;

-- The tick's page of ready tasks (`Blackboard::ready_tasks`), for the same
-- reason: the task columns of `TASK_COLUMNS` in their order, and the same
-- condition and order as the statement on SQLite (`READY_CONDITION`).
-- A migration that changes either changes this function too.
CREATE FUNCTION ready_tasks(now_ms BIGINT, page BIGINT, skip BIGINT)
RETURNS TABLE (
    id               TEXT,
    title            TEXT,
    description      TEXT,
    kind             TEXT,
    status           TEXT,
    priority         BIGINT,
    assignee         TEXT,
    claimed_by       TEXT,
    creator          TEXT,
    parent_id        TEXT,
    review_protocol  TEXT,
    round            BIGINT,
    max_rounds       BIGINT,
    lease_expires_at BIGINT,
    not_before       BIGINT,
    created_at       BIGINT,
    updated_at       BIGINT,
    claimed_at       BIGINT,
    finished_at      BIGINT,
    tags             TEXT
)
LANGUAGE plpgsql STABLE
SET search_path FROM CURRENT
AS $$
#variable_conflict use_column
BEGIN
    RETURN QUERY
    SELECT t.id, t.title, t.description, t.kind, t.status, t.priority, t.assignee,
           t.claimed_by, t.creator, t.parent_id, t.review_protocol, t.round,
           t.max_rounds, t.lease_expires_at, t.not_before, t.created_at,
           t.updated_at, t.claimed_at, t.finished_at,
           (SELECT string_agg(tt.tag, ',' ORDER BY tt.tag) FROM task_tag tt WHERE tt.task_id = t.id)
    FROM task t
    WHERE t.status = 'pending'
      AND (t.not_before IS NULL OR t.not_before <= now_ms)
      AND NOT EXISTS (SELECT 1 FROM dependency d JOIN task dt ON dt.id = d.depends_on
                      WHERE d.task_id = t.id AND dt.status <> 'done')
    ORDER BY t.priority, t.seq
    LIMIT page OFFSET skip;
END
$$;
