//! The scheduler: decides how many calls each running campaign places now (progressive or
//! predictive pacing, concurrency cap, calls per second) and claims that many due leads.
//! Claiming is one transaction: due leads are locked with `FOR UPDATE SKIP LOCKED` (so several
//! obzvon instances can share the database), checked against the DNC list, the calling window
//! and the one-live-call-per-number rule, and their attempts are inserted before it commits. It
//! wakes when the engine reports capacity, and polls as a fallback.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use chrono_tz::Tz;
use sqlx::{PgPool, Postgres, Transaction};
use tokio_util::sync::CancellationToken;

use super::pacing::{calls_to_place, effective_ratio, PacingInput, RateLimiter};
use super::predictive::{self, Busy, Decision, Predictive, Priors, View, WindowRate};
use super::share::{share, Member, Shares, Taker};
use crate::calls::engine::core::{CampaignLoad, PacingOutcome};
use crate::calls::engine::{Claimed, EngineHandle, Offer, Snapshot};
use crate::campaigns::spec::{AbandonWindow, CampaignSpec, PacingMode};
use crate::campaigns::store::{self as campaigns, Campaign};
use crate::compliance::{self, Effective, Skip, SkipRule};
use crate::ids::{AttemptId, CampaignId, LeadId, OperatorId};
use crate::leads::store::release_reservation;

const POLL: Duration = Duration::from_secs(1);

pub struct Scheduler {
    pool: PgPool,
    engine: EngineHandle,
    instance: String,
    limiters: HashMap<CampaignId, RateLimiter>,
    /// Predictive campaigns' pacers.
    pacers: HashMap<CampaignId, (Predictive, Instant)>,
    /// Abandon counts per campaign over its window (today for progressive over-dialling),
    /// re-read every few seconds; what the engine reports in between is added.
    windows: HashMap<CampaignId, (Instant, WindowRate)>,
    started: Instant,
    board: PacingBoard,
    /// Campaigns whose last claim found fewer due leads than it asked for, and when.
    dry: HashMap<CampaignId, Instant>,
    /// Which dialling campaign each logged-in operator counted for last round.
    shares: Shares,
}

/// Each predictive campaign's last pacing decision, for `/campaigns/{id}/live` and metrics.
pub type PacingBoard = Arc<std::sync::RwLock<HashMap<CampaignId, Decision>>>;

/// A campaign that found no due lead takes part in sharing operators again this long after.
const DRY_FOR: Duration = Duration::from_secs(5);
const ABANDON_RATE_REFRESH: Duration = Duration::from_secs(3);
/// A predictive campaign not running for this long forgets what its pacer learnt.
const PACER_KEPT: Duration = Duration::from_secs(3600);

/// What one claim did, for tests and logs.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ClaimReport {
    pub claimed: Vec<AttemptId>,
    pub dnc: usize,
    pub outside_window: usize,
    pub number_busy: usize,
    /// Skipped for a contact limit or a quiet period.
    pub limited: usize,
    /// Calls asked for that the campaign's calls per second or concurrency, counted over every
    /// instance, did not let through.
    pub held_by_limits: usize,
}

impl Scheduler {
    pub fn new(pool: PgPool, engine: EngineHandle, instance: String, board: PacingBoard) -> Scheduler {
        Scheduler {
            pool,
            engine,
            instance,
            limiters: HashMap::new(),
            pacers: HashMap::new(),
            windows: HashMap::new(),
            started: Instant::now(),
            board,
            dry: HashMap::new(),
            shares: Shares::new(),
        }
    }

    pub async fn run(mut self, cancel: CancellationToken) -> anyhow::Result<()> {
        let wake = self.engine.wake.clone();
        loop {
            let started = Instant::now();
            let placed = match self.tick().await {
                Ok(n) => n,
                Err(e) => {
                    tracing::error!(error = %format!("{e:#}"), "scheduler tick failed");
                    0
                }
            };
            metrics::histogram!(crate::metrics::SCHEDULER_TICK).record(started.elapsed().as_secs_f64());
            tracing::trace!(
                placed,
                duration_ms = started.elapsed().as_millis() as u64,
                "scheduler tick"
            );
            let pause = if placed > 0 {
                Duration::from_millis(50)
            } else {
                self.next_wait()
            };
            tokio::select! {
                _ = cancel.cancelled() => return Ok(()),
                _ = wake.notified() => {}
                _ = tokio::time::sleep(pause) => {}
            }
        }
    }

    fn next_wait(&self) -> Duration {
        self.limiters
            .values()
            .map(RateLimiter::wait_for_one)
            .filter(|d| !d.is_zero())
            .min()
            .unwrap_or(POLL)
            .min(POLL)
    }

    /// One round over the running campaigns; returns how many calls it placed.
    pub async fn tick(&mut self) -> anyhow::Result<usize> {
        campaigns::finish_completed(&self.pool).await?;
        let running = campaigns::running(&self.pool).await?;
        if running.is_empty() {
            return Ok(0);
        }
        let Some(snapshot) = self.engine.snapshot().await else {
            return Ok(0);
        };
        let mut placed = 0;
        let mut offered = HashSet::new();
        self.learn(&snapshot, &running);
        let shares = self.share(&running, &snapshot);
        for campaign in running {
            let spec = Arc::new(campaign.spec.clone());
            if spec.pacing.mode == PacingMode::Preview {
                placed += self.offer_previews(&campaign, &spec, &snapshot, &mut offered).await?;
                continue;
            }
            let load = snapshot.campaigns.get(&campaign.id).cloned().unwrap_or_default();
            let counts_for = |id: &OperatorId| shares.get(id).is_some_and(|c| c.campaign == campaign.id);
            let eligible = snapshot.ready.iter().filter(|r| counts_for(&r.id)).count();
            let (wanted, slot) = if spec.pacing.mode == PacingMode::Predictive {
                let busy: Vec<_> = snapshot.busy.iter().filter(|b| counts_for(&b.id)).collect();
                self.predictive(&campaign, &spec, &load, eligible, &busy).await?
            } else {
                self.progressive(&campaign, &spec, &load, eligible).await?
            };
            if wanted == 0 {
                continue;
            }
            let now = Instant::now();
            let limiter = self
                .limiters
                .entry(campaign.id)
                .or_insert_with(|| RateLimiter::new(spec.calls_per_second, now));
            limiter.set_rate(spec.calls_per_second);
            let allowed = limiter.take(wanted, now);
            if allowed == 0 {
                continue;
            }
            let slot = if allowed < wanted {
                format!("{slot}; {allowed} within {} calls per second", spec.calls_per_second)
            } else {
                slot
            };
            let (claims, report) = claim(
                &self.pool,
                &campaign,
                allowed,
                Limits::Shared,
                &self.instance,
                Utc::now(),
                &slot,
            )
            .await?;
            if spec.pacing.mode == PacingMode::Predictive {
                let clock = self.clock();
                if let Some((pacer, _)) = self.pacers.get_mut(&campaign.id) {
                    pacer.dialled(claims.len(), clock);
                }
            }
            // Fewer due leads than asked for (not calls held by the campaign-wide limits).
            if claims.len() + report.held_by_limits < allowed {
                self.dry.insert(campaign.id, now);
            } else {
                self.dry.remove(&campaign.id);
            }
            if report.held_by_limits > 0 {
                tracing::debug!(campaign.id = %campaign.id, held = report.held_by_limits,
                    "calls held by the campaign's calls per second or concurrency across instances");
            }
            if report.dnc + report.outside_window + report.number_busy + report.limited > 0 {
                tracing::debug!(campaign.id = %campaign.id, ?report, "leads skipped at claim");
            }
            placed += claims.len();
            for mut c in claims {
                c.spec = spec.clone();
                self.engine.dial(c);
            }
        }
        self.shares = shares;
        let live: HashSet<CampaignId> = self.board_keys();
        self.board
            .write()
            .expect("pacing board")
            .retain(|id, _| live.contains(id));
        Ok(placed)
    }

    /// Which dialling campaign each logged-in operator counts for this round (`dialer::share`),
    /// from the last round's share.
    fn share(&mut self, running: &[Campaign], snapshot: &Snapshot) -> Shares {
        self.dry.retain(|_, at| at.elapsed() < DRY_FOR);
        let takers: Vec<Taker> = running
            .iter()
            .filter(|c| c.spec.pacing.mode != PacingMode::Preview)
            .map(|c| Taker {
                id: c.id,
                spec: &c.spec,
                dry: self.dry.contains_key(&c.id),
            })
            .collect();
        let ready = snapshot.ready.iter().map(|r| Member {
            id: r.id,
            skills: &r.skills,
            busy: false,
        });
        let busy = snapshot.busy.iter().map(|b| Member {
            id: b.id,
            skills: &b.skills,
            busy: true,
        });
        share(&takers, ready.chain(busy), &self.shares)
    }

    /// Progressive pacing: ready operators × ratio, minus calls ringing; with the number of
    /// calls, a sentence saying how it was reached.
    async fn progressive(
        &mut self,
        campaign: &Campaign,
        spec: &CampaignSpec,
        load: &CampaignLoad,
        eligible: usize,
    ) -> anyhow::Result<(usize, String)> {
        let ratio = if spec.pacing.ratio > 1.0 {
            let rate = self.window(campaign.id, spec.pacing.abandon_window).await?.rate();
            let ratio = effective_ratio(spec.pacing.ratio, rate, spec.max_abandon_rate);
            if ratio < spec.pacing.ratio {
                tracing::debug!(campaign.id = %campaign.id, ?rate, cap = spec.max_abandon_rate,
                        "abandon cap reached; dialling one call per ready operator");
            }
            ratio
        } else {
            spec.pacing.ratio
        };
        let calls = calls_to_place(PacingInput {
            ready_operators: eligible,
            ratio,
            dialing: load.dialing,
            live: load.live,
            max_concurrent: spec.max_concurrent_calls as usize,
        });
        let capped = if ratio < spec.pacing.ratio {
            " (abandon cap reached: ratio 1)"
        } else {
            ""
        };
        let slot = format!(
            "progressive: {eligible} ready operator(s) × ratio {ratio}{capped}, {} dialling, {} live of {} at most: {calls} call(s)",
            load.dialing, load.live, spec.max_concurrent_calls
        );
        Ok((calls, slot))
    }

    /// Predictive pacing (`dialer::predictive`), fed the engine's view of the campaign.
    async fn predictive(
        &mut self,
        campaign: &Campaign,
        spec: &CampaignSpec,
        load: &CampaignLoad,
        eligible: usize,
        busy: &[&crate::calls::engine::core::BusyOperator],
    ) -> anyhow::Result<(usize, String)> {
        let window = self.window(campaign.id, spec.pacing.abandon_window).await?;
        let now = self.clock();
        let pacer = self.pacer(campaign.id, spec);
        let as_busy = |b: &&crate::calls::engine::core::BusyOperator| Busy {
            elapsed: b.elapsed.as_secs_f64(),
            remaining: None,
        };
        let talking: Vec<Busy> = busy.iter().filter(|b| !b.wrapping).map(as_busy).collect();
        let wrapping: Vec<Busy> = busy.iter().filter(|b| b.wrapping).map(as_busy).collect();
        let ringing: Vec<f64> = load.ringing.iter().map(|d| d.as_secs_f64()).collect();
        let view = View {
            ready: eligible,
            waiting: load.waiting,
            talking: &talking,
            wrapping: &wrapping,
            ringing: &ringing,
            room: (spec.max_concurrent_calls as usize).saturating_sub(load.live),
            window,
        };
        let decision = pacer.decide(&view, now);
        record_decision(campaign.id, &decision, &window, pacer_target(spec));
        if decision.fallback {
            tracing::debug!(campaign.id = %campaign.id, ?window, target = spec.pacing.target_abandon_rate,
                "abandon target reached over the window; one call per ready operator");
        }
        self.board.write().expect("pacing board").insert(campaign.id, decision);
        let slot = format!(
            "predictive: dial level {:.2}, {:.1} operator(s) predicted free, live-answer rate {:.2}, abandon {} of {} answered over the window, target {}{}: {} call(s)",
            decision.dial_level,
            decision.predicted_free,
            decision.live_rate,
            window.abandoned,
            window.answered,
            pacer_target(spec),
            if decision.fallback { " (target reached: one call per ready operator)" } else { "" },
            decision.calls
        );
        Ok((decision.calls, slot))
    }

    fn clock(&self) -> f64 {
        self.started.elapsed().as_secs_f64()
    }

    fn pacer(&mut self, campaign: CampaignId, spec: &CampaignSpec) -> &mut Predictive {
        let params = pacing_params(spec);
        let (pacer, seen) = self.pacers.entry(campaign).or_insert_with(|| {
            (
                Predictive::new(params, Priors::with_wrap_up(f64::from(spec.wrap_up_secs))),
                Instant::now(),
            )
        });
        pacer.set_params(params);
        *seen = Instant::now();
        pacer
    }

    /// Campaigns whose last decision stays on the board: those running now.
    fn board_keys(&self) -> HashSet<CampaignId> {
        self.pacers
            .iter()
            .filter(|(_, (_, seen))| seen.elapsed() < POLL * 5)
            .map(|(id, _)| *id)
            .collect()
    }

    /// Hands what the engine's calls taught to their campaigns' pacers. A campaign paused for
    /// a while keeps what it learnt; one not running for `PACER_KEPT` starts afresh.
    fn learn(&mut self, snapshot: &Snapshot, running: &[Campaign]) {
        let now = self.clock();
        self.pacers.retain(|_, (_, seen)| seen.elapsed() < PACER_KEPT);
        for (campaign, outcome) in &snapshot.learnt {
            let Some(spec) = running.iter().find(|c| c.id == *campaign).map(|c| &c.spec) else {
                continue;
            };
            if let PacingOutcome::Connected { abandoned } = outcome {
                if let Some((_, w)) = self.windows.get_mut(campaign) {
                    w.answered += 1;
                    w.abandoned += u64::from(*abandoned);
                }
            }
            self.pacer(*campaign, spec).observe(*outcome, now);
        }
    }

    /// The campaign's abandon counts over its window: from the database every few seconds,
    /// with what the engine reported since.
    async fn window(&mut self, campaign: CampaignId, window: AbandonWindow) -> Result<WindowRate, sqlx::Error> {
        if let Some((at, w)) = self.windows.get(&campaign) {
            if at.elapsed() < ABANDON_RATE_REFRESH {
                return Ok(*w);
            }
        }
        let w = crate::reports::abandon_counts(&self.pool, campaign, window).await?;
        self.windows.insert(campaign, (Instant::now(), w));
        Ok(w)
    }
}

fn pacing_params(spec: &CampaignSpec) -> predictive::Params {
    predictive::Params {
        target_abandon_rate: pacer_target(spec),
        connect_limit_secs: spec.connect_limit_ms as f64 / 1000.0,
        dial_timeout_secs: f64::from(spec.dial_timeout_secs),
        max_ringing_per_operator: MAX_RINGING_PER_OPERATOR,
    }
}

/// Whatever the model says, no more calls ringing than this per operator who may take them.
const MAX_RINGING_PER_OPERATOR: f64 = 10.0;

fn pacer_target(spec: &CampaignSpec) -> f64 {
    spec.pacing.target_abandon_rate.min(spec.max_abandon_rate)
}

fn record_decision(campaign: CampaignId, d: &Decision, window: &WindowRate, target: f64) {
    use crate::metrics as m;
    let c = campaign.to_string();
    metrics::gauge!(m::PACING_TARGET, "campaign" => c.clone()).set(target);
    metrics::gauge!(m::PACING_DIAL_LEVEL, "campaign" => c.clone()).set(d.dial_level);
    metrics::gauge!(m::PACING_LIVE_RATE, "campaign" => c.clone()).set(d.live_rate);
    metrics::gauge!(m::PACING_PREDICTED_FREE, "campaign" => c.clone()).set(d.predicted_free);
    metrics::gauge!(m::PACING_FALLBACK, "campaign" => c.clone()).set(f64::from(u8::from(d.fallback)));
    metrics::gauge!(m::PACING_WINDOW_ABANDON_RATE, "campaign" => c).set(window.rate().unwrap_or(0.0));
}

impl Scheduler {
    /// Preview: each eligible ready operator without an offer gets the next due lead, reserved
    /// for them for the campaign's reservation time.
    async fn offer_previews(
        &mut self,
        campaign: &Campaign,
        spec: &Arc<CampaignSpec>,
        snapshot: &Snapshot,
        offered: &mut HashSet<OperatorId>,
    ) -> anyhow::Result<usize> {
        let mut count = 0;
        for op in &snapshot.ready {
            if !spec.may_take(op.id, &op.skills) || offered.contains(&op.id) {
                continue;
            }
            let until = Utc::now() + chrono::Duration::seconds(i64::from(spec.preview.reservation_secs));
            let Some((lead, phone)) = reserve(&self.pool, campaign, op.id, until, Utc::now()).await? else {
                break;
            };
            offered.insert(op.id);
            let offer = Offer {
                operator: op.id,
                lead,
                campaign: campaign.id,
                spec: spec.clone(),
                phone,
            };
            if self.engine.offer(offer).await {
                count += 1;
            } else {
                release_reservation(&mut *self.pool.acquire().await?, Some(lead), op.id).await?;
            }
        }
        Ok(count)
    }
}

/// Reserves the next due lead of a preview campaign for `operator` until `until`.
pub async fn reserve(
    pool: &PgPool,
    campaign: &Campaign,
    operator: OperatorId,
    until: DateTime<Utc>,
    now: DateTime<Utc>,
) -> Result<Option<(LeadId, String)>, sqlx::Error> {
    let mut tx = pool.begin().await?;
    let mut report = ClaimReport::default();
    let chosen = select_due(&mut tx, campaign, 1, now, &mut report).await?;
    let Some(Chosen { lead, .. }) = chosen.into_iter().next() else {
        tx.commit().await?;
        return Ok(None);
    };
    sqlx::query("UPDATE leads SET reserved_by = $2, reserved_until = $3, updated_at = now() WHERE id = $1")
        .bind(lead.id)
        .bind(operator)
        .bind(until)
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(Some((lead.id, lead.phone_e164)))
}

#[derive(sqlx::FromRow)]
struct Candidate {
    id: LeadId,
    phone_e164: String,
    timezone: Option<String>,
    callback_operator_id: Option<OperatorId>,
    external_id: Option<String>,
    on_dnc: bool,
    number_busy: bool,
    /// The number's calls of the last 31 days (read only when a limit needs them).
    dialled: Option<Vec<DateTime<Utc>>>,
    answered: Option<Vec<DateTime<Utc>>>,
    last_abandon: Option<DateTime<Utc>>,
    last_machine: Option<DateTime<Utc>>,
}

/// A lead chosen to be dialled now, and why it may be.
struct Chosen {
    lead: Candidate,
    checks: Vec<String>,
}

/// A lead whose number is in a live call elsewhere is looked at again this much later.
const NUMBER_BUSY_RETRY: chrono::Duration = chrono::Duration::seconds(30);

/// Locks up to `n` due leads of `campaign` (in `tx`) that may be called now, checking each
/// against the DNC list, the one-live-call-per-number rule, the calling hours (with the
/// profile's and holidays) and the number's contact limits and quiet periods. A lead that may
/// not be called is moved on — `dnc`, or rescheduled to when it may — and the skip is recorded
/// with its reason (`lead_skips`).
async fn select_due(
    tx: &mut Transaction<'_, Postgres>,
    campaign: &Campaign,
    n: usize,
    now: DateTime<Utc>,
    report: &mut ClaimReport,
) -> Result<Vec<Chosen>, sqlx::Error> {
    let spec = &campaign.spec;
    let rules = Effective::of(spec);
    // The number's history is read only for campaigns with limits: the plain claim stays as
    // fast as before.
    let history = if rules.needs_history() {
        "h.dialled, h.answered, h.last_abandon, h.last_machine"
    } else {
        "NULL::timestamptz[] AS dialled, NULL::timestamptz[] AS answered, NULL::timestamptz AS last_abandon, NULL::timestamptz AS last_machine"
    };
    let history_join = if rules.needs_history() {
        format!(
            "LEFT JOIN LATERAL ({}) h ON true",
            compliance::store::history_columns("l.phone_e164", "$4")
        )
    } else {
        String::new()
    };
    // DNC and "number already in a live call" are checked for the rows the scan returns only.
    let candidates: Vec<Candidate> = sqlx::query_as(&format!(
        "SELECT l.id, l.phone_e164, l.timezone, l.callback_operator_id, l.external_id,
                EXISTS (SELECT 1 FROM dnc d WHERE d.phone_e164 = l.phone_e164
                        AND (d.campaign_id IS NULL OR d.campaign_id = l.campaign_id)) AS on_dnc,
                EXISTS (SELECT 1 FROM attempts a WHERE a.phone_e164 = l.phone_e164
                        AND a.status IN {live}) AS number_busy,
                {history}
         FROM leads l {history_join}
         WHERE l.campaign_id = $1 AND l.state IN ('pending', 'scheduled')
           AND (l.next_attempt_at IS NULL OR l.next_attempt_at <= $2)
           AND (l.reserved_until IS NULL OR l.reserved_until <= $2)
         ORDER BY l.priority DESC, l.next_attempt_at NULLS FIRST, l.created_at, l.id
         LIMIT $3 FOR UPDATE OF l SKIP LOCKED",
        live = crate::calls::AttemptStatus::LIVE_SQL
    ))
    .bind(campaign.id)
    .bind(now)
    // A few spare rows cover leads skipped on the way; every row read here is locked (a
    // write), so the margin stays small. Skipped leads change state and do not come back
    // before they may be called, so the next tick claims what this one could not.
    .bind((n + 8) as i64)
    .bind(now - chrono::Duration::days(compliance::HISTORY_DAYS))
    .fetch_all(&mut **tx)
    .await?;

    let campaign_tz = spec.tz();
    let mut skips: Vec<(LeadId, Skip)> = Vec::new();
    let mut chosen: Vec<Chosen> = Vec::new();
    let mut phones_taken = HashSet::new();
    for mut c in candidates {
        if chosen.len() >= n {
            break;
        }
        let decision = decide(&mut c, &rules, campaign_tz, now, &mut phones_taken);
        match decision {
            Ok(checks) => chosen.push(Chosen { lead: c, checks }),
            Err(skip) => {
                match skip.rule {
                    SkipRule::Dnc => report.dnc += 1,
                    SkipRule::NumberBusy => report.number_busy += 1,
                    SkipRule::OutsideHours | SkipRule::Holiday => report.outside_window += 1,
                    SkipRule::ContactLimit | SkipRule::QuietPeriod => report.limited += 1,
                }
                skips.push((c.id, skip));
            }
        }
    }
    record_skips(tx, campaign.id, &skips).await?;
    Ok(chosen)
}

/// Whether one candidate may be dialled now: the checks it passed, or why not. The
/// candidate's history is used up on the way.
fn decide(
    c: &mut Candidate,
    rules: &Effective,
    campaign_tz: Tz,
    now: DateTime<Utc>,
    phones_taken: &mut HashSet<String>,
) -> Result<Vec<String>, Skip> {
    if c.on_dnc {
        return Err(Skip {
            rule: SkipRule::Dnc,
            reason: "the number is on the do-not-call list".to_owned(),
            until: None,
        });
    }
    if c.number_busy || !phones_taken.insert(c.phone_e164.clone()) {
        return Err(Skip {
            rule: SkipRule::NumberBusy,
            reason: "the number is in a live call from another campaign or a single call".to_owned(),
            until: Some(now + NUMBER_BUSY_RETRY),
        });
    }
    let tz: Tz = c
        .timezone
        .as_deref()
        .and_then(|t| t.parse().ok())
        .unwrap_or(campaign_tz);
    let mut checks = vec![
        "not on the do-not-call list".to_owned(),
        "number not in another call".to_owned(),
    ];
    checks.push(rules.check_hours(now, tz)?);
    let history = compliance::History {
        dialled: c.dialled.take().unwrap_or_default(),
        answered: c.answered.take().unwrap_or_default(),
        last_abandon: c.last_abandon,
        last_machine: c.last_machine,
    };
    checks.extend(rules.check_number(&history, now)?);
    Ok(checks)
}

/// Moves skipped leads on (DNC, or rescheduled to when they may be called) and records why.
async fn record_skips(
    tx: &mut Transaction<'_, Postgres>,
    campaign: CampaignId,
    skips: &[(LeadId, Skip)],
) -> Result<(), sqlx::Error> {
    if skips.is_empty() {
        return Ok(());
    }
    let ids: Vec<LeadId> = skips.iter().map(|(id, _)| *id).collect();
    let rules: Vec<&str> = skips.iter().map(|(_, s)| s.rule.as_str()).collect();
    let reasons: Vec<&str> = skips.iter().map(|(_, s)| s.reason.as_str()).collect();
    let until: Vec<Option<DateTime<Utc>>> = skips.iter().map(|(_, s)| s.until).collect();
    sqlx::query(
        "WITH s AS (SELECT * FROM UNNEST($1::uuid[], $2::text[], $3::text[], $4::timestamptz[])
                        AS u(id, rule, reason, until)),
         moved AS (
             UPDATE leads l SET state = CASE WHEN s.rule = 'dnc' THEN 'dnc' ELSE 'scheduled' END,
                 next_attempt_at = CASE WHEN s.rule = 'dnc' THEN NULL ELSE s.until END, updated_at = now()
             FROM s WHERE l.id = s.id
         )
         INSERT INTO lead_skips (lead_id, campaign_id, rule, reason, until)
         SELECT s.id, $5, s.rule, s.reason, s.until FROM s",
    )
    .bind(&ids)
    .bind(&rules)
    .bind(&reasons)
    .bind(&until)
    .bind(campaign)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// How many of `n` calls the campaign's own limits let through now, counted over every
/// instance sharing the database: its calls-per-second budget (a token bucket in
/// `campaign_dial_tokens`, refilled at `calls_per_second` up to one second's worth) and its
/// `max_concurrent_calls` less the attempts live anywhere. The bucket's row stays locked until
/// `tx` ends, so claims of one campaign from several boxes take turns and see each other's
/// calls. Each instance paces with its own rate limiter as well; this is the campaign-wide
/// bound. An attempt whose box died counts as live until that box settles it.
async fn within_shared_limits(
    tx: &mut Transaction<'_, Postgres>,
    campaign: &Campaign,
    n: usize,
    report: &mut ClaimReport,
) -> Result<usize, sqlx::Error> {
    let spec = &campaign.spec;
    let burst = spec.calls_per_second.max(1.0);
    let (tokens, live): (f64, i64) = sqlx::query_as(&format!(
        "WITH bucket AS (
             INSERT INTO campaign_dial_tokens AS b (campaign_id, tokens, at) VALUES ($1, $2, clock_timestamp())
             ON CONFLICT (campaign_id) DO UPDATE SET
                 tokens = least($2, b.tokens + $3 * greatest(0, extract(epoch FROM clock_timestamp() - b.at))),
                 at = clock_timestamp()
             RETURNING tokens
         )
         SELECT (SELECT tokens FROM bucket),
                (SELECT count(*) FROM attempts WHERE campaign_id = $1 AND status IN {live})",
        live = crate::calls::AttemptStatus::LIVE_SQL
    ))
    .bind(campaign.id)
    .bind(burst)
    .bind(spec.calls_per_second)
    .fetch_one(&mut **tx)
    .await?;
    let by_rate = tokens.max(0.0).floor() as usize;
    let by_concurrency = (spec.max_concurrent_calls as usize).saturating_sub(live.max(0) as usize);
    let allowed = n.min(by_rate).min(by_concurrency);
    report.held_by_limits = n - allowed;
    Ok(allowed)
}

/// Spends `calls` of the campaign's calls-per-second tokens (its bucket row is locked by
/// `within_shared_limits` in the same transaction).
async fn spend_tokens(
    tx: &mut Transaction<'_, Postgres>,
    campaign: CampaignId,
    calls: usize,
) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE campaign_dial_tokens SET tokens = tokens - $2 WHERE campaign_id = $1")
        .bind(campaign)
        .bind(calls as f64)
        .execute(&mut **tx)
        .await?;
    Ok(())
}

/// Whether a claim is held to the campaign's calls per second and concurrency counted over
/// every instance.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Limits {
    /// The scheduler's claims: at most what `within_shared_limits` lets through.
    Shared,
    /// The claim machinery alone, for benchmarks of it.
    Off,
}

/// Claims up to `n` due leads of `campaign` and creates their attempts (`init`), in one
/// transaction (see `within_shared_limits` for how many may be, and `select_due` for what is
/// skipped on the way). `slot` says why pacing placed these calls; each attempt records it
/// with the checks its lead passed.
pub async fn claim(
    pool: &PgPool,
    campaign: &Campaign,
    n: usize,
    limits: Limits,
    instance: &str,
    now: DateTime<Utc>,
    slot: &str,
) -> Result<(Vec<Claimed>, ClaimReport), sqlx::Error> {
    let mut report = ClaimReport::default();
    if n == 0 {
        return Ok((Vec::new(), report));
    }
    let spec = &campaign.spec;
    let mut tx = pool.begin().await?;
    let n = match limits {
        Limits::Shared => within_shared_limits(&mut tx, campaign, n, &mut report).await?,
        Limits::Off => n,
    };
    if n == 0 {
        tx.commit().await?;
        return Ok((Vec::new(), report));
    }
    let chosen = select_due(&mut tx, campaign, n, now, &mut report).await?;

    let mut claimed = Vec::with_capacity(chosen.len());
    if !chosen.is_empty() {
        let leads: Vec<LeadId> = chosen.iter().map(|c| c.lead.id).collect();
        let attempts: Vec<AttemptId> = chosen.iter().map(|_| AttemptId::new()).collect();
        let chosen_phones: Vec<&str> = chosen.iter().map(|c| c.lead.phone_e164.as_str()).collect();
        let external_ids: Vec<Option<&str>> = chosen.iter().map(|c| c.lead.external_id.as_deref()).collect();
        let profile = spec.compliance.profile.as_str();
        let reasons: Vec<serde_json::Value> = chosen
            .iter()
            .map(|c| serde_json::json!({"pacing": slot, "profile": profile, "checks": c.checks}))
            .collect();
        // One statement: the leads become `dialing`, their attempts and first transitions exist.
        sqlx::query(
            "WITH claimed AS (
                 UPDATE leads SET state = 'dialing', attempts_count = attempts_count + 1, next_attempt_at = NULL,
                     updated_at = now() WHERE id = ANY($2)
             ), created AS (
                 INSERT INTO attempts (id, lead_id, campaign_id, phone_e164, caller_id, kind, status, instance,
                                       dial_reason)
                 SELECT u.id, u.lead, $3, u.phone, $4, 'campaign', 'init', $5, u.why
                 FROM UNNEST($1::uuid[], $2::uuid[], $6::text[], $8::jsonb[]) AS u(id, lead, phone, why)
                 RETURNING id
             ), logged AS (
                 INSERT INTO attempt_transitions (attempt_id, from_status, to_status, reason)
                 SELECT id, NULL, 'init', 'claimed by the scheduler: ' || $9 FROM created
             )
             INSERT INTO outbox (id, event_type, routing_key, attempt_id, payload, headers)
             SELECT gen_random_uuid(), 'OutboundCallInitiated', 'call.initiated', u.id,
                    jsonb_build_object('type', 'OutboundCallInitiated', 'occurredAt', now(), 'attemptId', u.id,
                        'campaignId', $3::uuid, 'leadId', u.lead, 'externalId', u.external_id, 'operatorId', NULL,
                        'correlationId', NULL, 'kind', 'campaign', 'phone', u.phone, 'status', 'init', 'result', NULL),
                    jsonb_build_object('attemptId', u.id)
             FROM UNNEST($1::uuid[], $2::uuid[], $6::text[], $7::text[]) AS u(id, lead, phone, external_id)",
        )
        .bind(&attempts)
        .bind(&leads)
        .bind(campaign.id)
        .bind(&spec.caller_id)
        .bind(instance)
        .bind(&chosen_phones)
        .bind(&external_ids)
        .bind(&reasons)
        .bind(slot)
        .execute(&mut *tx)
        .await?;
        if limits == Limits::Shared {
            spend_tokens(&mut tx, campaign.id, chosen.len()).await?;
        }
        for (Chosen { lead: c, .. }, attempt) in chosen.iter().zip(&attempts) {
            report.claimed.push(*attempt);
            claimed.push(Claimed {
                attempt: *attempt,
                lead: c.id,
                campaign: campaign.id,
                phone: c.phone_e164.clone(),
                spec: Arc::new(CampaignSpec::default()),
                preferred_operator: c.callback_operator_id,
            });
        }
    }
    tx.commit().await?;
    for c in &mut claimed {
        c.spec = Arc::new(spec.clone());
    }
    Ok((claimed, report))
}
