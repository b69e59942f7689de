//! Fuzzing the four parsers that take text from outside: CSV lead files
//! (`leads::import::parse_csv`), phone numbers (`PhoneNumber::parse`, `Region::parse`),
//! campaign settings (`CampaignSpec::from_json`, then `validate`) and ARI websocket frames
//! (`Event::parse`). Each gets arbitrary input and input built to be hostile (broken quoting,
//! bytes that are not UTF-8, huge and negative numbers, control characters, deep nesting) and
//! must answer every one without panicking while keeping its contract. Needs no services.
//!
//! The ordinary suite runs 2,000 cases per target. The long form, 4 targets × 250,000 =
//! 1,000,000 inputs:
//!
//! ```text
//! OBZVON_FUZZ_CASES=250000 cargo test --release --test fuzz
//! ```
//!
//! Failures are not saved to disk: proptest prints the shrunk input that breaks a contract.

use std::collections::BTreeMap;
use std::fmt;
use std::io::Cursor;
use std::time::{Duration, Instant};

use obzvon::ari::events::Event;
use obzvon::calls::AttemptResult;
use obzvon::campaigns::CampaignSpec;
use obzvon::leads::import::{parse_csv, LeadInput};
use obzvon::phone::{PhoneNumber, Region};
use proptest::collection::vec;
use proptest::prelude::*;
use proptest::sample::{select, Index};
use proptest::strategy::Union;
use proptest::test_runner::TestCaseError;
use serde_json::{json, Value};

proptest! {
    #![proptest_config(config())]

    #[test]
    fn csv_lead_files_keep_the_row_contract(
        input in csv_input(),
        stop_after in prop::option::weighted(0.1, 0usize..4),
    ) {
        check_csv(&input, stop_after)?;
    }

    #[test]
    fn phone_numbers_normalise_to_e164_or_are_refused(raw in phone_text(), region in region_text()) {
        check_phone(&raw, &region)?;
    }

    #[test]
    fn campaign_setting_errors_name_a_field_in_plain_words(doc in campaign_document()) {
        check_spec(doc)?;
    }

    #[test]
    fn ari_frames_parse_or_are_refused(frame in ari_frame()) {
        check_event(&frame)?;
    }
}

/// Cases per target: 2,000, or `OBZVON_FUZZ_CASES` for the long form.
fn config() -> ProptestConfig {
    let cases = match std::env::var("OBZVON_FUZZ_CASES") {
        Ok(v) => v
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("OBZVON_FUZZ_CASES={v:?} is not a number of cases")),
        Err(_) => 2_000,
    };
    ProptestConfig {
        cases,
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

/// Longest one parse may take. proptest runs here without its `timeout` feature (no forking),
/// so a parser that is pathologically slow on some input is caught by the clock once it returns.
const CASE_BUDGET: Duration = Duration::from_secs(5);

fn timed<T>(what: &str, f: impl FnOnce() -> T) -> Result<T, TestCaseError> {
    let start = Instant::now();
    let out = f();
    let took = start.elapsed();
    prop_assert!(took < CASE_BUDGET, "{what} took {took:?}");
    Ok(out)
}

// ---------------------------------------------------------------------------------------------
// 1. CSV lead files
// ---------------------------------------------------------------------------------------------

#[derive(Clone)]
enum CsvInput {
    /// Whatever bytes: only the general row contract holds.
    Raw(Vec<u8>),
    /// Cells of quotes, line breaks, delimiters, NUL, BOMs and invalid UTF-8, joined badly.
    Hostile(Vec<u8>),
    /// A file without quotes or line breaks in cells, and the leads it must yield, in order.
    WellFormed { file: Vec<u8>, leads: Vec<Lead> },
    /// Hostile rows, then clean ones well past the CSV reader's 8 KiB buffer: however broken the
    /// head, each clean row after it must come out whole, starting on `tail_line` and on.
    HostileHead {
        file: Vec<u8>,
        tail: Vec<Lead>,
        tail_line: u64,
    },
}

impl CsvInput {
    fn file(&self) -> &[u8] {
        match self {
            CsvInput::Raw(file)
            | CsvInput::Hostile(file)
            | CsvInput::WellFormed { file, .. }
            | CsvInput::HostileHead { file, .. } => file,
        }
    }
}

impl fmt::Debug for CsvInput {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = match self {
            CsvInput::Raw(_) => "Raw",
            CsvInput::Hostile(_) => "Hostile",
            CsvInput::WellFormed { .. } => "WellFormed",
            CsvInput::HostileHead { .. } => "HostileHead",
        };
        write!(f, "{kind}(b\"{}\")", self.file().escape_ascii())?;
        match self {
            CsvInput::WellFormed { leads, .. } => write!(f, " expecting {leads:#?}")?,
            CsvInput::HostileHead { tail, tail_line, .. } => {
                write!(f, " expecting {} clean rows from line {tail_line}", tail.len())?
            }
            _ => {}
        }
        Ok(())
    }
}

/// What a data row holds, in a form that compares.
#[derive(Debug, Clone, Default, PartialEq)]
struct Lead {
    phone: String,
    name: Option<String>,
    timezone: Option<String>,
    external_id: Option<String>,
    priority: Option<i32>,
    fields: BTreeMap<String, String>,
}

impl From<&LeadInput> for Lead {
    fn from(input: &LeadInput) -> Lead {
        Lead {
            phone: input.phone.clone(),
            name: input.name.clone(),
            timezone: input.timezone.clone(),
            external_id: input.external_id.clone(),
            priority: input.priority,
            fields: input
                .fields
                .iter()
                .map(|(k, v)| (k.clone(), v.as_str().map_or_else(|| v.to_string(), str::to_owned)))
                .collect(),
        }
    }
}

/// Rows are numbered 1, 2, 3 … and start on non-decreasing lines after the header, never past
/// the file's last line; `emit` answering false ends the reading; a well-formed file yields each
/// of its rows once, on its own line, with the values written in it; a bad row costs only
/// itself, so the clean rows after a hostile head all come out as written.
fn check_csv(input: &CsvInput, stop_after: Option<usize>) -> Result<(), TestCaseError> {
    let file = input.file();
    let lines = 1 + file.iter().filter(|&&b| b == b'\n').count() as u64;
    let limit = stop_after.map_or(usize::MAX, |n| n.max(1));
    let mut rows = Vec::new();
    let mut stopped = false;
    let mut calls_after_stop = 0;
    let result = timed("parse_csv", || {
        parse_csv(Cursor::new(file.to_vec()), |row| {
            if stopped {
                calls_after_stop += 1;
                return false;
            }
            rows.push(row);
            // More rows than lines would be a reader going round in circles: stop it.
            stopped = rows.len() >= limit || rows.len() as u64 > lines;
            !stopped
        })
    })?;
    prop_assert_eq!(calls_after_stop, 0, "emit was called again after it answered false");
    prop_assert!(rows.len() as u64 <= lines, "{} rows from {lines} lines", rows.len());
    let mut last_line = 2;
    for (i, row) in rows.iter().enumerate() {
        prop_assert_eq!(row.row, i + 1, "rows are numbered from 1 without gaps");
        prop_assert!(
            row.line >= last_line && row.line <= lines,
            "row {} on line {} (previous {last_line}, file has {lines})",
            row.row,
            row.line
        );
        last_line = row.line;
    }
    if let CsvInput::WellFormed { leads, .. } = input {
        prop_assert!(result.is_ok(), "{result:?}");
        let expected = &leads[..leads.len().min(limit)];
        prop_assert_eq!(rows.len(), expected.len(), "every data row once");
        for (row, want) in rows.iter().zip(expected) {
            prop_assert_eq!(row.line, row.row as u64 + 1, "row {} on its own line", row.row);
            let got = row.lead.as_ref().map(Lead::from).map_err(Clone::clone);
            prop_assert_eq!(got, Ok(want.clone()), "row {}", row.row);
        }
    }
    // Refusing the whole file (too many quotes never closed) is allowed; reading on wrongly is not.
    if let (CsvInput::HostileHead { tail, tail_line, .. }, None, Ok(())) = (input, stop_after, &result) {
        prop_assert!(
            rows.len() >= tail.len(),
            "{} rows for {} clean ones",
            rows.len(),
            tail.len()
        );
        for (i, (row, want)) in rows[rows.len() - tail.len()..].iter().zip(tail).enumerate() {
            prop_assert_eq!(row.line, tail_line + i as u64, "clean row {} of the tail", i + 1);
            let got = row.lead.as_ref().map(Lead::from).map_err(Clone::clone);
            prop_assert_eq!(
                got,
                Ok(want.clone()),
                "clean row {} of the tail, on line {}",
                i + 1,
                row.line
            );
        }
    }
    Ok(())
}

fn csv_input() -> impl Strategy<Value = CsvInput> {
    prop_oneof![
        1 => vec(any::<u8>(), 0..600).prop_map(CsvInput::Raw),
        1 => vec(any::<u8>(), 0..600)
            .prop_map(|tail| CsvInput::Raw([b"phone,name\n".as_slice(), tail.as_slice()].concat())),
        3 => hostile_csv().prop_map(CsvInput::Hostile),
        1 => open_quotes_csv().prop_map(CsvInput::Hostile),
        3 => well_formed_csv(),
        2 => hostile_head_csv(),
    ]
}

/// What hostile cells are made of: quoting, line breaks, delimiters, NUL, a UTF-8 byte-order
/// mark, bytes that are not UTF-8 (0xFF, a cut-off sequence), Cyrillic, and plain text.
const NASTY_BYTES: &[&[u8]] = &[
    b"\"",
    b"\"\"",
    b"\r",
    b"\n",
    b"\r\n",
    b",",
    b";",
    b"\t",
    b"\0",
    b"\xEF\xBB\xBF",
    b"\xFF",
    b"\xC3",
    b"\xE2\x82",
    b" ",
    b"phone",
    b"+79161234567",
    "Иван".as_bytes(),
    b"a",
    b"7",
    b"\\",
    b"#",
    b"'",
];

const TERMINATORS: &[&[u8]] = &[b"\n", b"\r\n", b"\n", b"\r\n", b"\r", b"", b"\n\n", b"\r\r\n"];

const COLUMN_NAMES: &[&str] = &[
    "phone",
    "name",
    "timezone",
    "external_id",
    "priority",
    "address",
    "PHONE",
    " Phone ",
    "",
    "note",
];

fn nasty_cell() -> impl Strategy<Value = Vec<u8>> {
    let piece = prop_oneof![
        8 => select(NASTY_BYTES).prop_map(<[u8]>::to_vec),
        1 => (select(NASTY_BYTES), 1..400usize).prop_map(|(p, n)| p.repeat(n)),
        1 => any::<u8>().prop_map(|b| vec![b]),
    ];
    (vec(piece, 0..5), 0..6u8).prop_map(|(pieces, quoting)| {
        let body = pieces.concat();
        match quoting {
            // Quoted properly: inner quotes doubled.
            3 => {
                let mut out = vec![b'"'];
                for &b in &body {
                    out.push(b);
                    if b == b'"' {
                        out.push(b'"');
                    }
                }
                out.push(b'"');
                out
            }
            // Opened and never closed, or closed and never opened.
            4 => [b"\"".as_slice(), body.as_slice()].concat(),
            5 => [body.as_slice(), b"\""].concat(),
            _ => body,
        }
    })
}

fn hostile_csv() -> impl Strategy<Value = Vec<u8>> {
    let header_cell = prop_oneof![
        3 => select(COLUMN_NAMES).prop_map(|c| c.as_bytes().to_vec()),
        1 => nasty_cell(),
    ];
    let delimiters = &[b',', b';', b'\t'][..];
    let row = (
        vec(nasty_cell(), 0..7),
        select(TERMINATORS),
        prop::option::weighted(0.2, select(&[b',', b';', b'\t', b'|'][..])),
    );
    (
        any::<bool>(),
        select(delimiters),
        vec(header_cell, 0..6),
        prop::option::weighted(0.9, any::<Index>()),
        select(TERMINATORS),
        vec(row, 0..12),
    )
        .prop_map(|(bom, delimiter, mut header, phone_at, header_end, rows)| {
            if let Some(at) = phone_at {
                header.insert(at.index(header.len() + 1), b"phone".to_vec());
            }
            let mut file = Vec::new();
            if bom {
                file.extend_from_slice(b"\xEF\xBB\xBF");
            }
            file.extend(header.join(&delimiter));
            file.extend_from_slice(header_end);
            for (cells, end, other) in rows {
                file.extend(cells.join(&other.unwrap_or(delimiter)));
                file.extend_from_slice(end);
            }
            file
        })
}

/// Many quotes that are never closed, one a line: each costs the reader a scan to the end of
/// the file, until it gives up on the file.
fn open_quotes_csv() -> impl Strategy<Value = Vec<u8>> {
    const LINES: &[&[u8]] = &[
        b"\"x\n",
        b"+7916,\"Bob\n",
        b"\"\n",
        b"x,\"\"\"\n",
        b"+7,ok\n",
        b"\"a\"b\"\n",
    ];
    let line = select(LINES);
    vec(line, 0..300).prop_map(|lines| [b"phone,name\n".as_slice(), lines.concat().as_slice()].concat())
}

/// A few hostile rows after a plain header, then up to 600 clean rows (about 13 KiB).
fn hostile_head_csv() -> impl Strategy<Value = CsvInput> {
    let head_row = (vec(nasty_cell(), 0..4), select(TERMINATORS));
    (vec(head_row, 0..8), 0..600usize).prop_map(|(head, tail_len)| {
        let mut file = b"phone,name\n".to_vec();
        for (cells, end) in head {
            file.extend(cells.join(&b','));
            file.extend_from_slice(end);
        }
        if !file.ends_with(b"\n") {
            file.push(b'\n');
        }
        let tail_line = 1 + file.iter().filter(|&&b| b == b'\n').count() as u64;
        let tail: Vec<Lead> = (0..tail_len)
            .map(|i| Lead {
                phone: format!("+7916{i:07}"),
                name: Some(format!("Name {i}")),
                ..Lead::default()
            })
            .collect();
        for lead in &tail {
            file.extend(format!("{},{}\n", lead.phone, lead.name.as_deref().unwrap_or_default()).into_bytes());
        }
        CsvInput::HostileHead { file, tail, tail_line }
    })
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Role {
    Phone,
    Name,
    Timezone,
    ExternalId,
    Priority,
    Other,
}

#[derive(Debug, Clone)]
struct Column {
    /// As the header writes it (any case, padded).
    written: String,
    role: Role,
}

impl Column {
    /// The key the parser files an extra column's value under.
    fn key(&self) -> String {
        self.written.trim().to_ascii_lowercase()
    }
}

/// A header of distinct columns (`phone` always among them, in any case and padding), rows of
/// cells without quotes or line breaks, some rows short (the columns after the phone left
/// out), LF or CR LF per line, a byte-order mark or not.
fn well_formed_csv() -> impl Strategy<Value = CsvInput> {
    let names = (
        prop::sample::subsequence(vec!["name", "timezone", "external_id", "priority"], 0..=4),
        prop::sample::subsequence(vec!["address", "note", "deal id", "Комментарий", "x"], 0..=3),
    )
        .prop_flat_map(|(known, other)| {
            let mut names = vec!["phone"];
            names.extend(known);
            names.extend(other);
            Just(names).prop_shuffle()
        });
    (
        names,
        vec(0..4u8, 8),
        select(&[b',', b';', b'\t'][..]),
        any::<bool>(),
        any::<bool>(),
        any::<bool>(),
    )
        .prop_flat_map(|(names, styles, delimiter, bom, crlf_header, final_break)| {
            let columns: Vec<Column> = names
                .iter()
                .zip(styles.iter().cycle())
                .map(|(name, style)| column(name, *style))
                .collect();
            // A one-column header has no delimiter to sniff: then no cell may hold one either.
            let alphabet = cell_alphabet(delimiter, columns.len() == 1);
            let rows = vec(data_row(&columns, &alphabet), 0..16);
            (
                Just(columns),
                Just(delimiter),
                Just((bom, crlf_header, final_break)),
                rows,
            )
        })
        .prop_map(|(columns, delimiter, (bom, crlf_header, final_break), rows)| {
            well_formed_file(&columns, delimiter, bom, crlf_header, final_break, &rows)
        })
}

fn column(name: &str, style: u8) -> Column {
    let role = match name {
        "phone" => Role::Phone,
        "name" => Role::Name,
        "timezone" => Role::Timezone,
        "external_id" => Role::ExternalId,
        "priority" => Role::Priority,
        _ => Role::Other,
    };
    let written = match style {
        1 => name.to_ascii_uppercase(),
        2 => format!(" {name}  "),
        3 => {
            let mut chars = name.chars();
            chars
                .next()
                .map(|c| c.to_ascii_uppercase().to_string() + chars.as_str())
                .unwrap_or_default()
        }
        _ => name.to_owned(),
    };
    Column { written, role }
}

/// Characters a well-formed cell may hold: no quote, no CR or LF, not the file's delimiter
/// (the other two are text), and as whitespace only space and tab, which both the CSV reader
/// and `str::trim` trim.
fn cell_alphabet(delimiter: u8, single_column: bool) -> Vec<char> {
    let mut chars: Vec<char> = "0123456789+()-.@/:_#*!?abcxyzABCXYZ ёйЖЯ\u{0}\u{1}\u{1b}\u{7f}\u{feff}é😀'\\|"
        .chars()
        .collect();
    for d in [',', ';', '\t'] {
        if !single_column && d != delimiter as char {
            chars.push(d);
        }
    }
    chars
}

/// A row's cells (one per column), how many of them the row writes, and whether it ends CR LF.
type DataRow = (Vec<String>, Index, bool);

fn data_row(columns: &[Column], alphabet: &[char]) -> impl Strategy<Value = DataRow> {
    let pad = vec(
        select(
            alphabet
                .iter()
                .copied()
                .filter(|c| c.is_ascii_whitespace())
                .collect::<Vec<_>>(),
        ),
        0..3,
    )
    .prop_map(String::from_iter);
    let text = prop_oneof![
        9 => vec(select(alphabet.to_vec()), 0..12).prop_map(String::from_iter),
        1 => (select(alphabet.to_vec()), 1..300usize).prop_map(|(c, n)| c.to_string().repeat(n)),
    ];
    let solid = select(
        alphabet
            .iter()
            .copied()
            .filter(|c| !c.is_whitespace())
            .collect::<Vec<_>>(),
    );
    let cells: Vec<BoxedStrategy<String>> = columns
        .iter()
        .map(|column| match column.role {
            // Never blank, so no data line is empty (the reader skips empty lines).
            Role::Phone => (pad.clone(), solid.clone(), text.clone(), pad.clone())
                .prop_map(|(a, c, t, b)| format!("{a}{c}{t}{b}"))
                .boxed(),
            Role::Priority => prop_oneof![
                Just(String::new()),
                (pad.clone(), any::<i32>(), pad.clone()).prop_map(|(a, p, b)| format!("{a}{p}{b}")),
            ]
            .boxed(),
            _ => (pad.clone(), text.clone(), pad.clone())
                .prop_map(|(a, t, b)| format!("{a}{t}{b}"))
                .boxed(),
        })
        .collect();
    (cells, any::<Index>(), any::<bool>())
}

fn well_formed_file(
    columns: &[Column],
    delimiter: u8,
    bom: bool,
    crlf_header: bool,
    final_break: bool,
    rows: &[DataRow],
) -> CsvInput {
    let delimiter = (delimiter as char).to_string();
    let line_break = |crlf: bool| if crlf { "\r\n" } else { "\n" };
    let phone_at = columns
        .iter()
        .position(|c| c.role == Role::Phone)
        .expect("the header has a phone column");
    let mut file = String::new();
    if bom {
        file.push('\u{feff}');
    }
    let header: Vec<&str> = columns.iter().map(|c| c.written.as_str()).collect();
    file += &header.join(&delimiter);
    file += line_break(crlf_header);
    let mut leads = Vec::new();
    for (i, (cells, len, crlf)) in rows.iter().enumerate() {
        let written = &cells[..phone_at + 1 + len.index(cells.len() - phone_at)];
        file += &written.join(&delimiter);
        if i + 1 < rows.len() || final_break {
            file += line_break(*crlf);
        }
        leads.push(expected_lead(columns, written));
    }
    CsvInput::WellFormed {
        file: file.into_bytes(),
        leads,
    }
}

/// The lead a row of well-formed cells describes, as `leads::import` documents it: values
/// trimmed, a written but empty name or zone kept as empty, extra columns only when not empty.
fn expected_lead(columns: &[Column], cells: &[String]) -> Lead {
    let mut lead = Lead::default();
    for (column, cell) in columns.iter().zip(cells) {
        let value = cell.trim().to_owned();
        match column.role {
            Role::Phone => lead.phone = value,
            Role::Name => lead.name = Some(value),
            Role::Timezone => lead.timezone = Some(value),
            Role::ExternalId => lead.external_id = Some(value),
            Role::Priority => lead.priority = (!value.is_empty()).then(|| value.parse().expect("written from an i32")),
            Role::Other if !value.is_empty() => {
                lead.fields.insert(column.key(), value);
            }
            Role::Other => {}
        }
    }
    lead
}

// ---------------------------------------------------------------------------------------------
// 2. Phone numbers
// ---------------------------------------------------------------------------------------------

/// A number is refused or comes out as `+` and 7 to 15 digits, and that E.164 text parses
/// back to itself, with or without the region.
fn check_phone(raw: &str, region: &str) -> Result<(), TestCaseError> {
    let region = timed("Region::parse", || Region::parse(region))?.ok();
    let parsed = timed("PhoneNumber::parse", || PhoneNumber::parse(raw, region))?;
    let Ok(number) = parsed else {
        return Ok(());
    };
    let e164 = number.as_str();
    prop_assert!(
        e164.starts_with('+') && e164[1..].bytes().all(|b| b.is_ascii_digit()),
        "{raw:?} gave {e164:?}"
    );
    prop_assert!((8..=16).contains(&e164.len()), "{raw:?} gave {e164:?}");
    prop_assert_eq!(
        PhoneNumber::parse(e164, None),
        Ok(number.clone()),
        "{:?} parsed again without a region",
        e164
    );
    prop_assert_eq!(
        PhoneNumber::parse(e164, region),
        Ok(number.clone()),
        "{:?} parsed again with the region",
        e164
    );
    let _ = number.masked();
    Ok(())
}

fn phone_text() -> impl Strategy<Value = String> {
    prop_oneof![
        2 => any::<String>(),
        1 => nasty_text(),
        4 => phone_like(),
        1 => (phone_like(), select(&['０', '٠', '۰', '०', '০', '𝟎'][..])).prop_map(|(s, zero)| foreign_digits(&s, zero)),
        1 => (select(&["", "+", "00", "+7", "8", "+0"][..]), 0..400usize)
            .prop_map(|(p, n)| format!("{p}{}", "9".repeat(n))),
    ]
}

/// A prefix (country codes real and not, trunk prefixes, `tel:`), digit groups with the
/// separators people write, and a tail (extensions, stray text, control characters).
fn phone_like() -> impl Strategy<Value = String> {
    let prefixes = &[
        "", "+", "+7", "8", "00", "+00", "011", "+1", "tel:", "tel:+", "+44 (0)", "+383", "+800", "+979", "+882",
        "+888", "+290", "+683", "+7 (916)", "++7", "+-7", "7",
    ][..];
    let separators = &[
        "", "", " ", "-", ".", "(", ")", "/", " ext. ", "x", ";ext=", "#", "*", "\u{a0}", "\u{2011}", "\t",
    ][..];
    let tails = &[
        "", " ", "\u{0}", "\n", " ext 12", "abc", "\u{feff}", ";isub=1", "#", "٣",
    ][..];
    (
        select(prefixes),
        vec(("[0-9]{1,5}", select(separators)), 0..6),
        select(tails),
    )
        .prop_map(|(prefix, groups, tail)| {
            let body: String = groups.into_iter().map(|(digits, sep)| digits + sep).collect();
            format!("{prefix}{body}{tail}")
        })
}

/// The same text with its ASCII digits written in another script whose zero is `zero`.
fn foreign_digits(text: &str, zero: char) -> String {
    text.chars()
        .map(|c| match c.to_digit(10) {
            Some(d) if c.is_ascii_digit() => char::from_u32(zero as u32 + d).unwrap_or(c),
            _ => c,
        })
        .collect()
}

fn region_text() -> impl Strategy<Value = String> {
    let regions = &[
        "RU", "ru", " de ", "US", "GB", "KZ", "BY", "UA", "DE", "FR", "CN", "IN", "BR", "NU", "SH", "AQ", "XX", "001",
        "ZZ", "", "UK", "EU", "Ru", "r u", "RUS",
    ][..];
    prop_oneof![
        4 => select(regions).prop_map(str::to_owned),
        2 => "[A-Za-z]{2}",
        1 => "[A-Za-z0-9 ]{0,4}",
        1 => any::<String>(),
    ]
}

// ---------------------------------------------------------------------------------------------
// 3. Campaign settings
// ---------------------------------------------------------------------------------------------

/// Rust type names serde would leave in a message that `text::plain_words` failed to translate.
const RUST_NAMES: [&str; 6] = ["u32", "u64", "i64", "f64", "struct ", "CampaignSpec"];

/// Every error names a non-empty field and speaks without Rust type names; a spec that is
/// valid survives being stored as JSON and read back.
fn check_spec(doc: Value) -> Result<(), TestCaseError> {
    let text = quoted_back(&doc);
    let (spec, errors) = timed(
        "CampaignSpec::from_json and validate",
        || match CampaignSpec::from_json(doc) {
            Ok(spec) => {
                let errors = spec.validate().err().unwrap_or_default();
                (Some(spec), errors)
            }
            Err(errors) => (None, errors),
        },
    )?;
    for error in &errors {
        prop_assert!(!error.field.is_empty(), "an error without a field: {:?}", error);
        for rust in RUST_NAMES {
            prop_assert!(
                !error.message.contains(rust) || text.contains(rust),
                "{}: {:?} names the Rust type {:?}",
                error.field,
                error.message,
                rust
            );
        }
    }
    if let Some(spec) = spec.filter(|_| errors.is_empty()) {
        let _ = (spec.tz(), spec.region());
        let stored = serde_json::to_value(&spec).map_err(|e| TestCaseError::fail(e.to_string()))?;
        prop_assert_eq!(CampaignSpec::from_json(stored), Ok(spec), "a valid spec read back");
    }
    Ok(())
}

/// The client's own text as an error may quote it back: the document, and each of its strings
/// escaped as `{:?}` writes it. serde quotes unknown keys and bad values, so a Rust name found
/// there is the client's text, not a leak (`"\u{5f640}"` holds the letters f64 and names no type).
fn quoted_back(doc: &Value) -> String {
    fn walk(value: &Value, out: &mut String) {
        match value {
            Value::String(s) => out.push_str(&format!("{s:?}\n")),
            Value::Array(items) => items.iter().for_each(|v| walk(v, out)),
            Value::Object(fields) => fields.iter().for_each(|(k, v)| {
                out.push_str(&format!("{k:?}\n"));
                walk(v, out);
            }),
            _ => {}
        }
    }
    let mut out = doc.to_string();
    out.push('\n');
    walk(doc, &mut out);
    out
}

fn base_campaign() -> Value {
    json!({"name": "x", "trunk": "PJSIP/{number}@trunk", "caller_id": "74950000000"})
}

/// An arbitrary JSON document, or the valid base document with some of the spec's own keys
/// (taken from the serialised defaults, so a new field is fuzzed too) set to hostile or merely
/// wrong values, or removed, and now and then an unknown key added.
fn campaign_document() -> impl Strategy<Value = Value> {
    let defaults = serde_json::to_value(CampaignSpec::default()).expect("the default spec serialises");
    let keyed: Vec<BoxedStrategy<(String, Option<Value>)>> = defaults
        .as_object()
        .expect("the spec is an object")
        .iter()
        .map(|(key, default)| {
            let key = key.clone();
            prop::option::weighted(0.9, spec_value(&key, default))
                .prop_map(move |value| (key.clone(), value))
                .boxed()
        })
        .collect();
    let change = prop_oneof![
        9 => Union::new(keyed),
        1 => (nasty_text(), json_value()).prop_map(|(key, value)| (key, Some(value))),
    ];
    prop_oneof![
        1 => json_value(),
        4 => vec(change, 1..6).prop_map(|changes| {
            let mut doc = base_campaign();
            let fields = doc.as_object_mut().expect("the base is an object");
            for (key, value) in changes {
                match value {
                    Some(value) => fields.insert(key, value),
                    None => fields.remove(&key),
                };
            }
            doc
        }),
    ]
}

/// Values for one of the spec's keys: what its type looks like at its edges, anything at all,
/// or its default.
fn spec_value(key: &str, default: &Value) -> BoxedStrategy<Value> {
    let results: Vec<&'static str> = AttemptResult::ALL.iter().map(|r| r.as_str()).collect();
    let specific = match (key, default) {
        ("retry_delays_secs", _) => object_of(
            prop_oneof![select(results.clone()).prop_map(str::to_owned), nasty_text()],
            edge_number(),
        ),
        ("disposition_keys", _) => object_of(
            prop_oneof![
                select(&["0", "1", "5", "9", "*", "#", "12", "", "１", "a"][..]).prop_map(str::to_owned),
                nasty_text(),
            ],
            prop_oneof![select(results).prop_map(Value::from), json_value()],
        ),
        ("calling_windows", _) => object_of(
            prop_oneof![
                select(&["mon", "tue", "wed", "thu", "fri", "sat", "sun", "Mon", "holiday", ""][..])
                    .prop_map(str::to_owned),
                nasty_text(),
            ],
            prop_oneof![vec(window_span(), 0..4).prop_map(Value::Array), json_value()],
        ),
        ("operators", _) => vec(
            prop_oneof![
                "[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}",
                "[0-9A-F]{32}",
                Just("00000000-0000-0000-0000-000000000000".to_owned()),
                nasty_text(),
            ]
            .prop_map(Value::String),
            0..4,
        )
        .prop_map(Value::Array)
        .boxed(),
        ("skills", _) => vec(nasty_text().prop_map(Value::String), 0..4)
            .prop_map(Value::Array)
            .boxed(),
        (_, Value::Object(fields)) => {
            let keys: Vec<String> = fields.keys().cloned().collect();
            object_of(
                prop_oneof![select(keys), nasty_text()],
                prop_oneof![
                    edge_number(),
                    select(
                        &[
                            "progressive",
                            "preview",
                            "predictive",
                            "day",
                            "24h",
                            "30d",
                            "week",
                            "Predictive",
                            ""
                        ][..]
                    )
                    .prop_map(Value::from),
                    json_value(),
                ],
            )
        }
        (_, Value::Bool(_)) => any::<bool>().prop_map(Value::Bool).boxed(),
        (_, Value::Number(_)) => edge_number(),
        (_, Value::String(_)) => prop_oneof![
            select(PLAUSIBLE_TEXT).prop_map(Value::from),
            nasty_text().prop_map(Value::String),
        ]
        .boxed(),
        _ => json_value(),
    };
    prop_oneof![6 => specific, 2 => json_value(), 1 => Just(default.clone())].boxed()
}

/// Text fields' values a client might send, right or nearly.
const PLAUSIBLE_TEXT: &[&str] = &[
    "x",
    "",
    " ",
    "PJSIP/{number}@trunk",
    "{number}",
    "PJSIP/{num}@trunk",
    "74950000000",
    "+7 495 000-00-00",
    "UTC",
    "Europe/Moscow",
    "europe/moscow",
    "Mars/Olympus",
    "Etc/GMT+14",
    "RU",
    "ru",
    " de ",
    "XX",
    "001",
    "sound:vm-goodbye",
    "sound:",
    "vm-goodbye",
    "longest-idle",
    "round-robin",
    "random",
];

fn window_span() -> impl Strategy<Value = Value> {
    let time = prop_oneof![
        select(
            &[
                "00:00",
                "09:00",
                "18:00",
                "23:59",
                "24:00",
                "24:01",
                "25:00",
                "9:00",
                "09:60",
                "-1:00",
                "12:30:00",
                "",
                "０９:００",
            ][..]
        )
        .prop_map(str::to_owned),
        "[0-9+-]{1,3}:[0-9]{1,3}",
        nasty_text(),
    ];
    prop_oneof![
        4 => (time.clone(), time).prop_map(|(from, to)| json!({"from": from, "to": to})),
        1 => json_value(),
    ]
}

fn object_of(
    key: impl Strategy<Value = String> + 'static,
    value: impl Strategy<Value = Value> + 'static,
) -> BoxedStrategy<Value> {
    vec((key, value), 0..6)
        .prop_map(|fields| Value::Object(fields.into_iter().collect()))
        .boxed()
}

/// Numbers at the edges of what the spec's fields take: 0, ±1, the bounds validation checks,
/// `u32::MAX` and one past it, `u64::MAX`, `i64::MIN`, fractions, huge and tiny floats.
fn edge_number() -> BoxedStrategy<Value> {
    let edges = vec![
        json!(0),
        json!(1),
        json!(-1),
        json!(5),
        json!(9),
        json!(10),
        json!(99),
        json!(100),
        json!(101),
        json!(300),
        json!(3600),
        json!(3601),
        json!(10_000),
        json!(60_000),
        json!(2_592_000),
        json!(2_592_001),
        json!(u32::MAX),
        json!(u64::from(u32::MAX) + 1),
        json!(u64::MAX),
        json!(i64::MIN),
        json!(i64::MAX),
        json!(0.0),
        json!(-0.0),
        json!(0.03),
        json!(0.5),
        json!(1.0),
        json!(1.5),
        json!(5.0),
        json!(5.000001),
        json!(1000.0),
        json!(4_294_967_295.0),
        json!(1e300),
        json!(-1e300),
        json!(1e-300),
        json!(f64::MIN_POSITIVE),
    ];
    prop_oneof![
        3 => select(edges),
        1 => any::<i64>().prop_map(Value::from),
        1 => any::<u64>().prop_map(Value::from),
        1 => any::<f64>().prop_filter_map("JSON has no NaN or infinity", |f| {
            serde_json::Number::from_f64(f).map(Value::Number)
        }),
    ]
    .boxed()
}

/// Any JSON value, four levels deep at most: null, booleans, edge numbers, nasty strings,
/// arrays and objects (keys nasty too).
fn json_value() -> BoxedStrategy<Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        edge_number(),
        nasty_text().prop_map(Value::String),
    ];
    leaf.prop_recursive(4, 48, 6, |inner| {
        prop_oneof![
            vec(inner.clone(), 0..6).prop_map(Value::Array),
            vec((nasty_text(), inner), 0..6).prop_map(|fields| Value::Object(fields.into_iter().collect())),
        ]
    })
    .boxed()
}

/// Pieces of text that break naive handling: control characters, line and paragraph
/// separators, quotes and escapes, a byte-order mark, a zero-width space, combining marks,
/// Cyrillic, emoji, the largest code point.
const NASTY_TEXT: &[&str] = &[
    "\0",
    "\n",
    "\r\n",
    "\r",
    "\t",
    "\u{1b}[31m",
    "\u{7f}",
    "\u{85}",
    "\u{2028}",
    "\u{feff}",
    "\u{200b}",
    "\"",
    "\\",
    "'",
    "{number}",
    ":",
    "sound:",
    "Осень",
    "Иван",
    "😀",
    "a",
    " ",
    "24:00",
    "PJSIP/",
    "@",
    "%",
    "{",
    "}",
    "\u{10ffff}",
    "é",
    "e\u{301}",
    "7",
    "+79161234567",
];

/// Text made of nasty pieces, any character, and runs long enough to pass every length limit.
fn nasty_text() -> BoxedStrategy<String> {
    let piece = prop_oneof![
        6 => select(NASTY_TEXT).prop_map(str::to_owned),
        2 => any::<char>().prop_map(String::from),
        1 => (select(NASTY_TEXT), 1..700usize).prop_map(|(p, n)| p.repeat(n)),
    ];
    vec(piece, 0..6).prop_map(|pieces| pieces.concat()).boxed()
}

// ---------------------------------------------------------------------------------------------
// 4. ARI events
// ---------------------------------------------------------------------------------------------

/// The `type` names `ari::events::EventKind` models.
const EVENT_TYPES: &[&str] = &[
    "StasisStart",
    "StasisEnd",
    "ChannelStateChange",
    "ChannelDestroyed",
    "Dial",
    "ChannelHangupRequest",
    "ChannelDtmfReceived",
    "ChannelEnteredBridge",
    "ChannelLeftBridge",
    "ChannelVarset",
    "BridgeDestroyed",
    "RecordingStarted",
    "RecordingFinished",
    "RecordingFailed",
    "PlaybackStarted",
    "PlaybackFinished",
    "ApplicationReplaced",
    "ApplicationRegistered",
    "ApplicationUnregistered",
    "ApplicationMoveFailed",
    "ContactStatusChange",
];

/// A frame parses or is refused; a parsed event keeps the frame's `type`, and a type obzvon
/// models comes out as that kind, never as an unknown one.
fn check_event(frame: &str) -> Result<(), TestCaseError> {
    let parsed = timed("Event::parse", || Event::parse(frame))?;
    let event = match parsed {
        Ok(event) => event,
        Err(e) => {
            let _ = e.to_string();
            return Ok(());
        }
    };
    let _ = (
        event.channel_id(),
        event.timestamp.to_string(),
        event.timestamp.to_utc(),
    );
    let value: Value = serde_json::from_str(frame).map_err(|e| TestCaseError::fail(e.to_string()))?;
    prop_assert_eq!(value["type"].as_str(), Some(event.type_name.as_str()));
    if EVENT_TYPES.contains(&event.type_name.as_str()) {
        let kind = format!("{:?}", event.kind);
        let variant = kind.split(['(', ' ', '{']).next().unwrap_or_default();
        prop_assert_eq!(variant, event.type_name.as_str());
    }
    Ok(())
}

fn ari_frame() -> impl Strategy<Value = String> {
    prop_oneof![
        2 => any::<String>(),
        1 => nasty_text(),
        1 => json_value().prop_map(|v| v.to_string()),
        5 => ari_event().prop_map(|v| v.to_string()),
        2 => (ari_event(), frame_damage()).prop_map(|(v, damage)| damage.apply(v.to_string())),
        1 => (select(&["[", "{\"a\":", "[{\"type\":", "{\"type\":\"StasisStart\",\"channel\":"][..]), 1..3000usize)
            .prop_map(|(open, n)| open.repeat(n)),
    ]
}

/// What goes wrong with a frame on the wire.
#[derive(Debug, Clone)]
enum Damage {
    /// Cut off at a point.
    Truncate(Index),
    /// Text slipped in at a point.
    Insert(Index, String),
    /// A second `type` key before the real one (JSON objects keep the last).
    SecondType(String),
}

impl Damage {
    fn apply(self, mut text: String) -> String {
        let boundary = |text: &str, at: Index| {
            let at = at.index(text.len() + 1);
            (0..=at).rev().find(|&i| text.is_char_boundary(i)).unwrap_or(0)
        };
        match self {
            Damage::Truncate(at) => {
                let at = boundary(&text, at);
                text.truncate(at);
            }
            Damage::Insert(at, piece) => {
                let at = boundary(&text, at);
                text.insert_str(at, &piece);
            }
            Damage::SecondType(name) => {
                if text.starts_with('{') {
                    text.insert_str(1, &format!("\"type\":{},", Value::String(name)));
                }
            }
        }
        text
    }
}

fn frame_damage() -> impl Strategy<Value = Damage> {
    prop_oneof![
        any::<Index>().prop_map(Damage::Truncate),
        (
            any::<Index>(),
            prop_oneof![
                nasty_text(),
                select(&[",", "}", "]", "\"", ":", "null", "\\u0000"][..]).prop_map(str::to_owned)
            ]
        )
            .prop_map(|(at, piece)| Damage::Insert(at, piece)),
        prop_oneof![select(EVENT_TYPES).prop_map(str::to_owned), nasty_text()].prop_map(Damage::SecondType),
    ]
}

/// An ARI event object: the envelope, then the payload fields of its type (required ones
/// nearly always there) and now and then another type's, each field typed right or not.
fn ari_event() -> impl Strategy<Value = Value> {
    let mut kinds: Vec<BoxedStrategy<Value>> = EVENT_TYPES
        .iter()
        .map(|&name| event_of(Just(name.to_owned()).boxed(), required_fields(name)))
        .collect();
    let other = prop_oneof![
        select(
            &[
                "EndpointStateChange",
                "BridgeCreated",
                "Unknown",
                "stasisstart",
                "",
                "Dial "
            ][..]
        )
        .prop_map(str::to_owned),
        nasty_text(),
    ];
    kinds.push(event_of(other.boxed(), &[]));
    Union::new(kinds)
}

fn required_fields(type_name: &str) -> &'static [&'static str] {
    match type_name {
        "StasisStart" => &["args", "channel"],
        "StasisEnd" | "ChannelStateChange" | "ChannelHangupRequest" => &["channel"],
        "ChannelDestroyed" => &["cause", "cause_txt", "channel"],
        "Dial" => &["peer", "dialstatus"],
        "ChannelDtmfReceived" => &["digit", "duration_ms", "channel"],
        "ChannelEnteredBridge" | "BridgeDestroyed" => &["bridge"],
        "ChannelLeftBridge" => &["bridge", "channel"],
        "ChannelVarset" => &["variable", "value"],
        "RecordingStarted" | "RecordingFinished" | "RecordingFailed" => &["recording"],
        "PlaybackStarted" | "PlaybackFinished" => &["playback"],
        "ApplicationMoveFailed" => &["channel", "destination", "args"],
        "ContactStatusChange" => &["endpoint", "contact_info"],
        _ => &[],
    }
}

fn event_of(type_name: BoxedStrategy<String>, required: &[&str]) -> BoxedStrategy<Value> {
    let mut fields = vec![
        field("application", text(), true),
        field("timestamp", ari_time(), true),
        field("asterisk_id", text(), false),
    ];
    let payload: Vec<(&'static str, BoxedStrategy<Value>)> = vec![
        ("channel", channel()),
        ("peer", channel()),
        ("caller", channel()),
        ("forwarded", channel()),
        ("replace_channel", channel()),
        ("args", text_array()),
        ("cause", edge_number()),
        ("tech_cause", edge_number()),
        ("cause_txt", text()),
        (
            "dialstatus",
            select(&["ANSWER", "BUSY", "NOANSWER", "", "PROGRESS"][..])
                .prop_map(Value::from)
                .boxed(),
        ),
        ("forward", text()),
        ("dialstring", text()),
        ("soft", any::<bool>().prop_map(Value::Bool).boxed()),
        (
            "digit",
            select(&["0", "5", "*", "#", "A", "", "12"][..])
                .prop_map(Value::from)
                .boxed(),
        ),
        ("duration_ms", edge_number()),
        ("bridge", bridge()),
        ("variable", text()),
        ("value", text()),
        ("recording", recording()),
        ("playback", playback()),
        ("destination", text()),
        ("endpoint", endpoint()),
        ("contact_info", contact_info()),
    ];
    for (name, value) in payload {
        let needed = required.contains(&name);
        fields.push(Field {
            name,
            value,
            presence: if needed { 0.95 } else { 0.1 },
        });
    }
    let type_value = prop_oneof![
        18 => type_name.prop_map(Value::String),
        1 => Just(Value::Null),
        1 => json_value(),
    ];
    (type_value, object(fields, false), any::<bool>())
        .prop_map(|(type_value, mut event, drop_type)| {
            if !(drop_type && type_value.is_null()) {
                event["type"] = type_value;
            }
            event
        })
        .boxed()
}

/// One field of a generated object: its name, values, and how often it is there at all.
#[derive(Clone)]
struct Field {
    name: &'static str,
    value: BoxedStrategy<Value>,
    presence: f64,
}

fn field(name: &'static str, value: BoxedStrategy<Value>, required: bool) -> Field {
    Field {
        name,
        value,
        presence: if required { 0.97 } else { 0.5 },
    }
}

/// An object of `fields`; noisy, one value in ten is any JSON at all.
fn object(fields: Vec<Field>, noisy: bool) -> BoxedStrategy<Value> {
    let parts: Vec<BoxedStrategy<Option<(&'static str, Value)>>> = fields
        .into_iter()
        .map(|f| {
            let name = f.name;
            let value = if noisy {
                prop_oneof![9 => f.value, 1 => json_value()].boxed()
            } else {
                f.value
            };
            prop::option::weighted(f.presence, value)
                .prop_map(move |v| v.map(|v| (name, v)))
                .boxed()
        })
        .collect();
    parts
        .prop_map(|parts| Value::Object(parts.into_iter().flatten().map(|(k, v)| (k.to_owned(), v)).collect()))
        .boxed()
}

/// An object of `fields`, mostly well-typed, sometimes noisy.
fn either(fields: Vec<Field>) -> BoxedStrategy<Value> {
    prop_oneof![3 => object(fields.clone(), false), 1 => object(fields, true)].boxed()
}

fn nasty_or_plain() -> impl Strategy<Value = Value> {
    prop_oneof![
        3 => plain_text(24).prop_map(Value::String),
        1 => nasty_text().prop_map(Value::String),
    ]
}

/// Ids, names and URIs as Asterisk writes them, spelled out from a seed: a value tree per
/// character (proptest's regex strings, or a `vec` of chars) costs most of an event's
/// generation, and these fields are most of an event.
fn plain_text(max: usize) -> impl Strategy<Value = String> {
    const CHARS: &[u8] = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_./:-";
    (0..max, any::<u64>()).prop_map(|(len, mut seed)| {
        (0..len)
            .map(|_| {
                // xorshift64: any spread of characters will do.
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                char::from(CHARS[(seed % CHARS.len() as u64) as usize])
            })
            .collect()
    })
}

fn text_array() -> BoxedStrategy<Value> {
    vec(nasty_or_plain(), 0..4).prop_map(Value::Array).boxed()
}

fn text() -> BoxedStrategy<Value> {
    nasty_or_plain().boxed()
}

fn channel() -> BoxedStrategy<Value> {
    let states = &[
        "Down",
        "Rsrved",
        "OffHook",
        "Dialing",
        "Ring",
        "Ringing",
        "Up",
        "Busy",
        "Dialing Offhook",
        "Pre-ring",
        "Mute",
        "Unknown",
        "Hold",
        "up",
        "",
    ][..];
    let caller = || either(vec![field("name", text(), true), field("number", text(), true)]);
    let dialplan = either(vec![
        field("context", text(), true),
        field("exten", text(), true),
        field("priority", edge_number(), true),
        field("app_name", text(), false),
        field("app_data", text(), false),
    ]);
    let channelvars = vec((plain_text(8), nasty_or_plain()), 0..4)
        .prop_map(|vars| Value::Object(vars.into_iter().collect()))
        .boxed();
    either(vec![
        field("id", text(), true),
        field("name", text(), true),
        field("state", select(states).prop_map(Value::from).boxed(), true),
        field("protocol_id", text(), false),
        field("caller", caller(), true),
        field("connected", caller(), true),
        field("accountcode", text(), false),
        field("dialplan", dialplan, true),
        field("creationtime", ari_time(), true),
        field("language", text(), false),
        field("channelvars", channelvars, false),
    ])
}

fn bridge() -> BoxedStrategy<Value> {
    either(vec![
        field("id", text(), true),
        field("technology", text(), false),
        field("bridge_type", text(), true),
        field("bridge_class", text(), false),
        field("creator", text(), false),
        field("name", text(), false),
        field("channels", text_array(), true),
        field("creationtime", ari_time(), false),
    ])
}

fn recording() -> BoxedStrategy<Value> {
    either(vec![
        field("name", text(), true),
        field("format", text(), true),
        field("target_uri", text(), false),
        field("state", text(), true),
        field("duration", edge_number(), false),
        field("talking_duration", edge_number(), false),
        field("silence_duration", edge_number(), false),
        field("cause", text(), false),
    ])
}

fn playback() -> BoxedStrategy<Value> {
    either(vec![
        field("id", text(), true),
        field("media_uri", text(), true),
        field("target_uri", text(), true),
        field("state", text(), true),
        field("language", text(), false),
    ])
}

fn endpoint() -> BoxedStrategy<Value> {
    either(vec![
        field("technology", text(), true),
        field("resource", text(), true),
        field("state", text(), false),
    ])
}

fn contact_info() -> BoxedStrategy<Value> {
    either(vec![
        field("uri", text(), false),
        field("contact_status", text(), true),
        field("aor", text(), false),
    ])
}

/// Asterisk timestamps right and wrong: the real format, chrono's year limits with extreme
/// offsets, too many fraction digits, impossible dates, leap seconds, and built from parts
/// that are mostly in range.
fn ari_time() -> BoxedStrategy<Value> {
    let fixed = &[
        "2026-11-24T03:07:02.726+0000",
        "2026-11-24T03:07:02+0000",
        "2026-11-24T03:07:02.123456789+0000",
        "2026-11-24T03:07:02.1234567891234+0000",
        "+262143-12-31T23:59:59.999+0000",
        "-262144-01-01T00:00:00.000+0000",
        "+262143-12-31T23:59:59.999-2359",
        "-262144-01-01T00:00:00.000+2359",
        "+262144-01-01T00:00:00.000+0000",
        "2026-02-30T00:00:00.000+0000",
        "2026-12-31T23:59:60.000+0000",
        "2026-11-24T03:07:02.726+9999",
        "2026-11-24T03:07:02.726+0000 ",
        "2026-11-24 03:07",
        "",
        "9999999999-01-01T00:00:00+0000",
    ][..];
    let year = prop_oneof![
        4 => (1970i64..2100).prop_map(|y| y.to_string()),
        1 => (select(&["", "+", "-"][..]), 0u32..10_000_000).prop_map(|(sign, y)| format!("{sign}{y}")),
        1 => select(&["+262143", "-262144", "+262144", "0000", "+0"][..]).prop_map(str::to_owned),
    ];
    let part = |usual: std::ops::Range<u32>, wild: std::ops::Range<u32>| prop_oneof![4 => usual, 1 => wild];
    let built = (
        year,
        part(1..13, 0..100),
        part(1..29, 0..100),
        part(0..24, 0..100),
        part(0..60, 0..100),
        part(0..60, 0..100),
        prop::option::of(vec(0u8..10, 0..=12)).prop_map(|digits| {
            digits.map_or_else(String::new, |d| {
                d.iter().fold(".".to_owned(), |s, d| s + &d.to_string())
            })
        }),
        select(&["+", "-", ""][..]),
        part(0..15, 0..100),
        part(0..60, 0..100),
    )
        .prop_map(|(y, mo, d, h, mi, s, frac, sign, oh, om)| {
            Value::String(format!(
                "{y}-{mo:02}-{d:02}T{h:02}:{mi:02}:{s:02}{frac}{sign}{oh:02}{om:02}"
            ))
        });
    prop_oneof![
        2 => select(fixed).prop_map(Value::from),
        3 => built,
        1 => nasty_or_plain(),
    ]
    .boxed()
}
