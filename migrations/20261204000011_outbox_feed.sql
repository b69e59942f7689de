-- The live event stream (GET /api/v1/events/stream) reads the outbox after a `seq`. A BRIN
-- index serves that range (rows are appended in `seq` order) at a fraction of a B-tree's cost
-- per insert, which every claimed lead pays (see 20261124000007).
CREATE INDEX outbox_seq_brin ON outbox USING brin (seq);
