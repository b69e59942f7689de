-- The state-machine engine (issue 11): results for a customer who hung up before the connect
-- limit and for a call whose operator's phone died, who ended each call, and the journal
-- checkpoint that makes the engine's queued writes idempotent.

ALTER TABLE attempts DROP CONSTRAINT IF EXISTS attempts_result_check;
ALTER TABLE attempts ADD CONSTRAINT attempts_result_check
    CHECK (result IN ('success', 'no-answer', 'busy', 'callback-needed', 'abandoned', 'machine',
                      'rejected', 'invalid-number', 'congestion', 'failed', 'not-interested',
                      'do-not-call', 'early-hangup', 'operator-lost'));

-- Who ended the call: customer, operator, dialer (obzvon) or system (Asterisk, the network,
-- or nobody seen because obzvon was away).
ALTER TABLE attempts ADD COLUMN ended_by text
    CHECK (ended_by IN ('customer', 'operator', 'dialer', 'system'));

-- Every state change the call engine makes goes to a journal file on the instance's disk and
-- from there, in order, to these tables; `applied_seq` is the last journal entry applied, in
-- the same transaction as the entry, so a replay after a crash applies nothing twice.
-- `journal_id` names the journal this database follows: a journal directory found holding
-- another id belongs to another database and is set aside, not applied here.
CREATE TABLE engine_journal (
    instance     text PRIMARY KEY,
    journal_id   uuid NOT NULL DEFAULT gen_random_uuid(),
    applied_seq  bigint NOT NULL DEFAULT 0,
    updated_at   timestamptz NOT NULL DEFAULT now()
);
