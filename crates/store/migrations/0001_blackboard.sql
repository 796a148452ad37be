-- The blackboard schema, version 1 (SPEC §3).
-- Times are INTEGER milliseconds since the Unix epoch, UTC: comparisons never
-- depend on a local time zone (a known defect of the Python system).

CREATE TABLE task (
    id              TEXT PRIMARY KEY,            -- 'T-0042'
    seq             INTEGER NOT NULL UNIQUE,     -- the number in the id
    title           TEXT NOT NULL CHECK (length(title) > 0),
    description     TEXT NOT NULL DEFAULT '',
    kind            TEXT NOT NULL DEFAULT 'code',
    status          TEXT NOT NULL DEFAULT 'pending'
                    CHECK (status IN ('pending','working','review','done','blocked','failed','cancelled')),
    priority        INTEGER NOT NULL DEFAULT 3 CHECK (priority BETWEEN 1 AND 4), -- 1 urgent .. 4 low
    assignee        TEXT,                        -- designated agent; NULL = any allowed agent
    claimed_by      TEXT,                        -- agent holding the claim (working/review)
    creator         TEXT NOT NULL,
    parent_id       TEXT REFERENCES task(id),
    review_protocol TEXT,                        -- NULL = no review step
    round           INTEGER NOT NULL DEFAULT 1 CHECK (round >= 1),
    max_rounds      INTEGER NOT NULL DEFAULT 3 CHECK (max_rounds >= 1),
    lease_expires_at INTEGER,                    -- claim lease; for pending: not before
    created_at      INTEGER NOT NULL,
    updated_at      INTEGER NOT NULL,
    claimed_at      INTEGER,
    finished_at     INTEGER
);
-- The scheduler's scan: open tasks by priority then age.
CREATE INDEX task_open ON task(status, priority, seq);
CREATE INDEX task_assignee ON task(assignee);
CREATE INDEX task_claimed_by ON task(claimed_by);

CREATE TABLE task_tag (
    task_id TEXT NOT NULL REFERENCES task(id) ON DELETE CASCADE,
    tag     TEXT NOT NULL,
    PRIMARY KEY (task_id, tag)
) WITHOUT ROWID;
CREATE INDEX task_tag_by_tag ON task_tag(tag, task_id);

CREATE TABLE dependency (
    task_id    TEXT NOT NULL REFERENCES task(id) ON DELETE CASCADE,
    depends_on TEXT NOT NULL REFERENCES task(id) ON DELETE CASCADE,
    created_at INTEGER NOT NULL,
    PRIMARY KEY (task_id, depends_on),
    CHECK (task_id <> depends_on)
) WITHOUT ROWID;
CREATE INDEX dependency_reverse ON dependency(depends_on, task_id);

CREATE TABLE comment (
    id           INTEGER PRIMARY KEY,
    task_id      TEXT NOT NULL REFERENCES task(id) ON DELETE CASCADE,
    author       TEXT NOT NULL,
    comment_type TEXT NOT NULL DEFAULT 'comment'
                 CHECK (comment_type IN ('comment','question','answer','rebuttal','note','system')),
    body         TEXT NOT NULL,
    created_at   INTEGER NOT NULL
);
CREATE INDEX comment_task ON comment(task_id, id);

CREATE TABLE output (
    id            INTEGER PRIMARY KEY,
    task_id       TEXT NOT NULL REFERENCES task(id) ON DELETE CASCADE,
    agent         TEXT NOT NULL,
    round         INTEGER NOT NULL,
    summary       TEXT NOT NULL,
    artifact_path TEXT,                          -- relative to artifacts/<task>/outputs/
    inline_text   TEXT,
    created_at    INTEGER NOT NULL
);
CREATE INDEX output_task ON output(task_id, id);

CREATE TABLE review (
    id         INTEGER PRIMARY KEY,
    task_id    TEXT NOT NULL REFERENCES task(id) ON DELETE CASCADE,
    reviewer   TEXT NOT NULL,
    protocol   TEXT,
    round      INTEGER NOT NULL,
    verdict    TEXT NOT NULL CHECK (verdict IN ('approve','revise','reject')),
    confidence REAL NOT NULL CHECK (confidence >= 0 AND confidence <= 1),
    body       TEXT NOT NULL DEFAULT '',
    created_at INTEGER NOT NULL
);
CREATE INDEX review_task ON review(task_id, round, id);

CREATE TABLE decision (
    id          INTEGER PRIMARY KEY,
    task_id     TEXT REFERENCES task(id) ON DELETE SET NULL,
    author      TEXT NOT NULL,
    question    TEXT NOT NULL,
    decision    TEXT NOT NULL DEFAULT '',
    rationale   TEXT NOT NULL DEFAULT '',
    status      TEXT NOT NULL DEFAULT 'proposed' CHECK (status IN ('proposed','approved','rejected')),
    decided_by  TEXT,
    decided_at  INTEGER,
    expires_at  INTEGER,                         -- unanswered proposals expire as rejected
    created_at  INTEGER NOT NULL
);
CREATE INDEX decision_status ON decision(status, id);

CREATE TABLE observation (
    id         INTEGER PRIMARY KEY,
    level      TEXT NOT NULL CHECK (level IN ('info','warn','alert')),
    source     TEXT NOT NULL,                    -- 'daemon' or an agent id
    task_id    TEXT REFERENCES task(id) ON DELETE SET NULL,
    body       TEXT NOT NULL,
    created_at INTEGER NOT NULL
);
CREATE INDEX observation_recent ON observation(id);

CREATE TABLE experience (
    id                 INTEGER PRIMARY KEY,
    task_id            TEXT REFERENCES task(id) ON DELETE SET NULL,
    agent              TEXT NOT NULL,
    lesson             TEXT NOT NULL CHECK (length(lesson) > 0),
    times_referenced   INTEGER NOT NULL DEFAULT 0,
    last_referenced_at INTEGER,
    status             TEXT NOT NULL DEFAULT 'active' CHECK (status IN ('active','distilled','deprecated')),
    created_at         INTEGER NOT NULL
);
CREATE TABLE experience_tag (
    experience_id INTEGER NOT NULL REFERENCES experience(id) ON DELETE CASCADE,
    tag           TEXT NOT NULL,
    PRIMARY KEY (experience_id, tag)
) WITHOUT ROWID;
CREATE INDEX experience_tag_by_tag ON experience_tag(tag, experience_id);

CREATE TABLE session (
    id                TEXT PRIMARY KEY,          -- 'S-…'
    task_id           TEXT NOT NULL REFERENCES task(id) ON DELETE CASCADE,
    agent             TEXT NOT NULL,
    token_hash        TEXT NOT NULL,             -- sha256 of MOZI_SESSION_TOKEN, hex
    pid               INTEGER,
    pgid              INTEGER,
    command           TEXT NOT NULL DEFAULT '',
    round             INTEGER NOT NULL DEFAULT 1,
    started_at        INTEGER NOT NULL,
    ended_at          INTEGER,
    exit_code         INTEGER,
    outcome           TEXT CHECK (outcome IN ('succeeded','failed','timed_out','killed','lost')),
    log_path          TEXT,
    prompt_tokens     INTEGER NOT NULL DEFAULT 0,
    completion_tokens INTEGER NOT NULL DEFAULT 0,
    cost              REAL NOT NULL DEFAULT 0,
    detail            TEXT                       -- JSON: runtime-specific result (e.g. OpenClaw runId)
);
CREATE INDEX session_running ON session(ended_at) WHERE ended_at IS NULL;
CREATE INDEX session_task ON session(task_id, started_at);

CREATE TABLE event (
    id         INTEGER PRIMARY KEY AUTOINCREMENT, -- never reused: SSE resumes by id
    created_at INTEGER NOT NULL,
    level      TEXT NOT NULL CHECK (level IN ('urgent','attention','daily','optional')),
    kind       TEXT NOT NULL,
    task_id    TEXT,
    actor      TEXT NOT NULL,
    payload    TEXT NOT NULL DEFAULT '{}'
);
CREATE INDEX event_task ON event(task_id, id);
