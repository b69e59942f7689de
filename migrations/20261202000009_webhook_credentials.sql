-- A user name and password a receiver wants (basic auth) are kept apart from the URL, so the
-- URL can be logged and shown without them. Existing subscriptions with credentials in their
-- URL are split the same way.

ALTER TABLE webhooks ADD COLUMN basic_auth text;

UPDATE webhooks
   SET basic_auth = substring(url FROM '^https?://([^/@]*)@'),
       url = regexp_replace(url, '^(https?://)[^/@]*@', '\1')
 WHERE url ~ '^https?://[^/@]*@';
