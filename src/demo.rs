//! `obzvon demo`: a real campaign through the test bed, driven over obzvon's own REST API.
//! It registers two operators, waits for their phones to log in (scripts/demo.sh starts SIPp
//! phones that dial *55), imports leads with mixed behaviours, starts the campaign, shows live
//! progress, and ends with a report per result and the connect latency.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use indicatif::{ProgressBar, ProgressStyle};
use rand::Rng;
use serde_json::{json, Value};

pub struct DemoOptions {
    pub api: String,
    pub operators: Vec<String>,
    pub leads: usize,
    pub token: String,
}

struct Api {
    http: reqwest::Client,
    base: String,
    token: String,
}

impl Api {
    async fn call(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> anyhow::Result<Value> {
        let mut request = self
            .http
            .request(method.clone(), format!("{}{path}", self.base))
            .bearer_auth(&self.token);
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request
            .send()
            .await
            .with_context(|| format!("obzvon does not answer at {}; is `obzvon serve` running?", self.base))?;
        let status = response.status();
        let text = response.text().await?;
        let value = serde_json::from_str(&text).unwrap_or(Value::Null);
        if !status.is_success() {
            bail!("{method} {path}: {status} {text}");
        }
        Ok(value)
    }

    async fn get(&self, path: &str) -> anyhow::Result<Value> {
        self.call(reqwest::Method::GET, path, None).await
    }

    async fn post(&self, path: &str, body: Value) -> anyhow::Result<Value> {
        self.call(reqwest::Method::POST, path, Some(body)).await
    }
}

/// Behaviour mix of the demo leads: (trunk behaviour digit, ring s, talk s, label, weight).
const MIX: [(u8, u8, u8, &str, usize); 6] = [
    (1, 1, 3, "answers and talks", 14),
    (2, 1, 0, "busy", 5),
    (3, 0, 0, "never answers", 4),
    (4, 0, 0, "trunk congested", 3),
    (5, 1, 0, "hangs up at once", 2),
    (6, 0, 0, "number does not exist", 2),
];

pub async fn run(opts: DemoOptions) -> anyhow::Result<()> {
    let api = Api {
        http: reqwest::Client::builder().timeout(Duration::from_secs(10)).build()?,
        base: format!("{}/api/v1", opts.api.trim_end_matches('/')),
        token: opts.token.clone(),
    };
    // Operators: create the missing ones, then wait for their phones to log in.
    let existing = api.get("/operators").await?;
    let mut ids = Vec::new();
    for (i, endpoint) in opts.operators.iter().enumerate() {
        let found = existing
            .as_array()
            .into_iter()
            .flatten()
            .find(|o| o["endpoint"] == endpoint.as_str());
        let op = match found {
            Some(op) => op.clone(),
            None => {
                api.post(
                    "/operators",
                    json!({"name": format!("Operator {}", i + 1), "endpoint": endpoint}),
                )
                .await?
            }
        };
        ids.push(op["id"].as_str().context("operator id")?.to_owned());
    }
    println!("waiting for {} operator phones to log in with *55 ...", ids.len());
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let ops = api.get("/operators").await?;
        let ready = ops
            .as_array()
            .into_iter()
            .flatten()
            .filter(|o| ids.iter().any(|id| o["id"] == id.as_str()) && o["state"] == "ready")
            .count();
        if ready == ids.len() {
            break;
        }
        if Instant::now() > deadline {
            bail!("only {ready} of {} operators logged in within 30 s", ids.len());
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    let name = format!("demo {}", chrono::Utc::now().format("%Y-%m-%d %H:%M:%S"));
    let campaign = api
        .post(
            "/campaigns",
            json!({
                "name": name,
                "trunk": "PJSIP/{number}@trunk",
                "caller_id": "74950000000",
                "dial_timeout_secs": 6,
                "max_attempts": 2,
                "retry_delays_secs": {"busy": 3, "no-answer": 3, "congestion": 3, "abandoned": 3},
                "wrap_up_secs": 2,
                "operators": ids,
            }),
        )
        .await?;
    let id = campaign["id"].as_str().context("campaign id")?.to_owned();

    let mut csv = String::from("phone,name,external_id,behaviour\n");
    let mut rng = rand::rng();
    for i in 0..opts.leads {
        let (b, ring, talk, label, _) = mix_for(i, opts.leads);
        let free: u32 = rng.random_range(0..10_000);
        csv.push_str(&format!("+79{free:04}{b}{ring:02}{talk:02},Lead {i},crm-{i},{label}\n"));
    }
    let response = api
        .http
        .post(format!("{}/campaigns/{id}/leads", api.base))
        .bearer_auth(&api.token)
        .header("content-type", "text/csv")
        .body(csv)
        .send()
        .await?;
    let status = response.status();
    let report = response.json::<Value>().await?;
    if !status.is_success() || report["imported"].as_u64().unwrap_or(0) == 0 {
        bail!("importing the demo leads failed: {status} {report}");
    }
    println!(
        "campaign {name:?}: {} leads imported ({} duplicates, {} rejected); {} operators ready",
        report["imported"],
        report["duplicates"],
        report["rejected_count"],
        ids.len()
    );
    api.post(&format!("/campaigns/{id}/start"), json!({})).await?;

    let total = report["imported"].as_u64().unwrap_or(0);
    let bar = ProgressBar::new(total);
    bar.set_style(
        ProgressStyle::with_template("{elapsed_precise} [{bar:30}] {pos}/{len} leads done · {msg}")
            .expect("static template")
            .progress_chars("=> "),
    );
    let started = Instant::now();
    // Without a terminal the bar is hidden; print a line whenever progress changes instead.
    let plain = !std::io::IsTerminal::is_terminal(&std::io::stderr());
    let mut last_line = String::new();
    loop {
        let c = api.get(&format!("/campaigns/{id}")).await?;
        let count = |s: &str| c["leads"][s].as_u64().unwrap_or(0);
        let done = count("done") + count("exhausted") + count("dnc") + count("canceled");
        let message = format!(
            "{} in flight, {} waiting to retry, {} not started",
            count("dialing"),
            count("scheduled"),
            count("pending")
        );
        if plain {
            let line = format!("{done}/{total} leads done · {message}");
            if line != last_line {
                println!("  {:>5.1} s  {line}", started.elapsed().as_secs_f64());
                last_line = line;
            }
        }
        bar.set_position(done);
        bar.set_message(message);
        if c["state"] == "finished" || done >= total {
            break;
        }
        if started.elapsed() > Duration::from_secs(300) {
            bar.abandon();
            bail!("the demo campaign did not finish within 5 minutes");
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    bar.finish_with_message(format!("finished in {:.0} s", started.elapsed().as_secs_f64()));

    let attempts = api.get(&format!("/campaigns/{id}/attempts?limit=1000")).await?;
    let attempts = attempts.as_array().cloned().unwrap_or_default();
    let mut by_result: BTreeMap<String, usize> = BTreeMap::new();
    let mut latencies = Vec::new();
    for a in &attempts {
        *by_result
            .entry(a["result"].as_str().unwrap_or("(none)").to_owned())
            .or_default() += 1;
        let at = |k: &str| a[k].as_str().and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok());
        if let (Some(answered), Some(bridged)) = (at("answered_at"), at("bridged_at")) {
            latencies.push((bridged - answered).num_microseconds().unwrap_or(0) as f64 / 1000.0);
        }
    }
    let c = api.get(&format!("/campaigns/{id}")).await?;
    println!("\nleads by state: {}", c["leads"]);
    println!("{} attempts by result:", attempts.len());
    for (result, n) in &by_result {
        println!("  {result:<16} {n:>4}");
    }
    latencies.sort_by(f64::total_cmp);
    if !latencies.is_empty() {
        let p = |q: f64| latencies[((latencies.len() as f64 - 1.0) * q).round() as usize];
        println!(
            "connect latency (answer → with operator) over {} calls: p50 {:.1} ms, p99 {:.1} ms",
            latencies.len(),
            p(0.5),
            p(0.99)
        );
    }
    // The supervisor's report (GET /reports/campaigns), with billed seconds from Asterisk's CDRs.
    let report = api.get(&format!("/reports/campaigns?campaign_id={id}")).await?;
    if let Some(r) = report["rows"].get(0) {
        let pct = |k: &str| r[k].as_f64().map_or("-".to_owned(), |v| format!("{:.0} %", v * 100.0));
        let secs = |k: &str| r[k].as_f64().map_or("-".to_owned(), |v| format!("{v:.1} s"));
        println!(
            "report: {} dials, answer rate {}, abandon rate {}, avg talk {}, avg ring {}, conversion {}, billed {} s (CDR)",
            r["dials"],
            pct("answer_rate"),
            pct("abandon_rate"),
            secs("avg_talk_secs"),
            secs("avg_ring_secs"),
            pct("conversion"),
            r["billed_secs"]
        );
    }
    for op in &ids {
        let _ = api
            .call(reqwest::Method::DELETE, &format!("/operators/{op}/session"), None)
            .await;
    }
    println!(
        "campaign {id}: every attempt and its timeline is at {}/attempts/{{id}}",
        api.base
    );
    Ok(())
}

/// Spreads the mix over the leads in proportion to the weights.
fn mix_for(i: usize, leads: usize) -> (u8, u8, u8, &'static str, usize) {
    let total: usize = MIX.iter().map(|m| m.4).sum();
    let slot = i * total / leads.max(1);
    let mut acc = 0;
    for m in MIX {
        acc += m.4;
        if slot < acc {
            return m;
        }
    }
    MIX[0]
}
