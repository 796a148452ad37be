-- Budgets across the cluster (`Cluster::reserve_budget`): every daemon
-- reserves a call's worst case here before the call is sent and books what
-- it used here after, so a cap holds over every host together, not once
-- per daemon.
--
-- A budget window's spend: `scope` is the daemon's name of the budget
-- (`task:<project>/<task>`, `agent-day:<agent>`, `project-day:<project>`,
-- `project-month:<project>`, `home-day`), `start` its window's start in ms
-- (0 for a task: no window).
CREATE TABLE budget_spend (
    scope   TEXT NOT NULL,
    start   BIGINT NOT NULL,
    tokens  BIGINT NOT NULL DEFAULT 0,
    usd     DOUBLE PRECISION NOT NULL DEFAULT 0,
    -- The soft threshold was reported (by one daemon, once per window).
    warned  BOOLEAN NOT NULL DEFAULT FALSE,
    PRIMARY KEY (scope, start)
);

-- The worst cases held by calls in flight: one row per call and budget.
-- A hold counts while its daemon is alive; a gone daemon's holds stop
-- counting with it.
CREATE TABLE budget_hold (
    daemon  TEXT NOT NULL,
    id      BIGINT NOT NULL,
    scope   TEXT NOT NULL,
    start   BIGINT NOT NULL,
    tokens  BIGINT NOT NULL,
    usd     DOUBLE PRECISION NOT NULL,
    since   BIGINT NOT NULL,
    PRIMARY KEY (daemon, id, scope, start)
);
CREATE INDEX budget_hold_by_scope ON budget_hold (scope, start);

-- Projects whose stored ledger (`llm_usage`, each task's total) was added
-- to `budget_spend`, once for the whole cluster; every call after it is
-- booked there as it ends.
CREATE TABLE budget_seeded (
    project TEXT PRIMARY KEY,
    at      BIGINT NOT NULL
);

-- The budgets changed at run time (`moziplus budget set|clear`), for every
-- daemon: one row, the list as JSON (the form of `<home>/budgets.json`),
-- and a version raised by each change. A reservation made with an older
-- version is refused as stale, and its daemon reads the list again first.
CREATE TABLE budget_limits (
    one      BOOLEAN PRIMARY KEY DEFAULT TRUE CHECK (one),
    version  BIGINT NOT NULL,
    value    TEXT NOT NULL
);
