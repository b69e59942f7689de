-- Every index costs the scheduler a write per claimed lead. No query reads these two: DNC and
-- live-call checks go through dnc and the partial unique index on attempts, and the start-up
-- recovery scan of live attempts is served by attempts_status_idx.
DROP INDEX IF EXISTS leads_phone_idx;
DROP INDEX IF EXISTS attempts_live_idx;
