//! The JSON Schemas in `contracts/` stay in step with the code: one schema per event type the
//! outbox carries, and the enumerations of statuses, results and states are exactly the wire
//! names the code writes. (The events actually emitted are validated against these schemas in
//! tests/events.rs and tests/webhooks.rs.)

mod common;

use common::contracts::Contracts;
use obzvon::calls::{AttemptResult, AttemptStatus};
use obzvon::campaigns::CampaignState;
use obzvon::operators::OperatorState;
use serde_json::Value;

fn schema(name: &str) -> Value {
    let path = common::repo_path(&format!("contracts/{name}.json"));
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn names(values: &Value) -> Vec<String> {
    let mut v: Vec<String> = values
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|x| x.as_str().map(str::to_owned))
        .collect();
    v.sort();
    v
}

fn sorted(mut v: Vec<String>) -> Vec<String> {
    v.sort();
    v
}

#[test]
fn there_is_one_schema_per_event_type_and_their_enums_are_the_wire_names() {
    let contracts = Contracts::load();
    let types = sorted(obzvon::events::EVENT_TYPES.iter().map(|s| s.to_string()).collect());
    assert_eq!(contracts.event_types(), types);

    let statuses = sorted(AttemptStatus::ALL.iter().map(|s| s.as_str().to_owned()).collect());
    let results = sorted(AttemptResult::ALL.iter().map(|s| s.as_str().to_owned()).collect());
    let ended = schema("events/OutboundCallEnded");
    assert_eq!(names(&ended["properties"]["status"]["enum"]).len(), 2);
    let ringing = schema("events/OutboundCallRinging");
    assert_eq!(names(&ringing["properties"]["status"]["enum"]), statuses);
    assert_eq!(names(&ringing["properties"]["result"]["enum"]), results);
    assert_eq!(
        names(&schema("events/OutboundCallFailed")["properties"]["result"]["enum"]),
        results
    );

    let operator = schema("events/OperatorStateChanged");
    let op_states = sorted(OperatorState::ALL.iter().map(|s| s.as_str().to_owned()).collect());
    assert_eq!(names(&operator["properties"]["state"]["enum"]), op_states);
    let campaign = schema("events/CampaignStateChanged");
    let c_states = sorted(CampaignState::ALL.iter().map(|s| s.as_str().to_owned()).collect());
    assert_eq!(names(&campaign["properties"]["state"]["enum"]), c_states);
}

#[test]
fn the_call_request_schema_accepts_and_refuses_what_the_api_does() {
    let contracts = Contracts::load();
    let op = "5b0c9d47-93a4-4a43-9b0e-7d1f3c2a6e11";
    let good = [
        serde_json::json!({"operator_id": op, "phone": "+74951234567"}),
        serde_json::json!({"operator_id": op, "lead_id": op, "campaign_id": op, "correlation_id": "x", "crm": {"a": 1}}),
        serde_json::json!({"operator_id": op, "phone": "84951234567", "region": "RU", "caller_id": "7495"}),
    ];
    let bad = [
        serde_json::json!({"phone": "+74951234567"}),
        serde_json::json!({"operator_id": op}),
        serde_json::json!({"operator_id": op, "phone": "+7495", "lead_id": op}),
        serde_json::json!({"operator_id": op, "phone": "+7495", "priority": 1}),
        serde_json::json!({"operator_id": "not-a-uuid", "phone": "+7495"}),
    ];
    for request in &good {
        assert!(contracts.call_request.is_valid(request), "schema refuses {request}");
        obzvon::calls::place::parse_call_request(&serde_json::to_vec(request).unwrap())
            .unwrap_or_else(|e| panic!("the API refuses {request}: {e}"));
    }
    for request in &bad {
        assert!(!contracts.call_request.is_valid(request), "schema accepts {request}");
    }
    // The API refuses the structurally wrong ones at parse time; the phone/lead choice is
    // checked right after (place_call), which tests/click_to_call.rs covers.
    for request in [&bad[0], &bad[3], &bad[4]] {
        assert!(obzvon::calls::place::parse_call_request(&serde_json::to_vec(request).unwrap()).is_err());
    }
}
