-- What each run's LLM calls cost as the gateway priced them
-- (`gateway.prices`), kept beside `session.cost`, which is what the CLI
-- itself reported (never added together); and the usage history per run,
-- provider, model and quarter hour that `moziplus usage`, the API, the
-- dashboard's charts and the budgets' windows read. Every time zone's
-- offset is a whole number of quarter hours, so any configured day or
-- month boundary falls on a bucket edge.
ALTER TABLE session ADD COLUMN cached_tokens INTEGER NOT NULL DEFAULT 0;
ALTER TABLE session ADD COLUMN gateway_cost REAL NOT NULL DEFAULT 0;
CREATE TABLE llm_usage (
    session_id        TEXT NOT NULL REFERENCES session(id) ON DELETE CASCADE,
    provider          TEXT NOT NULL,
    model             TEXT NOT NULL,         -- as sent upstream
    bucket_start      INTEGER NOT NULL,      -- ms since the epoch, a multiple of 15 minutes
    responses         INTEGER NOT NULL DEFAULT 0,
    unpriced          INTEGER NOT NULL DEFAULT 0, -- responses no price matched
    prompt_tokens     INTEGER NOT NULL DEFAULT 0,
    completion_tokens INTEGER NOT NULL DEFAULT 0,
    cached_tokens     INTEGER NOT NULL DEFAULT 0,
    cost              REAL NOT NULL DEFAULT 0,  -- USD
    PRIMARY KEY (session_id, provider, model, bucket_start)
) WITHOUT ROWID;
CREATE INDEX llm_usage_bucket ON llm_usage(bucket_start);
