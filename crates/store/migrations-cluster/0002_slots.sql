-- Places counted across the cluster's alive daemons (`Cluster::take_slot`):
-- a run of an agent (kind `run`, group the agent), so `max_per_agent` and
-- `cluster.max_agents` hold across hosts at the moment a run starts, not
-- as of the last beat. A slot counts while its daemon is alive; a gone
-- daemon's slots stop counting with it.
CREATE TABLE slot (
    kind        TEXT NOT NULL,
    key         TEXT NOT NULL,             -- what it is for (a run: project/task/agent)
    grp         TEXT NOT NULL,             -- what it is counted under (a run: the agent)
    daemon      TEXT NOT NULL,
    since       BIGINT NOT NULL,
    -- Two daemons asking for one key (one task) at once hold two places:
    -- each counts against the other, and each gives back only its own.
    PRIMARY KEY (kind, key, daemon)
);
CREATE INDEX slot_by_daemon ON slot (daemon);
