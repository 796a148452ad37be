-- Nothing on SQLite: PostgreSQL's 0010 makes the tick's probe a function of
-- each project's schema, so its plan stays cached on connections that
-- serve many projects. The number keeps the two sets in step.
SELECT 1;
