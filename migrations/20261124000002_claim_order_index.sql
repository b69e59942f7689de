-- The scheduler claims due leads by priority, then by how long they have waited; this index
-- serves that order directly (the first index sorted by time first).
DROP INDEX IF EXISTS leads_due_idx;
CREATE INDEX leads_claim_idx ON leads (campaign_id, priority DESC, next_attempt_at NULLS FIRST, created_at, id)
    WHERE state IN ('pending', 'scheduled');
