//! The JSON Schemas of `contracts/`, compiled once, to validate what obzvon really emits.

use std::collections::HashMap;

use serde_json::Value;

pub struct Contracts {
    events: HashMap<String, jsonschema::Validator>,
    pub call_request: jsonschema::Validator,
}

fn compile(path: &std::path::Path) -> jsonschema::Validator {
    let schema: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap())
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    jsonschema::options()
        .should_validate_formats(true)
        .build(&schema)
        .unwrap_or_else(|e| panic!("{} is not a valid schema: {e}", path.display()))
}

impl Contracts {
    pub fn load() -> Contracts {
        let dir = super::repo_path("contracts/events");
        let mut events = HashMap::new();
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            let name = path.file_stem().unwrap().to_string_lossy().into_owned();
            events.insert(name, compile(&path));
        }
        Contracts {
            events,
            call_request: compile(&super::repo_path("contracts/requests/CallRequest.json")),
        }
    }

    pub fn event_types(&self) -> Vec<String> {
        let mut names: Vec<String> = self.events.keys().cloned().collect();
        names.sort();
        names
    }

    /// Panics with every violation when `event` does not match the schema of its type.
    pub fn check_event(&self, event: &Value) {
        let kind = event["type"]
            .as_str()
            .unwrap_or_else(|| panic!("event without a type: {event}"));
        let validator = self
            .events
            .get(kind)
            .unwrap_or_else(|| panic!("no schema in contracts/events for {kind}"));
        let errors: Vec<String> = validator
            .iter_errors(event)
            .map(|e| format!("{} at {}", e, e.instance_path()))
            .collect();
        assert!(errors.is_empty(), "{kind} breaks its contract: {errors:?}\n{event:#}");
    }
}
