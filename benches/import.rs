//! Lead import benchmark: a CSV file of 1,000,000 leads (OBZVON_BENCH_ROWS to change; phone,
//! name, external id and one free column, with 1 % repeated numbers and 0.1 % bad rows) through
//! the same `import_csv` the API uses, into a fresh database on the configured PostgreSQL
//! (dropped afterwards). Prints the time, rows per second and the process's resident memory
//! before and at its peak. Run: `cargo bench --bench import`.

mod common;

use std::io::Write;
use std::time::Instant;

use obzvon::campaigns::store as campaigns;
use obzvon::campaigns::CampaignSpec;
use obzvon::leads::import;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    if !std::env::args().any(|a| a == "--bench") {
        println!("import benchmark: run it with `cargo bench --bench import`");
        return Ok(());
    }
    let rows: usize = std::env::var("OBZVON_BENCH_ROWS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000);
    common::with_scratch_database("import", |_, url| async move { run(&url, rows).await }).await
}

async fn run(url: &str, rows: usize) -> anyhow::Result<()> {
    let pool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(4)
        .connect(url)
        .await?;
    obzvon::db::migrate(&pool).await?;
    let spec = CampaignSpec::from_json(serde_json::json!({
        "name": "bench", "trunk": "PJSIP/{number}@trunk", "caller_id": "1",
    }))
    .map_err(|e| anyhow::anyhow!("{e:?}"))?;
    let campaign = campaigns::create(&pool, spec).await?;

    let path = std::env::temp_dir().join(format!("obzvon-import-bench-{}.csv", std::process::id()));
    {
        let mut out = std::io::BufWriter::new(std::fs::File::create(&path)?);
        writeln!(out, "phone,name,external_id,city")?;
        for i in 0..rows {
            if i % 1000 == 999 {
                writeln!(out, "not a number,Bad Row {i},crm-{i},Kazan")?;
            } else {
                // Every hundredth row repeats the number of the row before it.
                let n = if i % 100 == 99 { i - 1 } else { i };
                writeln!(out, "+7916{n:07},Lead Number {i},crm-{i},Kazan")?;
            }
        }
    }
    let size = std::fs::metadata(&path)?.len();
    let before = common::proc_kib("VmRSS");
    let t = Instant::now();
    let report = import::import_csv(&pool, campaign.id, None, std::fs::File::open(&path)?).await;
    let secs = t.elapsed().as_secs_f64();
    std::fs::remove_file(&path)?;
    let report = report?;
    let stored: i64 = sqlx::query_scalar("SELECT count(*) FROM leads WHERE campaign_id = $1")
        .bind(campaign.id)
        .fetch_one(&pool)
        .await?;
    println!(
        "imported {rows} rows ({:.1} MiB of CSV) in {secs:.1} s: {:.0} rows/s; imported {}, duplicates {}, rejected {}; {stored} in the table",
        size as f64 / 1048576.0,
        rows as f64 / secs,
        report.imported,
        report.duplicates,
        report.rejected_count,
    );
    println!(
        "resident memory: {:.0} MiB before, {:.0} MiB at the peak",
        before as f64 / 1024.0,
        common::proc_kib("VmHWM") as f64 / 1024.0
    );
    pool.close().await;
    Ok(())
}
