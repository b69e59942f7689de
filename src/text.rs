//! Checks every text input goes through (campaign settings, operators, leads, CSV cells, DNC
//! entries, webhooks, notes): no control characters where they make no sense, a bound per field,
//! and decoding errors in words a supervisor reads instead of Rust type names.

use serde::de::DeserializeOwned;

use crate::campaigns::FieldError;

/// What is wrong with a one-line text field, if anything: control characters (a NUL byte, a
/// newline, an escape) have no place in names, endpoints or numbers, and every field is bounded.
pub fn line_problem(value: &str, max_chars: usize) -> Option<String> {
    if let Some(c) = value.chars().find(|c| c.is_control()) {
        return Some(match c {
            '\n' | '\r' => {
                "contains a line break; use text on one line (in a CSV file, is a closing quote missing?)".to_owned()
            }
            c => format!(
                "contains a control character (U+{:04X}); use printable text on one line",
                u32::from(c)
            ),
        });
    }
    too_long(value, max_chars)
}

/// The problems of several one-line fields at once: `(field, value if given, max chars)`.
pub fn line_problems(fields: &[(&str, Option<&str>, usize)]) -> Vec<FieldError> {
    fields
        .iter()
        .filter_map(|&(field, value, max)| line_problem(value?, max).map(|m| FieldError::new(field, m)))
        .collect()
}

/// The same for free text that may run over several lines (notes, a lead's own fields): line
/// breaks and tabs are fine, other control characters are not.
pub fn note_problem(value: &str, max_chars: usize) -> Option<String> {
    if let Some(c) = value
        .chars()
        .find(|c| c.is_control() && !matches!(c, '\n' | '\r' | '\t'))
    {
        return Some(format!(
            "contains a control character (U+{:04X}); use printable text",
            u32::from(c)
        ));
    }
    too_long(value, max_chars)
}

fn too_long(value: &str, max_chars: usize) -> Option<String> {
    // Bytes bound characters from above: most values never need the count.
    if value.len() <= max_chars {
        return None;
    }
    let n = value.chars().count();
    (n > max_chars).then(|| format!("too long: {n} characters, at most {max_chars}"))
}

/// What is wrong with free JSON a client attaches (a lead's fields, a call's CRM data): its
/// strings and keys are free text (PostgreSQL's jsonb cannot hold a NUL at all) and the whole is
/// bounded in bytes.
pub fn json_problem(value: &serde_json::Value, max_bytes: usize) -> Option<String> {
    fn walk(value: &serde_json::Value, path: &str) -> Option<String> {
        let text = |s: &str, at: &str| note_problem(s, usize::MAX).map(|m| format!("{at}: {m}"));
        match value {
            serde_json::Value::String(s) => text(s, path),
            serde_json::Value::Array(items) => items
                .iter()
                .enumerate()
                .find_map(|(i, v)| walk(v, &format!("{path}[{i}]"))),
            serde_json::Value::Object(map) => map.iter().find_map(|(k, v)| {
                let at = if path.is_empty() {
                    k.clone()
                } else {
                    format!("{path}.{k}")
                };
                text(k, &at).or_else(|| walk(v, &at))
            }),
            _ => None,
        }
    }
    let size = serde_json::to_vec(value).map_or(usize::MAX, |v| v.len());
    if size > max_bytes {
        return Some(format!("too large: {size} bytes of JSON, at most {max_bytes}"));
    }
    walk(value, "").map(|m| m.trim_start_matches(": ").to_owned())
}

/// Decodes a JSON document into `T`, naming the field serde stumbled on and saying what was
/// expected in plain words.
pub fn decode<T: DeserializeOwned>(value: serde_json::Value) -> Result<T, FieldError> {
    serde_path_to_error::deserialize(whole_numbers(value)).map_err(|e| {
        use serde_path_to_error::Segment;
        let mut field = String::new();
        for segment in e.path().iter() {
            match segment {
                Segment::Seq { index } => field.push_str(&format!("[{index}]")),
                Segment::Map { key } | Segment::Enum { variant: key } => {
                    if !field.is_empty() {
                        field.push('.');
                    }
                    field.push_str(if key.is_empty() { "(empty key)" } else { key });
                }
                Segment::Unknown => {}
            }
        }
        if field.is_empty() {
            field = "body".to_owned();
        }
        // Keys and values the client sent end up in the message (`unknown field ...`); a control
        // character there would break the log, the audit row (jsonb holds no NUL) and readers.
        FieldError::new(printable(&field), printable(&plain_words(&e.into_inner().to_string())))
    })
}

/// Text with each control character written out as `\u{..}`, for messages that quote input.
pub fn printable(text: &str) -> String {
    if !text.chars().any(char::is_control) {
        return text.to_owned();
    }
    text.chars()
        .map(|c| {
            if c.is_control() {
                format!("\\u{{{:x}}}", u32::from(c))
            } else {
                c.to_string()
            }
        })
        .collect()
}

/// JSON has one number type: `148.0` is the whole number 148 (JSON Schema's `integer` agrees),
/// so whole floats become integers before a field that wants a whole number reads them.
fn whole_numbers(value: serde_json::Value) -> serde_json::Value {
    use serde_json::Value;
    match value {
        Value::Number(n) if n.is_f64() => match n.as_f64() {
            Some(f) if f.fract() == 0.0 && f.abs() < 9_007_199_254_740_992.0 => Value::from(f as i64),
            _ => Value::Number(n),
        },
        Value::Array(items) => Value::Array(items.into_iter().map(whole_numbers).collect()),
        Value::Object(map) => Value::Object(map.into_iter().map(|(k, v)| (k, whole_numbers(v))).collect()),
        other => other,
    }
}

/// A JSON decoding message in words a supervisor reads, without the Rust type names serde puts
/// in it (`u32`, `f64`, `struct CampaignSpec`).
pub fn plain_words(message: &str) -> String {
    const WORDS: [(&str, &str); 18] = [
        ("expected u8", "expected a whole number from 0 to 255"),
        ("expected u16", "expected a whole number from 0 to 65535"),
        ("expected u32", "expected a whole number from 0 to 4294967295"),
        ("expected u64", "expected a whole number, 0 or more"),
        ("expected i16", "expected a whole number"),
        ("expected i32", "expected a whole number"),
        ("expected i64", "expected a whole number"),
        ("expected f32", "expected a number"),
        ("expected f64", "expected a number"),
        ("expected usize", "expected a whole number, 0 or more"),
        ("expected a boolean", "expected true or false"),
        ("expected a sequence", "expected a list"),
        ("expected a map", "expected an object"),
        ("expected a string", "expected text in quotes"),
        ("expected a borrowed string", "expected text in quotes"),
        (
            "expected a UUID",
            "expected an id such as 0193f6c2-2f1e-7c3a-9c1d-5b2f0e8a4d21",
        ),
        ("integer `", "the number `"),
        ("floating point `", "the number `"),
    ];
    let mut out = message.to_owned();
    for (from, to) in WORDS {
        out = out.replace(from, to);
    }
    // "expected struct CampaignSpec", "expected enum Mode" and the like.
    for kind in ["struct ", "enum ", "tuple struct "] {
        while let Some(at) = out.find(kind) {
            let name_at = at + kind.len();
            let end = out[name_at..]
                .find(|c: char| !c.is_alphanumeric() && c != '_')
                .map_or(out.len(), |e| name_at + e);
            let word = if kind == "enum " {
                "one of the listed values"
            } else {
                "an object"
            };
            out.replace_range(at..end, word);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn input_quoted_in_a_decoding_error_carries_no_control_characters() {
        #[derive(serde::Deserialize, Debug)]
        #[serde(deny_unknown_fields)]
        #[allow(dead_code)]
        struct T {
            n: u32,
        }
        let e = super::decode::<T>(serde_json::json!({"n": 1, "a\u{0}b\n": 2})).unwrap_err();
        assert!(!e.message.chars().any(char::is_control), "{e:?}");
        assert!(!e.field.chars().any(char::is_control), "{e:?}");
        assert!(e.message.contains("a\\u{0}b\\u{a}"), "{e:?}");
    }

    #[test]
    fn whole_floats_read_as_whole_numbers_and_fractions_stay_refused() {
        #[derive(serde::Deserialize, Debug)]
        struct T {
            n: u32,
            #[allow(dead_code)]
            f: f64,
        }
        let t: T = super::decode(serde_json::json!({"n": 148.0, "f": 2.0})).unwrap();
        assert_eq!(t.n, 148);
        let e = super::decode::<T>(serde_json::json!({"n": 148.5, "f": 2})).unwrap_err();
        assert_eq!(e.field, "n");
        assert!(e.message.contains("whole number"), "{e:?}");
    }

    use super::*;

    #[test]
    fn one_line_text_refuses_control_characters_and_overlong_values() {
        assert_eq!(line_problem("Осень 2026", 10), None);
        assert!(line_problem("a\0b", 10).unwrap().contains("U+0000"));
        assert!(line_problem("a\nb", 10).unwrap().contains("line break"));
        assert!(line_problem("a\u{1b}[31m", 10).unwrap().contains("U+001B"));
        // Characters, not bytes: ten Cyrillic letters are twenty bytes.
        assert_eq!(line_problem(&"я".repeat(10), 10), None);
        assert_eq!(
            line_problem(&"я".repeat(11), 10).unwrap(),
            "too long: 11 characters, at most 10"
        );
    }

    #[test]
    fn notes_may_run_over_lines_but_not_hold_other_control_characters() {
        assert_eq!(note_problem("line one\r\nline\ttwo", 100), None);
        assert!(note_problem("bell\u{7}", 100).unwrap().contains("U+0007"));
    }

    #[test]
    fn free_json_holds_no_nul_and_is_bounded() {
        let ok = serde_json::json!({"deal": {"notes": "two\nlines", "sum": 5}});
        assert_eq!(json_problem(&ok, 1000), None);
        let nul = serde_json::json!({"deal": {"notes": ["fine", "a\u{0}b"]}});
        assert!(json_problem(&nul, 1000).unwrap().starts_with("deal.notes[1]: "));
        let key = serde_json::json!({"a\u{0}": 1});
        assert!(json_problem(&key, 1000).unwrap().contains("U+0000"));
        let big = serde_json::json!({"x": "y".repeat(2000)});
        assert!(json_problem(&big, 1000).unwrap().starts_with("too large"));
    }

    #[test]
    fn decoding_errors_name_no_rust_types() {
        #[derive(Debug, serde::Deserialize)]
        #[expect(dead_code, reason = "only decoded")]
        struct Input {
            count: u32,
            nested: Vec<Inner>,
        }
        #[derive(Debug, serde::Deserialize)]
        #[expect(dead_code, reason = "only decoded")]
        struct Inner {
            on: bool,
        }
        for (value, field) in [
            (serde_json::json!({"count": "three", "nested": []}), "count"),
            (serde_json::json!({"count": -1, "nested": []}), "count"),
            (serde_json::json!({"count": 1, "nested": {}}), "nested"),
            (serde_json::json!({"count": 1, "nested": [{"on": 1}]}), "nested[0].on"),
            (serde_json::json!([1]), "body"),
        ] {
            let e = decode::<Input>(value.clone()).unwrap_err();
            assert_eq!(e.field, field, "{value}");
            for rust in ["u32", "struct", "Input", "Inner", "sequence", "a map"] {
                assert!(!e.message.contains(rust), "{value}: {}", e.message);
            }
        }
    }
}
