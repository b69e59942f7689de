//! What the OpenAPI document says beyond what the derives see: the shared string formats
//! (time zones, regions, phone numbers, one-line text) that the domain types point to with
//! `#[schema(schema_with = ...)]`, and the answers every operation can give (401, 403, 404 for
//! an unknown id, 400/408/413/422 for a body, 503), added by [`add_common_answers`] so no
//! handler can forget one.

use serde_json::{json, Value};
use utoipa::openapi::path::Operation;
use utoipa::openapi::{RefOr, Schema};

/// The text formats fields name with `#[schema(format = "...")]` (a pattern must be a literal
/// there), and the pattern [`document`] gives each: what `text::line_problem` and
/// `text::note_problem` accept.
const TEXT_FORMATS: [(&str, &str); 3] = [
    // Printable text on one line: no control characters (Unicode Cc).
    ("one-line", r"^[^\u0000-\u001F\u007F-\u009F]*$"),
    // One line with at least one character that is not a space.
    (
        "not-blank",
        r"^[^\u0000-\u001F\u007F-\u009F]*[^\s\u0000-\u001F\u007F-\u009F][^\u0000-\u001F\u007F-\u009F]*$",
    ),
    // Free text over several lines: tabs and line breaks allowed, other control characters not.
    (
        "free-text",
        r"^[^\u0000-\u0008\u000B\u000C\u000E-\u001F\u007F-\u009F]*$",
    ),
];

/// Replaces each of the [`TEXT_FORMATS`] by its pattern, at any depth.
fn text_patterns(value: &mut Value) {
    match value {
        Value::Object(map) => {
            let pattern = map
                .get("format")
                .and_then(Value::as_str)
                .and_then(|f| TEXT_FORMATS.iter().find(|(name, _)| *name == f))
                .map(|(_, pattern)| *pattern);
            if let Some(pattern) = pattern {
                map.entry("pattern").or_insert_with(|| pattern.into());
                // The pattern is the rule; a format name no validator knows only misleads
                // client generators and fuzzers into guessing.
                map.remove("format");
            }
            map.values_mut().for_each(text_patterns);
        }
        Value::Array(items) => items.iter_mut().for_each(text_patterns),
        _ => {}
    }
}

fn schema(value: Value) -> RefOr<Schema> {
    serde_json::from_value(value).expect("a schema literal")
}

fn component(name: &str) -> RefOr<Schema> {
    RefOr::Ref(utoipa::openapi::Ref::from_schema_name(name))
}

/// A `$ref` to the `TimeZone` component.
pub fn time_zone() -> RefOr<Schema> {
    component("TimeZone")
}

/// A `$ref` to the `Region` component.
pub fn region() -> RefOr<Schema> {
    component("Region")
}

/// A `$ref` to the `Phone` component.
pub fn phone() -> RefOr<Schema> {
    component("Phone")
}

fn nullable(name: &str) -> RefOr<Schema> {
    schema(json!({"oneOf": [{"$ref": format!("#/components/schemas/{name}")}, {"type": "null"}]}))
}

pub fn nullable_phone() -> RefOr<Schema> {
    nullable("Phone")
}

pub fn nullable_time_zone() -> RefOr<Schema> {
    nullable("TimeZone")
}

pub fn nullable_region() -> RefOr<Schema> {
    nullable("Region")
}

/// A lead's or call's own data: any JSON object, at most 16 KiB, no control characters in
/// its texts other than tabs and line breaks.
pub fn free_object() -> RefOr<Schema> {
    schema(free_object_schema())
}

pub fn nullable_free_object() -> RefOr<Schema> {
    schema(json!({"oneOf": [free_object_schema(), {"type": "null"}]}))
}

/// Any JSON object of at most 16 KiB whose texts (keys too, at any depth) hold no control
/// characters but tabs and line breaks. The schema states the rule for the keys of the first
/// level; client generators read neither a recursive rule nor one on mixed types, so deeper
/// values carry it in the description.
fn free_object_schema() -> Value {
    json!({"type": "object", "propertyNames": {"type": "string", "format": "free-text"},
        "additionalProperties": true,
        "description": "any JSON object, at most 16 KiB; its keys and texts, at any depth, may not hold control characters other than tab and line breaks"})
}

/// Every IANA zone name the dialer knows, as one component.
fn time_zone_component() -> Value {
    let names: Vec<&str> = chrono_tz::TZ_VARIANTS.iter().map(|tz| tz.name()).collect();
    // Names for generated enums: `Etc/GMT+5` and `Etc/GMT-5` must not both become ETCGMT5.
    let mut seen = std::collections::HashSet::new();
    let var_names: Vec<String> = names
        .iter()
        .map(|name| {
            let mut var: String = name
                .replace('+', "_PLUS_")
                .replace('-', "_MINUS_")
                .chars()
                .map(|c| {
                    if c.is_ascii_alphanumeric() {
                        c.to_ascii_uppercase()
                    } else {
                        '_'
                    }
                })
                .collect();
            while !seen.insert(var.clone()) {
                var.push('_');
            }
            var
        })
        .collect();
    json!({"type": "string", "enum": names, "x-enum-varnames": var_names, "description": "an IANA time zone",
        "example": "Europe/Moscow"})
}

/// Every ISO 3166 region phone numbers can be read for.
fn region_component() -> Value {
    let mut codes = Vec::new();
    for a in b'A'..=b'Z' {
        for b in b'A'..=b'Z' {
            let code = String::from_utf8(vec![a, b]).expect("ASCII");
            if crate::phone::Region::parse(&code).is_ok() {
                codes.push(code);
            }
        }
    }
    json!({"type": "string", "enum": codes, "description": "an ISO 3166 region for numbers written without their country code",
        "example": "RU"})
}

fn phone_component() -> Value {
    json!({"type": "string", "format": "phone", "maxLength": 64, "pattern": TEXT_FORMATS[0].1,
        "description": "a telephone number that is valid for its country: E.164 (+79161234567) or any common \
                        notation, read with the campaign's (or the given) region when it has no country code",
        "example": "+79161234567"})
}

/// The answers every operation can give, and the request bodies that name a schema only
/// [`document`] writes. Runs once the routes are in the document.
pub fn add_common_answers(openapi: &mut utoipa::openapi::OpenApi) {
    for item in openapi.paths.paths.values_mut() {
        for op in [
            &mut item.get,
            &mut item.post,
            &mut item.patch,
            &mut item.put,
            &mut item.delete,
        ]
        .into_iter()
        .flatten()
        {
            add_common(op);
        }
    }
    body_schema(openapi, "/api/v1/campaigns/{id}", "CampaignChanges");
    body_schema(openapi, "/api/v1/operators", "NewOperator");
}

/// The document as served and printed: the derived schemas, plus the shared components, with
/// flattened structs merged and the request variants (`CampaignChanges`, `NewOperator`) that
/// the derives cannot state.
pub fn document(openapi: &utoipa::openapi::OpenApi) -> Value {
    let mut doc = serde_json::to_value(openapi).expect("the document serialises");
    let schemas = doc["components"]["schemas"]
        .as_object_mut()
        .expect("the document has schemas");
    schemas.insert("TimeZone".into(), time_zone_component());
    schemas.insert("Region".into(), region_component());
    schemas.insert("Phone".into(), phone_component());
    flatten_all_of(schemas);
    // Every lead matches "anything" too: the row is one or the other, so `anyOf`, not `oneOf`.
    if let Some(row) = schemas.get_mut("LeadRow") {
        if let Some(variants) = row.as_object_mut().and_then(|r| r.remove("oneOf")) {
            row["anyOf"] = variants;
        }
    }
    for schema in schemas.values_mut() {
        drop_defaults_of_required(schema);
        drop_object_defaults(schema);
    }
    // PATCH takes any subset of a campaign's settings.
    if let Some(spec) = schemas.get("CampaignSpec") {
        let mut changes = spec.clone();
        changes["required"] = json!([]);
        changes["description"] = json!("the settings to change; the others keep their values");
        schemas.insert("CampaignChanges".into(), changes);
    }
    // Creating an operator needs a name and an endpoint; changing one takes any subset.
    if let Some(input) = schemas.get("OperatorInput") {
        let mut create = input.clone();
        create["required"] = json!(["name", "endpoint"]);
        for field in ["name", "endpoint"] {
            create["properties"][field]["type"] = json!("string");
        }
        create["description"] = json!("a new operator: name and endpoint are required");
        schemas.insert("NewOperator".into(), create);
    }
    text_patterns(&mut doc);
    doc
}

/// Points the JSON request body of the path's PATCH or POST at `component`.
fn body_schema(openapi: &mut utoipa::openapi::OpenApi, path: &str, component_name: &str) {
    let Some(item) = openapi.paths.paths.get_mut(path) else {
        return;
    };
    for op in [&mut item.patch, &mut item.post].into_iter().flatten() {
        if let Some(content) = op
            .request_body
            .as_mut()
            .and_then(|b| b.content.get_mut("application/json"))
        {
            content.schema = Some(component(component_name));
        }
    }
}

/// A `#[serde(flatten)]` field comes out of the derive as `allOf` of the inner schema and the
/// outer fields; an inner `additionalProperties: false` would then refuse the outer fields, so
/// the parts are merged into one object.
fn flatten_all_of(schemas: &mut serde_json::Map<String, Value>) {
    let names: Vec<String> = schemas
        .iter()
        .filter(|(_, v)| v.get("allOf").is_some())
        .map(|(k, _)| k.clone())
        .collect();
    for name in names {
        let schema = schemas[&name].clone();
        let mut properties = serde_json::Map::new();
        let mut required: Vec<Value> = Vec::new();
        for part in schema["allOf"].as_array().into_iter().flatten() {
            let part = match part["$ref"].as_str() {
                Some(r) => schemas[r.trim_start_matches("#/components/schemas/")].clone(),
                None => part.clone(),
            };
            if let Some(p) = part["properties"].as_object() {
                properties.extend(p.clone());
            }
            required.extend(part["required"].as_array().cloned().unwrap_or_default());
        }
        let mut merged = json!({"type": "object", "properties": properties, "required": required});
        if let Some(d) = schema.get("description") {
            merged["description"] = d.clone();
        }
        schemas.insert(name, merged);
    }
}

/// A nested object's default (all of its fields' defaults) comes out as `oneOf [$ref]` with an
/// object `default`, which client generators refuse; the nested schema lists the defaults.
fn drop_object_defaults(schema: &mut Value) {
    if let Some(properties) = schema.get_mut("properties").and_then(Value::as_object_mut) {
        for p in properties.values_mut() {
            let Some(p) = p.as_object_mut() else { continue };
            if p.get("default").is_some_and(Value::is_object) {
                p.remove("default");
                if let Some(only) = p
                    .get("oneOf")
                    .and_then(Value::as_array)
                    .filter(|o| o.len() == 1)
                    .cloned()
                {
                    p.remove("oneOf");
                    p.extend(only[0].as_object().cloned().unwrap_or_default());
                }
            }
        }
    }
}

/// A field every request must carry has no default (the derive copies `Default` values).
fn drop_defaults_of_required(schema: &mut Value) {
    let required: Vec<String> = schema["required"]
        .as_array()
        .map(|r| r.iter().filter_map(|v| v.as_str().map(str::to_owned)).collect())
        .unwrap_or_default();
    if let Some(properties) = schema.get_mut("properties").and_then(Value::as_object_mut) {
        for name in required {
            if let Some(p) = properties.get_mut(&name).and_then(Value::as_object_mut) {
                p.remove("default");
            }
        }
    }
}

fn add_common(op: &mut Operation) {
    let params = op.parameters.clone().unwrap_or_default();
    let in_path = params
        .iter()
        .any(|p| matches!(p.parameter_in, utoipa::openapi::path::ParameterIn::Path));
    let in_query = params
        .iter()
        .any(|p| matches!(p.parameter_in, utoipa::openapi::path::ParameterIn::Query));
    let mut answers = vec![
        ("401", "no token, or an unknown or revoked one"),
        ("403", "the token lacks the scope"),
        ("503", "the database or Asterisk cannot be reached now; try again"),
    ];
    if in_path {
        answers.push(("404", "no such resource (or an id that is not one)"));
    }
    if in_query {
        answers.push(("400", "a query parameter of the wrong type"));
        answers.push(("422", "a query parameter out of range"));
    }
    if op.request_body.is_some() {
        answers.push(("400", "no body, a body that is not JSON, or the wrong content type"));
        answers.push(("408", "the body came too slowly"));
        answers.push(("413", "the body is larger than the limit"));
        answers.push((
            "422",
            "the body does not meet the rules; `fields` names each field and why",
        ));
    }
    for (status, description) in answers {
        if !op.responses.responses.contains_key(status) {
            let response = utoipa::openapi::ResponseBuilder::new()
                .description(description)
                .content(
                    "application/json",
                    utoipa::openapi::content::ContentBuilder::new()
                        .schema(Some(component("ErrorBody")))
                        .build(),
                )
                .build();
            op.responses.responses.insert(status.into(), RefOr::T(response));
        }
    }
}

/// `retry_delays_secs`: a delay per result that may be retried (final results cannot be).
pub fn retry_delays() -> RefOr<Schema> {
    let retryable: Vec<&str> = crate::calls::AttemptResult::ALL
        .iter()
        .filter(|r| !r.is_final())
        .map(|r| r.as_str())
        .collect();
    schema(
        json!({"type": "object", "propertyNames": {"type": "string", "enum": retryable},
        "additionalProperties": {"type": "integer", "minimum": 0, "maximum": crate::campaigns::spec::MAX_DELAY_SECS},
        "description": "seconds before a lead is tried again after this result (at most 30 days); results not listed are final",
        "example": {"no-answer": 1800, "busy": 600}}),
    )
}

/// `calling_windows`: per weekday, local spans `HH:MM`–`HH:MM` (`24:00` may end a span).
pub fn calling_windows() -> RefOr<Schema> {
    schema(
        json!({"type": "object", "propertyNames": {"type": "string", "enum": crate::dialer::window::WEEKDAYS},
        "additionalProperties": {"type": "array", "items": {"$ref": "#/components/schemas/Span"}},
        "description": "local times of day (in the lead's zone, else the campaign's) when calls may be placed, per weekday; \
                        a day not listed has no calls; an empty table means any time",
        "example": {"mon": [{"from": "09:00", "to": "21:00"}], "sat": [{"from": "10:00", "to": "18:00"}]}}),
    )
}

/// A campaign's required skills.
pub fn skills() -> RefOr<Schema> {
    schema(json!({"type": "array", "maxItems": crate::campaigns::spec::MAX_SKILLS,
        "items": {"type": "string", "maxLength": crate::campaigns::spec::MAX_SKILL_CHARS, "format": "one-line"},
        "description": "skills an operator must all have to take the calls"}))
}

/// An operator's skills: each not blank.
pub fn operator_skills() -> RefOr<Schema> {
    schema(
        json!({"type": ["array", "null"], "maxItems": crate::campaigns::spec::MAX_SKILLS,
        "items": {"type": "string", "minLength": 1, "maxLength": crate::campaigns::spec::MAX_SKILL_CHARS, "format": "not-blank"}}),
    )
}

/// `disposition_keys`: a phone key (1-9 or *) per result.
pub fn disposition_keys() -> RefOr<Schema> {
    schema(
        json!({"type": "object", "propertyNames": {"type": "string", "pattern": "^[1-9*]$"},
        "additionalProperties": {"$ref": "#/components/schemas/AttemptResult"},
        "description": "phone keys (1-9 or *; 0 and # are reserved) an operator presses in wrap-up, and the result each sets",
        "example": {"1": "success", "2": "not-interested", "3": "callback-needed", "4": "do-not-call"}}),
    )
}

/// A webhook target: an http(s) address; public unless the configuration allows private ones.
pub fn webhook_url() -> RefOr<Schema> {
    schema(
        json!({"type": "string", "format": "webhook-url", "maxLength": 2000, "pattern": "^[Hh][Tt][Tt][Pp][Ss]?://[^\\s\\u0000-\\u001F\\u007F-\\u009F]+$",
        "description": "an http:// or https:// address that resolves to public addresses only (unless [webhooks] allow_private_targets); \
                        a user name and password in it are kept apart and sent as basic auth",
        "example": "https://crm.example.com/obzvon/events"}),
    )
}

/// Event types a webhook takes; empty means all.
pub fn event_types() -> RefOr<Schema> {
    schema(
        json!({"type": "array", "items": {"type": "string", "enum": crate::events::EVENT_TYPES},
        "description": "event types to deliver; empty or absent means all"}),
    )
}
