"""Schemathesis hooks for obzvon's OpenAPI document (tests/openapi.rs loads them).

They teach the fuzzer what JSON Schema cannot say, and nothing else:
- `format: phone` is a number valid for its country (the server checks it with libphonenumber),
  so positive cases draw real mobile numbers instead of random digits;
- `format: webhook-url` is an http(s) address; the test server allows private targets, so a
  loopback address that resolves without DNS stands for any target;
- the rules between fields that the schemas' descriptions state (a span's `from` before its
  `to`, `target_abandon_rate` at most `max_abandon_rate`, `auto_dial_secs` below
  `reservation_secs`, no rule profile (its floors on other settings), a call for a phone or a lead but not both, `callback_at` in the future and
  only with `callback-needed`, a report's `from` before its `to`) hold in generated bodies.
"""

import re
from datetime import datetime, timezone

import schemathesis
from hypothesis import strategies as st

schemathesis.openapi.format(
    "phone",
    st.builds(lambda rest: "+79" + rest, st.text(alphabet="0123456789", min_size=9, max_size=9)),
)
schemathesis.openapi.format(
    "webhook-url",
    st.builds(
        lambda path: "http://127.0.0.1:9/" + path,
        st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789-_/", max_size=40),
    ),
)


def _minutes(hhmm):
    h, m = hhmm.split(":")
    return int(h) * 60 + int(m)


def _campaign_rules_hold(body):
    def number(holder, key, default):
        value = holder.get(key, default) if isinstance(holder, dict) else default
        return value if isinstance(value, (int, float)) and not isinstance(value, bool) else default

    # The target (default 0.03) stays at or under the cap (default 0.03).
    if number(body.get("pacing"), "target_abandon_rate", 0.03) > number(body, "max_abandon_rate", 0.03):
        return False
    # A rule profile sets floors on other settings (dial timeout, windows, caller ID...).
    compliance = body.get("compliance")
    if isinstance(compliance, dict) and compliance.get("profile", "none") != "none":
        return False
    preview = body.get("preview")
    if number(preview, "auto_dial_secs", 0) >= number(preview, "reservation_secs", 120):
        return False
    windows = body.get("calling_windows")
    if isinstance(windows, dict):
        for spans in windows.values():
            for span in spans if isinstance(spans, list) else []:
                try:
                    if _minutes(span["from"]) >= _minutes(span["to"]):
                        return False
                except (KeyError, TypeError, ValueError):
                    pass
    return True


def _call_rules_hold(body):
    return ("phone" in body and body["phone"] is not None) != ("lead_id" in body and body["lead_id"] is not None)


def _disposition_rules_hold(body):
    at = body.get("callback_at")
    if at is None:
        return True
    if body.get("result") != "callback-needed":
        return False
    try:
        return datetime.fromisoformat(at.replace("Z", "+00:00")) > datetime.now(timezone.utc)
    except (AttributeError, ValueError):
        return True


PHONE = re.compile(r"^\+79[0-9]{9}$")


CONTROL = re.compile(r"[\u0000-\u0008\u000B\u000C\u000E-\u001F\u007F-\u009F]")


def _free_text(value):
    """A lead's `fields` and a call's `crm`: no control characters at any depth (the schema
    states it for the first level of keys only, which is what client generators can read)."""
    if isinstance(value, str):
        return not CONTROL.search(value)
    if isinstance(value, list):
        return all(_free_text(v) for v in value)
    if isinstance(value, dict):
        return all(_free_text(k) and _free_text(v) for k, v in value.items())
    return True


def _phones_are_real(op, body):
    """Positive cases carry numbers of the one form the hooks know is valid."""
    if op in ("add_dnc", "create_call") and isinstance(body.get("phone"), str):
        return bool(PHONE.match(body["phone"]))
    return True


def _op(case):
    return case.operation.definition.raw.get("operationId")


@schemathesis.hook
def filter_case(context, case):
    """Applies in every phase (the coverage phase does not run `filter_body`)."""
    op = _op(case)
    # CSV content rules (a header with a phone column, its delimiters and quoting) are beyond
    # JSON Schema; the CSV reader has its own fuzz targets (tests/fuzz.rs).
    if op == "import_leads" and (case.media_type or "").startswith("text/csv"):
        return False
    body = case.body if isinstance(case.body, dict) else None
    if body is not None:
        positive = case.meta is None or case.meta.generation.mode.is_positive
        if positive and not _phones_are_real(op, body):
            return False
        if positive and op == "create_call" and not _free_text(body.get("crm")):
            return False
        if op in ("create_campaign", "update_campaign") and not _campaign_rules_hold(body):
            return False
        if op == "create_call" and not _call_rules_hold(body):
            return False
        if op == "set_disposition" and not _disposition_rules_hold(body):
            return False
    query = case.query if isinstance(case.query, dict) else None
    if op in ("report", "compliance_report") and query and query.get("from"):
        # `to` defaults to now; `from` without `to` must lie in the past.
        try:
            start = datetime.fromisoformat(str(query["from"]).replace("Z", "+00:00"))
            end = (
                datetime.fromisoformat(str(query["to"]).replace("Z", "+00:00"))
                if query.get("to")
                else datetime.now(timezone.utc)
            )
            return start < end
        except (TypeError, ValueError):
            return True
    return True
