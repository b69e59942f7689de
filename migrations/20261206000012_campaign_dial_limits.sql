-- Limits that hold across every obzvon instance sharing this database (one per Asterisk box).
-- Each campaign's calls-per-second budget is one token bucket here, refilled and spent by the
-- claim that holds its row locked (so claims of one campaign, from any box, take turns); and
-- its live attempts are counted by this index when the claim checks max_concurrent_calls.
CREATE TABLE campaign_dial_tokens (
    campaign_id uuid PRIMARY KEY REFERENCES campaigns (id) ON DELETE CASCADE,
    tokens      double precision NOT NULL,
    at          timestamptz NOT NULL
);

CREATE INDEX attempts_campaign_live_idx ON attempts (campaign_id)
    WHERE status IN ('init', 'ringing', 'in-progress');
