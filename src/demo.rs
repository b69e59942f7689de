//! `obzvon demo`: a few real calls through the test bed, each customer bridged to an operator
//! phone, reported live and recorded as attempts (with their transition log) in PostgreSQL.
//! It is the README's first command until campaigns run end to end; it uses the same ARI
//! client, event stream, outcome mapping and schema as the dialer.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use chrono::Utc;
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

use crate::ari::models::ChannelState;
use crate::ari::{self, AriClient, BridgeType, Event, EventKind, EventStream, HangupReason, Originate};
use crate::calls::{classify_unanswered, AttemptResult, AttemptStatus};
use crate::config::Settings;
use crate::ids::AttemptId;

pub struct DemoCall {
    pub label: &'static str,
    pub number: String,
}

/// The default call list: one of each behaviour the test-bed trunk plays.
pub fn default_calls() -> Vec<DemoCall> {
    vec![
        DemoCall {
            label: "answers, talks 3 s",
            number: "+79160010103".into(),
        },
        DemoCall {
            label: "busy",
            number: "+79160020100".into(),
        },
        DemoCall {
            label: "never answers",
            number: "+79160030000".into(),
        },
        DemoCall {
            label: "trunk congested (503)",
            number: "+79160040000".into(),
        },
        DemoCall {
            label: "answers, hangs up at once",
            number: "+79160050100".into(),
        },
    ]
}

struct Outcome {
    status: AttemptStatus,
    result: AttemptResult,
    cause: i32,
    sip: Option<i32>,
    talk: Option<Duration>,
    connect: Option<Duration>,
}

pub async fn run(
    settings: &Settings,
    operator_endpoint: &str,
    trunk: &str,
    dial_timeout_secs: u32,
) -> anyhow::Result<()> {
    let pool = crate::db::connect(&settings.database)
        .await
        .context("cannot reach PostgreSQL")?;
    let pending = crate::db::pending_migrations(&pool).await?;
    if !pending.is_empty() {
        bail!("run `obzvon migrate` first ({} pending migrations)", pending.len());
    }
    let app = format!("{}-demo", settings.ari.app);
    let ari = AriClient::new(
        &settings.ari.url,
        &settings.ari.username,
        settings.ari.password.clone(),
        &app,
    )?;
    let info = ari
        .asterisk_info()
        .await
        .context("Asterisk does not answer on ARI; start the test bed")?;
    let version = info.system.map(|s| s.version).unwrap_or_default();
    let cancel = CancellationToken::new();
    let (mut stream, _task) = ari::ws::spawn(ari.clone(), settings.ari_stream(), cancel.clone());
    tokio::time::timeout(Duration::from_secs(10), stream.state.wait_for(|s| s.is_connected()))
        .await
        .context("ARI websocket did not connect")??;

    let calls = default_calls();
    println!(
        "obzvon demo: Asterisk {version}, {} calls, operator {operator_endpoint}, trunk {trunk}\n",
        calls.len()
    );
    let mut outcomes = Vec::new();
    for (i, call) in calls.iter().enumerate() {
        println!("[{}/{}] {} ({})", i + 1, calls.len(), mask(&call.number), call.label);
        let outcome = one_call(
            &pool,
            &ari,
            &mut stream,
            call,
            operator_endpoint,
            trunk,
            dial_timeout_secs,
        )
        .await?;
        outcomes.push((call, outcome));
        println!();
    }
    cancel.cancel();

    println!(
        "{:<28} {:<12} {:<15} {:>6} {:>5} {:>11} {:>7}",
        "call", "status", "result", "cause", "sip", "connect ms", "talk s"
    );
    for (call, o) in &outcomes {
        println!(
            "{:<28} {:<12} {:<15} {:>6} {:>5} {:>11} {:>7}",
            call.label,
            o.status.as_str(),
            o.result.as_str(),
            o.cause,
            o.sip.map_or("-".to_owned(), |s| s.to_string()),
            o.connect.map_or("-".to_owned(), |d| d.as_millis().to_string()),
            o.talk.map_or("-".to_owned(), |d| format!("{:.1}", d.as_secs_f64())),
        );
    }
    let mut by_result: BTreeMap<&str, usize> = BTreeMap::new();
    for (_, o) in &outcomes {
        *by_result.entry(o.result.as_str()).or_default() += 1;
    }
    let summary: Vec<String> = by_result.iter().map(|(r, n)| format!("{r}: {n}")).collect();
    println!("\nby result: {}", summary.join(", "));
    println!("attempts and their timelines are in PostgreSQL (tables attempts, attempt_transitions)");
    Ok(())
}

async fn one_call(
    pool: &PgPool,
    ari: &AriClient,
    stream: &mut EventStream,
    call: &DemoCall,
    operator_endpoint: &str,
    trunk: &str,
    dial_timeout_secs: u32,
) -> anyhow::Result<Outcome> {
    let attempt = AttemptId::new();
    let channel = attempt.channel_id();
    let started = Instant::now();
    record(pool, attempt, None, AttemptStatus::Init, None, &call.number).await?;
    let mut variables = BTreeMap::new();
    variables.insert("CDR(userfield)".to_owned(), attempt.to_string());
    ari.originate(&Originate {
        endpoint: trunk.replace("{number}", &call.number),
        channel_id: Some(channel.clone()),
        app_args: vec!["demo".to_owned(), attempt.to_string()],
        caller_id: Some("\"obzvon demo\" <74950000000>".to_owned()),
        timeout_secs: Some(dial_timeout_secs),
        variables,
        ..Default::default()
    })
    .await?;
    sqlx::query("UPDATE attempts SET dialed_at = now() WHERE id = $1")
        .bind(attempt.as_uuid())
        .execute(pool)
        .await?;
    step(started, "dialing");

    let mut status = AttemptStatus::Init;
    let mut answered_at = None;
    let mut connect = None;
    let mut operator_channel = None;
    let bridge_id = format!("demo-{attempt}");
    loop {
        let event = next_event(stream, Duration::from_secs(u64::from(dial_timeout_secs) + 60)).await?;
        let for_customer = event.channel_id() == Some(channel.as_str());
        match &event.kind {
            EventKind::ChannelStateChange(c)
                if for_customer && c.channel.state == ChannelState::Ringing && status == AttemptStatus::Init =>
            {
                record(pool, attempt, Some(status), AttemptStatus::Ringing, None, &call.number).await?;
                status = AttemptStatus::Ringing;
                step(started, "ringing");
            }
            EventKind::StasisStart(s) if for_customer => {
                answered_at = Some(Instant::now());
                record(
                    pool,
                    attempt,
                    Some(status),
                    AttemptStatus::InProgress,
                    None,
                    &call.number,
                )
                .await?;
                status = AttemptStatus::InProgress;
                step(started, &format!("answered ({})", s.channel.name));
                let op = format!("{attempt}-op");
                ari.create_bridge(&bridge_id, BridgeType::Mixing, "demo").await?;
                ari.originate(&Originate {
                    endpoint: operator_endpoint.to_owned(),
                    channel_id: Some(op.clone()),
                    app_args: vec!["demo-operator".to_owned()],
                    timeout_secs: Some(10),
                    ..Default::default()
                })
                .await?;
                operator_channel = Some(op);
            }
            EventKind::StasisStart(s) if Some(s.channel.id.as_str()) == operator_channel.as_deref() => {
                ari.add_channels(&bridge_id, &[&channel, &s.channel.id]).await?;
            }
            EventKind::ChannelEnteredBridge(b)
                if b.bridge.id == bridge_id && b.bridge.channels.len() == 2 && connect.is_none() =>
            {
                connect = answered_at.map(|a| a.elapsed());
                sqlx::query("UPDATE attempts SET bridged_at = now(), bridge_id = $2 WHERE id = $1")
                    .bind(attempt.as_uuid())
                    .bind(&bridge_id)
                    .execute(pool)
                    .await?;
                step(
                    started,
                    &format!(
                        "bridged to {operator_endpoint} ({} ms after answer)",
                        connect.unwrap_or_default().as_millis()
                    ),
                );
            }
            EventKind::ChannelDestroyed(d) if for_customer => {
                if let Some(op) = &operator_channel {
                    let _ = ari.hangup(op, HangupReason::Normal).await;
                    let _ = ari.destroy_bridge(&bridge_id).await;
                }
                let (final_status, result) = if answered_at.is_some() {
                    (AttemptStatus::Completed, AttemptResult::Success)
                } else {
                    (AttemptStatus::Failed, classify_unanswered(d.cause, d.tech_cause))
                };
                sqlx::query(
                    "UPDATE attempts SET hangup_cause = $2, hangup_cause_txt = $3, sip_code = $4, channel_id = $5 WHERE id = $1",
                )
                .bind(attempt.as_uuid())
                .bind(d.cause)
                .bind(&d.cause_txt)
                .bind(d.tech_cause)
                .bind(&channel)
                .execute(pool)
                .await?;
                record(pool, attempt, Some(status), final_status, Some(result), &call.number).await?;
                let sip = d.tech_cause.map(|c| format!(", SIP {c}")).unwrap_or_default();
                step(
                    started,
                    &format!(
                        "ended: cause {} {}{sip} -> {final_status} / {result}",
                        d.cause, d.cause_txt
                    ),
                );
                return Ok(Outcome {
                    status: final_status,
                    result,
                    cause: d.cause,
                    sip: d.tech_cause,
                    talk: answered_at.map(|a| a.elapsed()),
                    connect,
                });
            }
            _ => {}
        }
    }
}

async fn next_event(stream: &mut EventStream, limit: Duration) -> anyhow::Result<Event> {
    match tokio::time::timeout(limit, stream.events.recv()).await {
        Ok(Some(e)) => Ok(e),
        Ok(None) => bail!("ARI event stream ended"),
        Err(_) => bail!("no ARI event for {} s; is the SIPp trunk running?", limit.as_secs()),
    }
}

/// Moves the attempt to `to` and appends the transition, in one transaction.
async fn record(
    pool: &PgPool,
    attempt: AttemptId,
    from: Option<AttemptStatus>,
    to: AttemptStatus,
    result: Option<AttemptResult>,
    phone: &str,
) -> anyhow::Result<()> {
    let mut tx = pool.begin().await?;
    if from.is_none() {
        sqlx::query("INSERT INTO attempts (id, phone_e164, kind, status, instance) VALUES ($1, $2, 'click-to-call', $3, 'demo')")
            .bind(attempt.as_uuid())
            .bind(phone)
            .bind(to.as_str())
            .execute(&mut *tx)
            .await
            .context("the number is already in a live call")?;
    } else {
        let stamp = match to {
            AttemptStatus::Ringing => "ringing_at",
            AttemptStatus::InProgress => "answered_at",
            _ => "ended_at",
        };
        sqlx::query(&format!(
            "UPDATE attempts SET status = $2, result = $3, {stamp} = now(), updated_at = now() WHERE id = $1"
        ))
        .bind(attempt.as_uuid())
        .bind(to.as_str())
        .bind(result.map(|r| r.as_str()))
        .execute(&mut *tx)
        .await?;
    }
    sqlx::query("INSERT INTO attempt_transitions (attempt_id, from_status, to_status, result) VALUES ($1, $2, $3, $4)")
        .bind(attempt.as_uuid())
        .bind(from.map(|s| s.as_str()))
        .bind(to.as_str())
        .bind(result.map(|r| r.as_str()))
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(())
}

fn step(started: Instant, what: &str) {
    println!(
        "  {:>7.3} s  {what}  ({})",
        started.elapsed().as_secs_f64(),
        Utc::now().format("%H:%M:%S%.3f")
    );
}

/// `+79160010103` → `+7916001****`: no full numbers in the output.
fn mask(number: &str) -> String {
    let keep = number.len().saturating_sub(4);
    format!("{}****", &number[..keep])
}
