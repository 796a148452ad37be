-- PostgreSQL's form of migrations/0003_session_llm_calls.sql (same number, same tables and
-- columns): INTEGER is BIGINT, REAL is DOUBLE PRECISION, a rowid key is an
-- identity column. Applied inside each project's schema.
-- What each run asked of the gateway: LLM calls made and the time they
-- waited in a rate lane's queue. The ticker's admission by quota estimates
-- an agent's demand (calls per minute of un-queued run time) from its
-- recent sessions.
ALTER TABLE session ADD COLUMN llm_calls BIGINT NOT NULL DEFAULT 0;
ALTER TABLE session ADD COLUMN llm_wait_ms BIGINT NOT NULL DEFAULT 0;
CREATE INDEX session_agent_ended ON session(agent, ended_at);
