-- Preview dialing: a lead offered to an operator is reserved for them until a deadline. The
-- scheduler does not claim a reserved lead; when the reservation lapses the lead is free again.
ALTER TABLE leads
    ADD COLUMN reserved_by uuid REFERENCES operators (id) ON DELETE SET NULL,
    ADD COLUMN reserved_until timestamptz;
CREATE INDEX leads_reserved_by_idx ON leads (reserved_by) WHERE reserved_by IS NOT NULL;
