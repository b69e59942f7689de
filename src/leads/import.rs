//! Lead import: rows from JSON or CSV are normalised, checked and copied in (COPY to a staging
//! table, then one insert per 100,000 rows) inside one transaction. Bad rows are reported by number (and CSV line) and reason while good rows
//! go in; a broken file (no phone column, an unreadable header) rolls everything back. A CSV
//! row with a quote that is never closed is rejected alone and reading goes on with the next
//! line, so one stray quote cannot swallow the rest of a file. Importing the same rows again
//! adds nothing: a campaign holds each E.164 number once. The body has arrived in full (a CSV
//! file spooled to disk) before the import takes a database connection.

use std::io::{BufRead, BufReader, Read, Seek, SeekFrom};

use chrono_tz::Tz;
use serde::{Deserialize, Serialize};
use sqlx::{PgPool, Postgres, Transaction};

use crate::ids::{CampaignId, LeadId};
use crate::phone::{PhoneNumber, Region};

/// Checked pieces queued between the CSV reader's thread and the database.
const QUEUED_PIECES: usize = 4;

/// Longest text per lead field, in characters; a lead's free fields in bytes of JSON.
pub const MAX_PHONE_CHARS: usize = 64;
pub const MAX_NAME_CHARS: usize = 200;
pub const MAX_TIMEZONE_CHARS: usize = 64;
pub const MAX_EXTERNAL_ID_CHARS: usize = 200;
pub const MAX_FIELDS_BYTES: usize = 16 * 1024;
/// Rejected rows listed in one report; the count covers the rest.
const MAX_LISTED_REJECTIONS: usize = 1000;

/// One lead in a JSON import. A row that breaks a rule is listed in the report's `rejected`
/// and the others are imported.
#[derive(Debug, Clone, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LeadInput {
    #[schema(schema_with = crate::api::schema::phone)]
    pub phone: String,
    #[serde(default)]
    #[schema(max_length = 200, format = "one-line", example = "Ivan Petrov")]
    pub name: Option<String>,
    /// The lead's own zone, for calling windows; default the campaign's.
    #[serde(default)]
    #[schema(schema_with = crate::api::schema::nullable_time_zone)]
    pub timezone: Option<String>,
    /// The CRM's id for the lead, echoed in every event.
    #[serde(default)]
    #[schema(max_length = 200, format = "one-line", example = "crm-1042")]
    pub external_id: Option<String>,
    /// Higher is called first (default 0).
    #[serde(default)]
    pub priority: Option<i32>,
    #[serde(default)]
    #[schema(schema_with = crate::api::schema::free_object)]
    pub fields: serde_json::Map<String, serde_json::Value>,
}

#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq, utoipa::ToSchema)]
pub struct ImportReport {
    /// Data rows read (CSV header not counted).
    pub received: usize,
    pub imported: usize,
    /// Rows whose number the campaign already had, or that repeated a number in this file.
    pub duplicates: usize,
    pub rejected_count: usize,
    pub rejected: Vec<RowError>,
}

#[derive(Debug, Clone, Serialize, PartialEq, Eq, utoipa::ToSchema)]
pub struct RowError {
    /// 1-based data row (the CSV header is not a row).
    pub row: usize,
    /// CSV: the line of the file the row starts on (1 is the header).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub line: Option<u64>,
    pub reason: String,
}

#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    #[error("{0}")]
    BadFile(String),
    #[error(transparent)]
    Db(#[from] sqlx::Error),
}

struct NewLead {
    phone: String,
    name: Option<String>,
    timezone: Option<String>,
    external_id: Option<String>,
    priority: i32,
    fields: serde_json::Value,
}

/// Rows checked and written in COPY's text format, with the rows refused on the way: what the
/// reader hands the database side, about `COPY_BYTES` at a time.
#[derive(Debug, Default)]
pub struct Piece {
    copy: Vec<u8>,
    rows: usize,
    received: usize,
    rejected: Vec<RowError>,
    rejected_count: usize,
}

/// Checks rows and gathers them into pieces. It needs no database, so a CSV file is checked on
/// the reader's thread while the previous piece is being stored.
pub struct Checker {
    region: Option<Region>,
    piece: Piece,
}

impl Checker {
    pub fn new(region: Option<Region>) -> Checker {
        Checker {
            region,
            piece: Piece::default(),
        }
    }

    /// Takes one row; answers a piece once one is full.
    pub fn push(&mut self, row: usize, line: Option<u64>, input: Result<LeadInput, String>) -> Option<Piece> {
        let piece = &mut self.piece;
        piece.received += 1;
        match input.and_then(|i| check(i, self.region)) {
            Ok(lead) => {
                lead.write_copy_row(row, &mut piece.copy);
                piece.rows += 1;
            }
            Err(reason) => {
                piece.rejected_count += 1;
                if piece.rejected.len() < MAX_LISTED_REJECTIONS {
                    piece.rejected.push(RowError {
                        row,
                        line,
                        reason: crate::text::printable(&reason),
                    });
                }
            }
        }
        (piece.copy.len() >= COPY_BYTES).then(|| self.take())
    }

    /// The rows taken since the last piece.
    pub fn take(&mut self) -> Piece {
        std::mem::take(&mut self.piece)
    }
}

fn check(input: LeadInput, region: Option<Region>) -> Result<NewLead, String> {
    use crate::text::{json_problem, line_problem};
    let texts = [
        ("phone", Some(&input.phone), MAX_PHONE_CHARS),
        ("name", input.name.as_ref(), MAX_NAME_CHARS),
        ("timezone", input.timezone.as_ref(), MAX_TIMEZONE_CHARS),
        ("external_id", input.external_id.as_ref(), MAX_EXTERNAL_ID_CHARS),
    ];
    for (field, value, max) in texts {
        if let Some(problem) = value.and_then(|v| line_problem(v, max)) {
            return Err(format!("{field}: {problem}"));
        }
    }
    let fields = serde_json::Value::Object(input.fields);
    if let Some(problem) = json_problem(&fields, MAX_FIELDS_BYTES) {
        return Err(format!("fields: {problem}"));
    }
    let phone = PhoneNumber::parse(&input.phone, region).map_err(|e| format!("phone: {e}"))?;
    if let Some(tz) = input.timezone.as_deref().filter(|t| !t.is_empty()) {
        tz.parse::<Tz>()
            .map_err(|_| format!("timezone: {tz:?} is not an IANA time zone"))?;
    }
    let priority = input.priority.unwrap_or(0);
    if !(-1000..=1000).contains(&priority) {
        return Err("priority: must be between -1000 and 1000".to_owned());
    }
    let non_empty = |s: Option<String>| s.map(|s| s.trim().to_owned()).filter(|s| !s.is_empty());
    Ok(NewLead {
        phone: phone.as_str().to_owned(),
        name: non_empty(input.name),
        timezone: non_empty(input.timezone),
        external_id: non_empty(input.external_id),
        priority,
        fields,
    })
}

/// Stores pieces inside one transaction.
pub struct Importer {
    tx: Transaction<'static, Postgres>,
    campaign: CampaignId,
    /// Rows in the stage, not yet moved to `leads`.
    staged: usize,
    report: ImportReport,
}

/// Checked rows are sent to PostgreSQL with COPY in pieces of about this size (memory stays
/// flat whatever the file's size) into a staging table, then moved to `leads` every
/// `MOVE_ROWS` rows with one statement that skips numbers the campaign already has.
const COPY_BYTES: usize = 1 << 20;
const MOVE_ROWS: usize = 100_000;

impl Importer {
    pub async fn begin(pool: &PgPool, campaign: CampaignId) -> Result<Importer, sqlx::Error> {
        let mut tx = pool.begin().await?;
        // The stage lives as long as the transaction; `ord` keeps the file's order, so the
        // first row of a number repeated in the file is the one kept.
        sqlx::query(
            "CREATE TEMPORARY TABLE lead_import_stage (
                 ord bigint, id uuid, phone text, name text, tz text, ext text, prio int, fields jsonb
             ) ON COMMIT DROP",
        )
        .execute(&mut *tx)
        .await?;
        Ok(Importer {
            tx,
            campaign,
            staged: 0,
            report: ImportReport::default(),
        })
    }

    /// Stages a piece's rows and counts its refusals.
    pub async fn store(&mut self, piece: Piece) -> Result<(), sqlx::Error> {
        let report = &mut self.report;
        report.received += piece.received;
        report.rejected_count += piece.rejected_count;
        let room = MAX_LISTED_REJECTIONS - report.rejected.len();
        report.rejected.extend(piece.rejected.into_iter().take(room));
        if piece.rows > 0 {
            let mut copy = self
                .tx
                .copy_in_raw("COPY lead_import_stage (ord, id, phone, name, tz, ext, prio, fields) FROM STDIN")
                .await?;
            copy.send(piece.copy).await?;
            copy.finish().await?;
            self.staged += piece.rows;
        }
        if self.staged >= MOVE_ROWS {
            self.move_staged().await?;
        }
        Ok(())
    }

    /// Moves the staged rows into `leads`: a number the campaign has (or that came earlier in
    /// this file) is a duplicate.
    async fn move_staged(&mut self) -> Result<(), sqlx::Error> {
        if self.staged == 0 {
            return Ok(());
        }
        let inserted = sqlx::query(
            "INSERT INTO leads (id, campaign_id, phone_e164, name, timezone, external_id, priority, fields)
             SELECT id, $1, phone, name, tz, ext, prio, fields FROM lead_import_stage ORDER BY ord
             ON CONFLICT (campaign_id, phone_e164) DO NOTHING",
        )
        .bind(self.campaign)
        .execute(&mut *self.tx)
        .await?
        .rows_affected() as usize;
        sqlx::query("TRUNCATE lead_import_stage").execute(&mut *self.tx).await?;
        self.report.imported += inserted;
        self.report.duplicates += std::mem::take(&mut self.staged) - inserted;
        Ok(())
    }

    pub async fn commit(mut self) -> Result<ImportReport, sqlx::Error> {
        self.move_staged().await?;
        self.tx.commit().await?;
        Ok(self.report)
    }
}

impl NewLead {
    /// One row of COPY's text format: tab-separated, `\N` for NULL, with backslash, tab and
    /// line breaks escaped (checked text has none of the latter, but JSON may hold backslashes).
    fn write_copy_row(&self, ord: usize, out: &mut Vec<u8>) {
        use std::io::Write as _;
        let _ = write!(out, "{ord}\t{}\t", LeadId::new());
        copy_text(Some(&self.phone), out);
        for value in [&self.name, &self.timezone, &self.external_id] {
            out.push(b'\t');
            copy_text(value.as_deref(), out);
        }
        let _ = write!(out, "\t{}\t", self.priority);
        copy_text(Some(&self.fields.to_string()), out);
        out.push(b'\n');
    }
}

fn copy_text(value: Option<&str>, out: &mut Vec<u8>) {
    let Some(value) = value else {
        out.extend_from_slice(b"\\N");
        return;
    };
    for &b in value.as_bytes() {
        match b {
            b'\\' => out.extend_from_slice(b"\\\\"),
            b'\t' => out.extend_from_slice(b"\\t"),
            b'\n' => out.extend_from_slice(b"\\n"),
            b'\r' => out.extend_from_slice(b"\\r"),
            _ => out.push(b),
        }
    }
}

/// Imports a JSON array of lead objects.
pub async fn import_json(
    pool: &PgPool,
    campaign: CampaignId,
    region: Option<Region>,
    rows: Vec<serde_json::Value>,
) -> Result<ImportReport, ImportError> {
    let mut checker = Checker::new(region);
    let mut importer = Importer::begin(pool, campaign).await?;
    for (i, value) in rows.into_iter().enumerate() {
        let parsed = crate::text::decode::<LeadInput>(value).map_err(|e| match e.field.as_str() {
            "body" => e.message,
            field => format!("{field}: {}", e.message),
        });
        if let Some(piece) = checker.push(i + 1, None, parsed) {
            importer.store(piece).await?;
        }
    }
    importer.store(checker.take()).await?;
    Ok(importer.commit().await?)
}

/// Imports a CSV file (spooled by the API). Columns: `phone` (required), `name`, `timezone`,
/// `external_id`, `priority`; any other column lands in the lead's free `fields`. The file is
/// parsed and checked on a blocking thread while rows are stored here.
pub async fn import_csv(
    pool: &PgPool,
    campaign: CampaignId,
    region: Option<Region>,
    file: std::fs::File,
) -> Result<ImportReport, ImportError> {
    // The reader parses and checks a piece while the one before it is stored; a few pieces
    // queued keep both sides busy and memory bounded.
    let (pieces, mut checked) = tokio::sync::mpsc::channel::<Piece>(QUEUED_PIECES);
    let parser = tokio::task::spawn_blocking(move || {
        let mut checker = Checker::new(region);
        let mut open = true;
        parse_csv(file, |row| {
            if let Some(piece) = checker.push(row.row, Some(row.line), row.lead) {
                open = pieces.blocking_send(piece).is_ok();
            }
            open
        })?;
        let last = checker.take();
        if open && last.received > 0 {
            let _ = pieces.blocking_send(last);
        }
        Ok::<(), String>(())
    });
    let Some(first) = checked.recv().await else {
        // No rows: either a broken header (the parser says why) or an empty file.
        parser
            .await
            .map_err(|e| ImportError::BadFile(format!("the CSV reader stopped: {e}")))?
            .map_err(ImportError::BadFile)?;
        return Ok(ImportReport::default());
    };
    let mut importer = Importer::begin(pool, campaign).await?;
    importer.store(first).await?;
    while let Some(piece) = checked.recv().await {
        importer.store(piece).await?;
    }
    parser
        .await
        .map_err(|e| ImportError::BadFile(format!("the CSV reader stopped: {e}")))?
        .map_err(ImportError::BadFile)?;
    Ok(importer.commit().await?)
}

/// One data row of a CSV file: its number, the line it starts on, and the lead or why not.
#[derive(Debug)]
pub struct CsvRow {
    pub row: usize,
    pub line: u64,
    pub lead: Result<LeadInput, String>,
}

/// Reads CSV rows and hands each to `emit` (which answers false to stop). The delimiter is
/// what the header uses most of `,`, `;` and tab (spreadsheets in many locales write `;`); a
/// UTF-8 byte-order mark is skipped. Errors only for a file that cannot be a lead list (no
/// header, no phone column); a bad row is emitted with its reason and reading goes on.
pub fn parse_csv<R: Read + Seek>(mut input: R, mut emit: impl FnMut(CsvRow) -> bool) -> Result<(), String> {
    let len = input.seek(SeekFrom::End(0)).map_err(|e| e.to_string())?;
    let ends_with_lf = len > 0 && {
        input.seek(SeekFrom::End(-1)).map_err(|e| e.to_string())?;
        let mut last = [0u8; 1];
        input.read_exact(&mut last).map_err(|e| e.to_string())?;
        last[0] == b'\n'
    };
    input.rewind().map_err(|e| e.to_string())?;
    let delimiter = sniff(&mut input)?;
    input.rewind().map_err(|e| e.to_string())?;
    // The reader skips a UTF-8 byte-order mark itself. Lines end at LF (a CR before it is
    // trimmed with the value), which keeps positions and line numbers exact for CR LF files.
    // Values are trimmed here, not by the reader, so the line breaks a record holds can be
    // counted to find the line it starts on.
    let mut csv = csv::ReaderBuilder::new()
        .flexible(true)
        .terminator(csv::Terminator::Any(b'\n'))
        .delimiter(delimiter)
        .from_reader(input);
    let headers: Vec<String> = match csv.headers() {
        Ok(h) => h
            .iter()
            .map(|h| h.trim_start_matches('\u{feff}').trim().to_ascii_lowercase())
            .collect(),
        Err(e) => return Err(format!("unreadable CSV header: {}", csv_reason(&e))),
    };
    if headers.iter().all(String::is_empty) {
        return Err("the CSV file is empty; it needs a header line with a phone column".to_owned());
    }
    let Some(phone_col) = headers.iter().position(|h| h == "phone") else {
        return Err(format!(
            "the CSV header has no `phone` column (found: {})",
            headers.join(", ")
        ));
    };
    let mut record = csv::ByteRecord::new();
    let mut row = 0;
    let mut unclosed_rows = 0;
    loop {
        let read = csv.read_byte_record(&mut record);
        let Some(start) = record.position().cloned() else {
            // Nothing read at all: the end of the file, or an I/O failure before any byte.
            return read
                .map(|_| ())
                .map_err(|e| format!("the CSV file cannot be read: {e}"));
        };
        match read {
            Ok(false) => return Ok(()),
            Ok(true) => {}
            Err(e) if e.is_io_error() => return Err(format!("the CSV file cannot be read: {e}")),
            Err(_) => {}
        }
        // A line of only spaces or a CR (a blank line of a CR LF file) is no row.
        if record.iter().all(|v| v.trim_ascii().is_empty()) {
            continue;
        }
        row += 1;
        let end = csv.position().clone();
        let at_end = end.byte() >= len;
        // The reader's start position is before any blank lines it skipped; the line a record
        // starts on is its end less the line breaks it holds (and its own, when it has one).
        let inner = record.as_slice().iter().filter(|&&b| b == b'\n').count() as u64;
        let unclosed = at_end && unterminated(csv.get_mut(), start.byte(), delimiter)?;
        // An open quote swallows the final line feed too.
        let terminated = !(at_end && (unclosed || !ends_with_lf));
        let line = end.line().saturating_sub(inner + u64::from(terminated)).max(2);
        let runaway = unclosed || spills(&headers, phone_col, &record);
        let lead = if unclosed {
            unclosed_rows += 1;
            if unclosed_rows > MAX_UNCLOSED {
                return Err(format!(
                    "more than {MAX_UNCLOSED} quoted values are never closed; fix the file's quoting"
                ));
            }
            Err("a quoted value is never closed (a \" without its closing \"); the row was skipped".to_owned())
        } else if runaway {
            Err(format!(
                "a value runs from line {line} to line {}; is a closing quote missing? The row was skipped",
                line + inner.max(1)
            ))
        } else {
            lead_from(&headers, phone_col, &record)
        };
        if !emit(CsvRow { row, line, lead }) {
            return Ok(());
        }
        if runaway {
            // Go on with the line after the one the record starts on.
            let first = skip_blank_lines(csv.get_mut(), start.byte())?;
            let Some(next) = line_end(csv.get_mut(), first)? else {
                return Ok(());
            };
            // Resume on the line feed before it: a reset reader strips a byte-order mark from
            // what it reads first, and must not take one at the start of a line for a file's.
            // The line feed reads as an empty line, counted and skipped.
            let mut at = csv::Position::new();
            at.set_byte(next - 1).set_line(line).set_record(start.record() + 1);
            // `seek_raw`, not `seek`: the scans above moved the file under the reader's buffer,
            // and `seek` does nothing when the target equals the reader's own position.
            csv.seek_raw(SeekFrom::Start(next - 1), at)
                .map_err(|e| format!("the CSV file cannot be read: {e}"))?;
        }
    }
}

/// The first byte at or after `from` that is not a line feed (the reader skips empty lines).
fn skip_blank_lines<R: Read + Seek>(input: &mut R, from: u64) -> Result<u64, String> {
    input.seek(SeekFrom::Start(from)).map_err(|e| e.to_string())?;
    let mut at = from;
    let mut byte = [0u8; 1];
    while input.read(&mut byte).map_err(|e| e.to_string())? == 1 && byte[0] == b'\n' {
        at += 1;
    }
    Ok(at)
}

/// Quotes left open at the end of a file, each costing a scan to its end, before the file is
/// refused as a whole.
const MAX_UNCLOSED: usize = 100;

/// Whether a value that must sit on one line (the number, name, zone, id, priority) holds a
/// line break: a quote opened and closed only rows later, swallowing the rows between.
fn spills(headers: &[String], phone_col: usize, record: &csv::ByteRecord) -> bool {
    headers
        .iter()
        .zip(record.iter())
        .enumerate()
        .any(|(i, (column, value))| {
            let one_line =
                i == phone_col || matches!(column.as_str(), "name" | "timezone" | "external_id" | "priority");
            one_line && value.trim_ascii().iter().any(|&b| b == b'\n' || b == b'\r')
        })
}

fn csv_reason(e: &csv::Error) -> String {
    match e.kind() {
        csv::ErrorKind::Utf8 { .. } => "not UTF-8 text; save the file as UTF-8 (CSV UTF-8 in a spreadsheet)".to_owned(),
        _ => e.to_string(),
    }
}

/// The delimiter the header line uses.
fn sniff<R: Read>(input: &mut R) -> Result<u8, String> {
    let mut first = Vec::new();
    BufReader::new(input.take(64 * 1024))
        .read_until(b'\n', &mut first)
        .map_err(|e| format!("the CSV file cannot be read: {e}"))?;
    let count = |d: u8| first.iter().filter(|&&b| b == d).count();
    let delimiter = [b',', b';', b'\t']
        .into_iter()
        .max_by_key(|&d| (count(d), d == b','))
        .expect("three candidates");
    Ok(delimiter)
}

/// Whether the record starting at byte `from` runs to the end of the file inside quotes (the
/// only way a CSV reader swallows what follows).
fn unterminated<R: Read + Seek>(input: &mut R, from: u64, delimiter: u8) -> Result<bool, String> {
    #[derive(Clone, Copy, PartialEq)]
    enum State {
        FieldStart,
        Unquoted,
        Quoted,
        QuoteInQuoted,
    }
    let back = input.stream_position().map_err(|e| e.to_string())?;
    input.seek(SeekFrom::Start(from)).map_err(|e| e.to_string())?;
    let mut state = State::FieldStart;
    let mut buf = [0u8; 64 * 1024];
    loop {
        let n = input.read(&mut buf).map_err(|e| e.to_string())?;
        if n == 0 {
            break;
        }
        for &b in &buf[..n] {
            state = match (state, b) {
                (State::FieldStart, b'"') => State::Quoted,
                (State::Quoted, b'"') => State::QuoteInQuoted,
                (State::Quoted, _) => State::Quoted,
                (State::QuoteInQuoted, b'"') => State::Quoted,
                (_, b'\n') => State::FieldStart,
                (_, b) if b == delimiter => State::FieldStart,
                // A quote opens a value only as its first byte; elsewhere it is text.
                _ => State::Unquoted,
            };
        }
    }
    input.seek(SeekFrom::Start(back)).map_err(|e| e.to_string())?;
    Ok(state == State::Quoted)
}

/// The byte after the line break that ends the line holding byte `from`, if there is one.
fn line_end<R: Read + Seek>(input: &mut R, from: u64) -> Result<Option<u64>, String> {
    input.seek(SeekFrom::Start(from)).map_err(|e| e.to_string())?;
    let mut reader = BufReader::new(input);
    let mut line = Vec::new();
    let n = reader.read_until(b'\n', &mut line).map_err(|e| e.to_string())?;
    Ok(line.ends_with(b"\n").then_some(from + n as u64))
}

/// The lead a data record describes, or why it cannot be one.
fn lead_from(headers: &[String], phone_col: usize, record: &csv::ByteRecord) -> Result<LeadInput, String> {
    let mut input = LeadInput::default();
    if record.len() > headers.len() {
        return Err(format!(
            "{} values but the header has {} columns",
            record.len(),
            headers.len()
        ));
    }
    for (i, (column, raw)) in headers.iter().zip(record.iter()).enumerate() {
        let value = std::str::from_utf8(raw.trim_ascii())
            .map_err(|_| format!("{column}: not UTF-8 text; save the file as UTF-8 (CSV UTF-8 in a spreadsheet)"))?;
        match column.as_str() {
            _ if i == phone_col => input.phone = value.to_owned(),
            "name" => input.name = Some(value.to_owned()),
            "timezone" => input.timezone = Some(value.to_owned()),
            "external_id" => input.external_id = Some(value.to_owned()),
            "priority" if !value.is_empty() => match value.parse() {
                Ok(p) => input.priority = Some(p),
                Err(_) => return Err(format!("priority: {value:?} is not a whole number")),
            },
            "priority" => {}
            other if !value.is_empty() => {
                input
                    .fields
                    .insert(other.to_owned(), serde_json::Value::String(value.to_owned()));
            }
            _ => {}
        }
    }
    Ok(input)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A row's phone and name, or why it was rejected.
    type Parsed = Result<(String, Option<String>), String>;

    /// Each row's line and what it held.
    fn rows(file: &[u8]) -> Vec<(u64, Parsed)> {
        let mut out = Vec::new();
        parse_csv(std::io::Cursor::new(file.to_vec()), |r| {
            out.push((r.line, r.lead.map(|l| (l.phone, l.name))));
            true
        })
        .unwrap();
        out
    }

    fn ok(phone: &str, name: &str) -> Parsed {
        Ok((phone.to_owned(), Some(name.to_owned())))
    }

    #[test]
    fn a_quote_never_closed_rejects_its_row_and_reading_goes_on() {
        let got = rows(b"phone,name\n+79990000001,Ann\n+79990000002,\"Bob\n+79990000003,Carl\n+79990000004,Dan\n");
        assert_eq!(got.len(), 4, "{got:?}");
        assert_eq!(got[0], (2, ok("+79990000001", "Ann")));
        assert_eq!(got[1].0, 3);
        assert!(got[1].1.as_ref().unwrap_err().contains("never closed"), "{got:?}");
        assert_eq!(got[2], (4, ok("+79990000003", "Carl")));
        assert_eq!(got[3], (5, ok("+79990000004", "Dan")));
    }

    #[test]
    fn a_quote_closed_rows_later_rejects_only_the_line_it_opened_on() {
        let got = rows(b"phone,name\n+79990000001,\"Ann\n+79990000002,Bob\n+79990000003,\"Carl\"\n+79990000004,Dan");
        let lines: Vec<u64> = got.iter().map(|r| r.0).collect();
        assert_eq!(lines, vec![2, 3, 4, 5], "{got:?}");
        assert!(
            got[0].1.as_ref().unwrap_err().contains("closing quote missing"),
            "{got:?}"
        );
        assert_eq!(got[1].1, ok("+79990000002", "Bob"));
        assert_eq!(got[2].1, ok("+79990000003", "Carl"));
        assert_eq!(got[3].1, ok("+79990000004", "Dan"));
    }

    #[test]
    fn free_columns_may_hold_quoted_line_breaks_and_stray_quotes_are_text() {
        let mut leads = Vec::new();
        parse_csv(
            std::io::Cursor::new(
                b"phone,name,address\n+79990000001,Jo\"hn,\"1 Main St\nFlat 2\"\n+79990000002,Eve,x\n".to_vec(),
            ),
            |r| {
                leads.push((r.line, r.lead.unwrap()));
                true
            },
        )
        .unwrap();
        assert_eq!(leads.len(), 2);
        assert_eq!(leads[0].1.name.as_deref(), Some("Jo\"hn"));
        assert_eq!(leads[0].1.fields["address"], "1 Main St\nFlat 2");
        assert_eq!(leads[1].0, 4, "the line after the two-line row");
    }

    #[test]
    fn semicolons_a_byte_order_mark_and_bad_bytes_in_one_row() {
        let got = rows(b"\xEF\xBB\xBFphone;name\r\n+79990000001;Ann\r\n+79990000002;Bo\xFFb\r\n+79990000003;Carl\r\n");
        assert_eq!(got[0], (2, ok("+79990000001", "Ann")));
        assert!(got[1].1.as_ref().unwrap_err().contains("not UTF-8"), "{got:?}");
        assert_eq!(got[2], (4, ok("+79990000003", "Carl")));
    }

    #[test]
    fn a_file_without_a_phone_column_is_refused_whole() {
        let e = parse_csv(std::io::Cursor::new(b"name\nAnn\n".to_vec()), |_| true).unwrap_err();
        assert!(e.contains("no `phone` column"), "{e}");
        let mut n = 0;
        parse_csv(std::io::Cursor::new(Vec::new()), |_| {
            n += 1;
            true
        })
        .unwrap_err();
        assert_eq!(n, 0);
    }
}

#[cfg(test)]
mod fuzz_cases {
    #[test]
    fn a_quoted_value_closed_on_the_next_line_behind_other_bytes() {
        let mut out = Vec::new();
        super::parse_csv(
            std::io::Cursor::new(b"phone,name\n\"\x00\n\xef\xbb\xbf\"\n+79160000000,Name 0\n".to_vec()),
            |r| {
                out.push(format!("{} {} {:?}", r.row, r.line, r.lead.map(|l| l.phone)));
                true
            },
        )
        .unwrap();
        assert_eq!(out.last().unwrap(), "3 4 Ok(\"+79160000000\")", "{out:?}");
    }
}
