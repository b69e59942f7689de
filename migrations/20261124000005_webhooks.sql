-- Webhook subscriptions and their deliveries. Every outbox row (an event) fans out to one
-- delivery per enabled subscription that wants its type, in the transaction that wrote the
-- event, so a webhook can no more lose an event than RabbitMQ can.

CREATE TABLE webhooks (
    id            uuid PRIMARY KEY,
    url           text NOT NULL CHECK (url ~ '^https?://[^\s]+$'),
    -- The HMAC-SHA256 key; kept because every delivery is signed with it.
    secret        text NOT NULL CHECK (length(secret) >= 16),
    -- Event types to deliver (e.g. OutboundCallEnded); empty means all.
    event_types   text[] NOT NULL DEFAULT '{}',
    description   text,
    enabled       boolean NOT NULL DEFAULT true,
    created_at    timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE webhook_deliveries (
    id            bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    webhook_id    uuid NOT NULL REFERENCES webhooks (id) ON DELETE CASCADE,
    event_id      uuid NOT NULL REFERENCES outbox (id),
    status        text NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'delivered', 'failed')),
    tries         integer NOT NULL DEFAULT 0,
    next_try_at   timestamptz NOT NULL DEFAULT now(),
    last_status   integer,
    last_error    text,
    delivered_at  timestamptz,
    created_at    timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT webhook_deliveries_once UNIQUE (webhook_id, event_id)
);
CREATE INDEX webhook_deliveries_due_idx ON webhook_deliveries (next_try_at) WHERE status = 'pending';

-- One statement-level trigger: a scheduler claim that writes 100 events costs one INSERT here.
CREATE FUNCTION outbox_fan_out_to_webhooks() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO webhook_deliveries (webhook_id, event_id)
    SELECT w.id, n.id
    FROM new_events n JOIN webhooks w
      ON w.enabled AND (cardinality(w.event_types) = 0 OR n.event_type = ANY (w.event_types));
    RETURN NULL;
END $$;

CREATE TRIGGER outbox_webhooks
    AFTER INSERT ON outbox REFERENCING NEW TABLE AS new_events
    FOR EACH STATEMENT EXECUTE FUNCTION outbox_fan_out_to_webhooks();
