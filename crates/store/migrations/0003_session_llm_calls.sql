-- What each run asked of the gateway: LLM calls made and the time they
-- waited in a rate lane's queue. The ticker's admission by quota estimates
-- an agent's demand (calls per minute of un-queued run time) from its
-- recent sessions.
ALTER TABLE session ADD COLUMN llm_calls INTEGER NOT NULL DEFAULT 0;
ALTER TABLE session ADD COLUMN llm_wait_ms INTEGER NOT NULL DEFAULT 0;
CREATE INDEX session_agent_ended ON session(agent, ended_at);
