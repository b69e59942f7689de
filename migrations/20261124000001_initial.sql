-- obzvon schema, first version. State names are the wire names of DESIGN.md; CHECK constraints
-- keep the database honest even against a buggy writer. Times are timestamptz (UTC on the wire).

CREATE TABLE campaigns (
    id              uuid PRIMARY KEY,
    name            text NOT NULL CHECK (length(btrim(name)) > 0),
    state           text NOT NULL DEFAULT 'draft'
                    CHECK (state IN ('draft', 'running', 'paused', 'stopped', 'finished')),
    enabled         boolean NOT NULL DEFAULT true,
    trunk           text NOT NULL CHECK (length(btrim(trunk)) > 0),
    caller_id       text NOT NULL CHECK (length(btrim(caller_id)) > 0),
    timezone        text NOT NULL DEFAULT 'UTC',
    default_region  text NOT NULL DEFAULT 'RU',
    -- Pacing, windows, retries, limits: validated by the application, versioned by `revision`.
    settings        jsonb NOT NULL DEFAULT '{}'::jsonb,
    revision        integer NOT NULL DEFAULT 1,
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now(),
    started_at      timestamptz,
    stopped_at      timestamptz
);
CREATE UNIQUE INDEX campaigns_name_key ON campaigns (lower(name));
CREATE INDEX campaigns_state_idx ON campaigns (state);

CREATE TABLE operators (
    id                  uuid PRIMARY KEY,
    name                text NOT NULL CHECK (length(btrim(name)) > 0),
    -- The Asterisk endpoint of the operator's phone, e.g. PJSIP/op1.
    endpoint            text NOT NULL,
    skills              text[] NOT NULL DEFAULT '{}',
    state               text NOT NULL DEFAULT 'offline'
                        CHECK (state IN ('offline', 'ready', 'reserved', 'on-call', 'wrap-up', 'paused')),
    state_changed_at    timestamptz NOT NULL DEFAULT now(),
    session_channel_id  text,
    session_bridge_id   text,
    -- Which obzvon instance holds the session (several instances may share one database).
    session_instance    text,
    enabled             boolean NOT NULL DEFAULT true,
    created_at          timestamptz NOT NULL DEFAULT now(),
    updated_at          timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT operators_endpoint_key UNIQUE (endpoint)
);
CREATE INDEX operators_state_idx ON operators (state, state_changed_at);

CREATE TABLE campaign_operators (
    campaign_id  uuid NOT NULL REFERENCES campaigns (id) ON DELETE CASCADE,
    operator_id  uuid NOT NULL REFERENCES operators (id) ON DELETE CASCADE,
    PRIMARY KEY (campaign_id, operator_id)
);
CREATE INDEX campaign_operators_operator_idx ON campaign_operators (operator_id);

CREATE TABLE leads (
    id                      uuid PRIMARY KEY,
    campaign_id             uuid NOT NULL REFERENCES campaigns (id) ON DELETE CASCADE,
    phone_e164              text NOT NULL CHECK (phone_e164 ~ '^\+[1-9][0-9]{6,14}$'),
    name                    text,
    timezone                text,
    external_id             text,
    priority                integer NOT NULL DEFAULT 0,
    fields                  jsonb NOT NULL DEFAULT '{}'::jsonb,
    state                   text NOT NULL DEFAULT 'pending'
                            CHECK (state IN ('pending', 'scheduled', 'dialing', 'done', 'exhausted', 'dnc', 'canceled')),
    attempts_count          integer NOT NULL DEFAULT 0 CHECK (attempts_count >= 0),
    next_attempt_at         timestamptz,
    last_result             text,
    callback_operator_id    uuid REFERENCES operators (id) ON DELETE SET NULL,
    created_at              timestamptz NOT NULL DEFAULT now(),
    updated_at              timestamptz NOT NULL DEFAULT now(),
    -- One lead per number within a campaign (dedup on import).
    CONSTRAINT leads_campaign_phone_key UNIQUE (campaign_id, phone_e164)
);
-- The scheduler's claim query: due leads of a campaign by priority and time.
CREATE INDEX leads_due_idx ON leads (campaign_id, next_attempt_at, priority DESC)
    WHERE state IN ('pending', 'scheduled');
CREATE INDEX leads_campaign_state_idx ON leads (campaign_id, state);
CREATE INDEX leads_phone_idx ON leads (phone_e164);
CREATE INDEX leads_external_id_idx ON leads (external_id) WHERE external_id IS NOT NULL;

CREATE TABLE attempts (
    -- Also the ARI channelId of the customer leg.
    id                  uuid PRIMARY KEY,
    lead_id             uuid REFERENCES leads (id) ON DELETE SET NULL,
    campaign_id         uuid REFERENCES campaigns (id) ON DELETE SET NULL,
    operator_id         uuid REFERENCES operators (id) ON DELETE SET NULL,
    phone_e164          text NOT NULL CHECK (phone_e164 ~ '^\+[1-9][0-9]{6,14}$'),
    caller_id           text,
    kind                text NOT NULL DEFAULT 'campaign'
                        CHECK (kind IN ('campaign', 'preview', 'click-to-call')),
    status              text NOT NULL DEFAULT 'init'
                        CHECK (status IN ('init', 'ringing', 'in-progress', 'completed', 'failed', 'canceled')),
    result              text
                        CHECK (result IN ('success', 'no-answer', 'busy', 'callback-needed', 'abandoned', 'machine',
                                          'rejected', 'invalid-number', 'congestion', 'failed', 'not-interested',
                                          'do-not-call')),
    hangup_cause        integer,
    hangup_cause_txt    text,
    sip_code            integer,
    channel_id          text,
    bridge_id           text,
    recording_name      text,
    disposition_notes   text,
    callback_at         timestamptz,
    correlation_id      text,
    crm                 jsonb NOT NULL DEFAULT '{}'::jsonb,
    -- Which obzvon instance owns the call (for reconciliation after a crash).
    instance            text,
    created_at          timestamptz NOT NULL DEFAULT now(),
    dialed_at           timestamptz,
    ringing_at          timestamptz,
    answered_at         timestamptz,
    bridged_at          timestamptz,
    ended_at            timestamptz,
    updated_at          timestamptz NOT NULL DEFAULT now(),
    -- A terminal attempt has an end time; a live one has none.
    CONSTRAINT attempts_ended_when_terminal CHECK (
        (status IN ('init', 'ringing', 'in-progress')) = (ended_at IS NULL)
    )
);
-- One phone number is never in two live calls, across campaigns and click-to-call.
CREATE UNIQUE INDEX attempts_one_live_per_number ON attempts (phone_e164)
    WHERE status IN ('init', 'ringing', 'in-progress');
CREATE INDEX attempts_lead_idx ON attempts (lead_id, created_at);
CREATE INDEX attempts_campaign_idx ON attempts (campaign_id, created_at);
CREATE INDEX attempts_operator_idx ON attempts (operator_id, created_at);
CREATE INDEX attempts_status_idx ON attempts (status);
CREATE INDEX attempts_live_idx ON attempts (instance) WHERE status IN ('init', 'ringing', 'in-progress');

-- Append-only history of every attempt transition (the timeline).
CREATE TABLE attempt_transitions (
    id           bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    attempt_id   uuid NOT NULL REFERENCES attempts (id) ON DELETE CASCADE,
    from_status  text,
    to_status    text NOT NULL,
    result       text,
    reason       text,
    detail       jsonb NOT NULL DEFAULT '{}'::jsonb,
    at           timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX attempt_transitions_attempt_idx ON attempt_transitions (attempt_id, id);

CREATE FUNCTION forbid_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION '% is append-only', TG_TABLE_NAME USING ERRCODE = 'restrict_violation';
END $$;
CREATE TRIGGER attempt_transitions_append_only
    BEFORE UPDATE OR DELETE ON attempt_transitions
    FOR EACH ROW EXECUTE FUNCTION forbid_change();

-- Transactional outbox: events are written with the state change, relayed to RabbitMQ later.
CREATE TABLE outbox (
    id              uuid PRIMARY KEY,
    seq             bigint GENERATED ALWAYS AS IDENTITY UNIQUE,
    event_type      text NOT NULL,
    routing_key     text NOT NULL,
    attempt_id      uuid,
    payload         jsonb NOT NULL,
    headers         jsonb NOT NULL DEFAULT '{}'::jsonb,
    created_at      timestamptz NOT NULL DEFAULT now(),
    sent_at         timestamptz,
    publish_tries   integer NOT NULL DEFAULT 0,
    last_error      text
);
CREATE INDEX outbox_unsent_idx ON outbox (seq) WHERE sent_at IS NULL;

-- Do-not-call numbers: global (campaign_id NULL) or per campaign.
CREATE TABLE dnc (
    id           bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    phone_e164   text NOT NULL CHECK (phone_e164 ~ '^\+[1-9][0-9]{6,14}$'),
    campaign_id  uuid REFERENCES campaigns (id) ON DELETE CASCADE,
    reason       text,
    source       text,
    created_at   timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT dnc_phone_campaign_key UNIQUE NULLS NOT DISTINCT (phone_e164, campaign_id)
);

CREATE TABLE api_tokens (
    id            uuid PRIMARY KEY,
    name          text NOT NULL,
    -- SHA-256 of the token; the token itself is shown once and never stored.
    token_hash    bytea NOT NULL,
    scopes        text[] NOT NULL,
    created_at    timestamptz NOT NULL DEFAULT now(),
    last_used_at  timestamptz,
    revoked_at    timestamptz,
    CONSTRAINT api_tokens_hash_key UNIQUE (token_hash),
    CONSTRAINT api_tokens_scopes_known CHECK (
        scopes <@ ARRAY['calls:write', 'campaigns:write', 'operators:write', 'reports:read', 'admin']::text[]
    )
);

CREATE TABLE audit_log (
    id           bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    actor        text NOT NULL,
    action       text NOT NULL,
    entity_type  text NOT NULL,
    entity_id    text,
    before       jsonb,
    after        jsonb,
    at           timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX audit_log_entity_idx ON audit_log (entity_type, entity_id, at);
CREATE TRIGGER audit_log_append_only
    BEFORE UPDATE OR DELETE ON audit_log
    FOR EACH ROW EXECUTE FUNCTION forbid_change();
