-- PostgreSQL's form of migrations/0006_not_before.sql (same number, same tables and
-- columns): INTEGER is BIGINT, REAL is DOUBLE PRECISION, a rowid key is an
-- identity column. Applied inside each project's schema.
-- A pending task's "not before" time gets its own column. Until now the lease
-- column doubled as it on pending tasks (the backoff before a failed run's
-- next round); a lease is a claim's and ends with it. Holds already written
-- move over; the lease column is left to working tasks.
ALTER TABLE task ADD COLUMN not_before BIGINT;   -- pending: not claimable before (UTC ms)
UPDATE task SET not_before = lease_expires_at, lease_expires_at = NULL
 WHERE status = 'pending' AND lease_expires_at IS NOT NULL;
