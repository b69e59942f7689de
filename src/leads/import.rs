//! Lead import: rows from JSON or CSV are normalised, checked and inserted in batches inside
//! one transaction. Bad rows are reported by number and reason while good rows go in; a broken
//! file (unreadable CSV, no phone column) rolls everything back. Importing the same rows again
//! adds nothing: a campaign holds each E.164 number once.

use std::collections::HashSet;

use chrono_tz::Tz;
use futures_util::StreamExt;
use serde::{Deserialize, Serialize};
use sqlx::{PgPool, Postgres, Transaction};
use tokio::io::AsyncRead;

use crate::ids::{CampaignId, LeadId};
use crate::phone::{PhoneNumber, Region};

const BATCH: usize = 1000;
/// Rejected rows listed in one report; the count covers the rest.
const MAX_LISTED_REJECTIONS: usize = 1000;

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LeadInput {
    pub phone: String,
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub timezone: Option<String>,
    #[serde(default)]
    pub external_id: Option<String>,
    #[serde(default)]
    pub priority: Option<i32>,
    #[serde(default)]
    pub fields: serde_json::Map<String, serde_json::Value>,
}

#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct ImportReport {
    /// Data rows read (CSV header not counted).
    pub received: usize,
    pub imported: usize,
    /// Rows whose number the campaign already had, or that repeated a number in this file.
    pub duplicates: usize,
    pub rejected_count: usize,
    pub rejected: Vec<RowError>,
}

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct RowError {
    /// 1-based data row (for CSV, line = row + 1 because of the header).
    pub row: usize,
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

pub struct Importer {
    tx: Transaction<'static, Postgres>,
    campaign: CampaignId,
    region: Option<Region>,
    batch: Vec<NewLead>,
    seen: HashSet<String>,
    report: ImportReport,
}

impl Importer {
    pub async fn begin(pool: &PgPool, campaign: CampaignId, region: Option<Region>) -> Result<Importer, sqlx::Error> {
        Ok(Importer {
            tx: pool.begin().await?,
            campaign,
            region,
            batch: Vec::with_capacity(BATCH),
            seen: HashSet::new(),
            report: ImportReport::default(),
        })
    }

    pub async fn push(&mut self, row: usize, input: Result<LeadInput, String>) -> Result<(), sqlx::Error> {
        self.report.received += 1;
        match input.and_then(|i| self.check(i)) {
            Ok(lead) => {
                if !self.seen.insert(lead.phone.clone()) {
                    self.report.duplicates += 1;
                    return Ok(());
                }
                self.batch.push(lead);
                if self.batch.len() >= BATCH {
                    self.flush().await?;
                }
            }
            Err(reason) => {
                self.report.rejected_count += 1;
                if self.report.rejected.len() < MAX_LISTED_REJECTIONS {
                    self.report.rejected.push(RowError { row, reason });
                }
            }
        }
        Ok(())
    }

    fn check(&self, input: LeadInput) -> Result<NewLead, String> {
        let phone = PhoneNumber::parse(&input.phone, self.region).map_err(|e| format!("phone: {e}"))?;
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
            fields: serde_json::Value::Object(input.fields),
        })
    }

    async fn flush(&mut self) -> Result<(), sqlx::Error> {
        if self.batch.is_empty() {
            return Ok(());
        }
        let batch = std::mem::take(&mut self.batch);
        let ids: Vec<LeadId> = batch.iter().map(|_| LeadId::new()).collect();
        let inserted = sqlx::query(
            "INSERT INTO leads (id, campaign_id, phone_e164, name, timezone, external_id, priority, fields)
             SELECT u.id, $1, u.phone, u.name, u.tz, u.ext, u.prio, u.fields
             FROM UNNEST($2::uuid[], $3::text[], $4::text[], $5::text[], $6::text[], $7::int[], $8::jsonb[])
                  AS u(id, phone, name, tz, ext, prio, fields)
             ON CONFLICT (campaign_id, phone_e164) DO NOTHING",
        )
        .bind(self.campaign)
        .bind(&ids)
        .bind(batch.iter().map(|l| l.phone.clone()).collect::<Vec<_>>())
        .bind(batch.iter().map(|l| l.name.clone()).collect::<Vec<_>>())
        .bind(batch.iter().map(|l| l.timezone.clone()).collect::<Vec<_>>())
        .bind(batch.iter().map(|l| l.external_id.clone()).collect::<Vec<_>>())
        .bind(batch.iter().map(|l| l.priority).collect::<Vec<_>>())
        .bind(batch.iter().map(|l| l.fields.clone()).collect::<Vec<_>>())
        .execute(&mut *self.tx)
        .await?
        .rows_affected() as usize;
        self.report.imported += inserted;
        self.report.duplicates += batch.len() - inserted;
        Ok(())
    }

    pub async fn commit(mut self) -> Result<ImportReport, sqlx::Error> {
        self.flush().await?;
        self.tx.commit().await?;
        Ok(self.report)
    }
}

/// Imports a JSON array of lead objects.
pub async fn import_json(
    pool: &PgPool,
    campaign: CampaignId,
    region: Option<Region>,
    rows: Vec<serde_json::Value>,
) -> Result<ImportReport, ImportError> {
    let mut importer = Importer::begin(pool, campaign, region).await?;
    for (i, value) in rows.into_iter().enumerate() {
        let parsed = serde_json::from_value::<LeadInput>(value).map_err(|e| e.to_string());
        importer.push(i + 1, parsed).await?;
    }
    Ok(importer.commit().await?)
}

/// Imports CSV read as a stream. Columns: `phone` (required), `name`, `timezone`,
/// `external_id`, `priority`; any other column lands in the lead's free `fields`.
pub async fn import_csv<R: AsyncRead + Unpin + Send>(
    pool: &PgPool,
    campaign: CampaignId,
    region: Option<Region>,
    reader: R,
) -> Result<ImportReport, ImportError> {
    let mut csv = csv_async::AsyncReaderBuilder::new()
        .flexible(true)
        .trim(csv_async::Trim::All)
        .create_reader(reader);
    let headers: Vec<String> = csv
        .headers()
        .await
        .map_err(|e| ImportError::BadFile(format!("unreadable CSV header: {e}")))?
        .iter()
        .map(|h| h.trim().to_ascii_lowercase())
        .collect();
    let Some(phone_col) = headers.iter().position(|h| h == "phone") else {
        return Err(ImportError::BadFile(format!(
            "the CSV header has no `phone` column (found: {})",
            headers.join(", ")
        )));
    };
    let mut importer = Importer::begin(pool, campaign, region).await?;
    let mut records = csv.records();
    let mut row = 0;
    while let Some(record) = records.next().await {
        row += 1;
        let record = record.map_err(|e| ImportError::BadFile(format!("CSV row {row}: {e}")))?;
        let mut input = LeadInput::default();
        let mut bad = None;
        for (i, value) in record.iter().enumerate() {
            let Some(column) = headers.get(i) else {
                bad = Some(format!(
                    "{} values but the header has {} columns",
                    record.len(),
                    headers.len()
                ));
                break;
            };
            match column.as_str() {
                _ if i == phone_col => input.phone = value.to_owned(),
                "name" => input.name = Some(value.to_owned()),
                "timezone" => input.timezone = Some(value.to_owned()),
                "external_id" => input.external_id = Some(value.to_owned()),
                "priority" if !value.is_empty() => match value.parse() {
                    Ok(p) => input.priority = Some(p),
                    Err(_) => bad = Some(format!("priority: {value:?} is not a whole number")),
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
        importer.push(row, bad.map_or(Ok(input), Err)).await?;
    }
    Ok(importer.commit().await?)
}
