-- PostgreSQL's form of migrations/0004_llm_usage.sql (same number, same tables and
-- columns): INTEGER is BIGINT, REAL is DOUBLE PRECISION, a rowid key is an
-- identity column. Applied inside each project's schema.
-- What each run's LLM calls cost as the gateway priced them
-- (`gateway.prices`), kept beside `session.cost`, which is what the CLI
-- itself reported (never added together); and the usage history per run,
-- provider, model and quarter hour that `moziplus usage`, the API, the
-- dashboard's charts and the budgets' windows read. Every time zone's
-- offset is a whole number of quarter hours, so any configured day or
-- month boundary falls on a bucket edge.
ALTER TABLE session ADD COLUMN cached_tokens BIGINT NOT NULL DEFAULT 0;
ALTER TABLE session ADD COLUMN gateway_cost DOUBLE PRECISION NOT NULL DEFAULT 0;
CREATE TABLE llm_usage (
    session_id        TEXT NOT NULL REFERENCES session(id) ON DELETE CASCADE,
    provider          TEXT NOT NULL,
    model             TEXT NOT NULL,         -- as sent upstream
    bucket_start      BIGINT NOT NULL,      -- ms since the epoch, a multiple of 15 minutes
    responses         BIGINT NOT NULL DEFAULT 0,
    unpriced          BIGINT NOT NULL DEFAULT 0, -- responses no price matched
    prompt_tokens     BIGINT NOT NULL DEFAULT 0,
    completion_tokens BIGINT NOT NULL DEFAULT 0,
    cached_tokens     BIGINT NOT NULL DEFAULT 0,
    cost              DOUBLE PRECISION NOT NULL DEFAULT 0,  -- USD
    PRIMARY KEY (session_id, provider, model, bucket_start)
);
CREATE INDEX llm_usage_bucket ON llm_usage(bucket_start);
