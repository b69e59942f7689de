-- Asterisk's call detail records, written by cdr_pgsql (asterisk-config/cdr_pgsql.conf) into
-- the dialer's database: `userfield` holds the attempt id and `accountcode` the campaign id
-- ("single" for calls without a campaign; on a bridged record the customer's is `peeraccount`),
-- so reports can add billed seconds per attempt.
-- Idempotent, because the test bed also applies this file before Asterisk starts: cdr_pgsql
-- reads the table's columns when it loads.

CREATE TABLE IF NOT EXISTS cdr (
    calldate     timestamptz NOT NULL DEFAULT now(),
    clid         text NOT NULL DEFAULT '',
    src          text NOT NULL DEFAULT '',
    dst          text NOT NULL DEFAULT '',
    dcontext     text NOT NULL DEFAULT '',
    channel      text NOT NULL DEFAULT '',
    dstchannel   text NOT NULL DEFAULT '',
    lastapp      text NOT NULL DEFAULT '',
    lastdata     text NOT NULL DEFAULT '',
    duration     integer NOT NULL DEFAULT 0,
    billsec      integer NOT NULL DEFAULT 0,
    disposition  text NOT NULL DEFAULT '',
    amaflags     integer NOT NULL DEFAULT 0,
    accountcode  text NOT NULL DEFAULT '',
    uniqueid     text NOT NULL DEFAULT '',
    userfield    text NOT NULL DEFAULT '',
    peeraccount  text NOT NULL DEFAULT '',
    linkedid     text NOT NULL DEFAULT '',
    sequence     integer NOT NULL DEFAULT 0
);
-- A bridged call's record belongs to the operator's channel (party A) and carries both parties'
-- userfields joined by ';' (";<attempt id>"), so attempts are looked up among the parts.
CREATE INDEX IF NOT EXISTS cdr_userfield_parts_idx ON cdr USING gin (string_to_array(userfield, ';'));
CREATE INDEX IF NOT EXISTS cdr_calldate_idx ON cdr (calldate);
