-- The cluster's own tables, in the schema `moziplus` of a PostgreSQL store
-- (never in a project's schema). Times are ms since the epoch by the
-- database's clock, so the hosts' clocks never have to agree.

-- Every daemon on the store: a row per process, refreshed every few
-- seconds (`last_seen`); `stopped_at` once it stopped cleanly.
CREATE TABLE daemon (
    id          TEXT PRIMARY KEY,          -- host:pid:started_at
    host        TEXT NOT NULL,
    pid         BIGINT NOT NULL,
    bind        TEXT NOT NULL DEFAULT '',
    agents      TEXT NOT NULL DEFAULT '',  -- comma-separated agent ids of its agents.yaml
    runs        BIGINT NOT NULL DEFAULT 0, -- runs in flight at its last beat
    agent_runs  TEXT NOT NULL DEFAULT '',  -- of them, per agent: `agent=n,…`
    started_at  BIGINT NOT NULL,
    last_seen   BIGINT NOT NULL,
    stopped_at  BIGINT
);

-- Leases of singleton duties (one row, `leader`): who holds it, until
-- when, and its fencing epoch, raised at every change of holder.
CREATE TABLE lease (
    name        TEXT PRIMARY KEY,
    holder      TEXT NOT NULL,
    epoch       BIGINT NOT NULL,
    expires_at  BIGINT NOT NULL
);

-- Rate lanes shared by every daemon (GCRA): the theoretical arrival time
-- of the next request, in ms.
CREATE TABLE rate_lane (
    lane        TEXT PRIMARY KEY,
    tat         BIGINT NOT NULL
);
