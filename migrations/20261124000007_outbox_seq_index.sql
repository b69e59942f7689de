-- `seq` is an identity column, unique by construction; its UNIQUE index cost every event (and
-- so every lead the scheduler claims) one more index write and served no query: the relay
-- reads unsent rows in `seq` order through outbox_unsent_idx.
ALTER TABLE outbox DROP CONSTRAINT IF EXISTS outbox_seq_key;
