-- Compliance (issue 14): why each lead was dialled or skipped, per-number history reads for
-- contact limits, when the abandon message started, and answering-machine detection.

-- Each skip at claim time: the rule, a sentence for the supervisor, and when the lead may be
-- tried again. Written once per decision (a skipped lead is rescheduled to `until`).
CREATE TABLE lead_skips (
    id           bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    lead_id      uuid NOT NULL REFERENCES leads (id) ON DELETE CASCADE,
    campaign_id  uuid NOT NULL REFERENCES campaigns (id) ON DELETE CASCADE,
    rule         text NOT NULL CHECK (rule IN ('outside-hours', 'holiday', 'contact-limit', 'quiet-period',
                                               'dnc', 'number-busy')),
    reason       text NOT NULL,
    until        timestamptz,
    at           timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX lead_skips_lead_idx ON lead_skips (lead_id, id);
CREATE INDEX lead_skips_campaign_idx ON lead_skips (campaign_id, at);

-- Why the scheduler dialled the lead now: pacing slot, calling hours, the checks passed.
ALTER TABLE attempts ADD COLUMN dial_reason jsonb;
-- When the abandon (information) message started playing.
ALTER TABLE attempts ADD COLUMN message_at timestamptz;
-- Answering-machine detection: app_amd's AMDSTATUS and AMDCAUSE, and when it decided.
ALTER TABLE attempts ADD COLUMN amd_status text;
ALTER TABLE attempts ADD COLUMN amd_cause text;

-- Contact limits read a number's calls of the last 31 days.
CREATE INDEX attempts_phone_idx ON attempts (phone_e164, created_at);
