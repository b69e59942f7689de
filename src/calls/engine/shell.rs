//! The engine's shell: the one task that owns the [`Core`], feeds it inputs (ARI events,
//! commands, timers, the outcomes of what it asked for) and carries out its actions. ARI calls
//! run concurrently, each input's calls in order in a task of their own, so one slow request
//! holds up nothing else; state writes go to the journal; nothing here waits on PostgreSQL.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering as AtomicOrdering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use sqlx::PgPool;
use tokio::sync::{mpsc, oneshot, watch, Notify};
use tokio_util::sync::CancellationToken;

use super::core::{
    Action, AriCall, AriFail, AriOp, AriReply, Chain, Config, Core, CreateFail, Input, Now, Observation, Reply,
    ReplyTo, Report,
};
use super::journal::{Journal, Progress};
use super::{restore, EngineHandle, EngineStatus, Msg};
use crate::ari::{AriClient, AriError, ConnectionState, EventStream};
use crate::calls::store;
use crate::campaigns::CampaignSpec;
use crate::operators::store as operators;

/// What the engine needs besides its connections.
#[derive(Debug, Clone)]
pub struct EngineSettings {
    pub core: Config,
    /// Where the journal lives.
    pub journal_dir: PathBuf,
    /// How long live calls may take to finish after SIGTERM before the process exits anyway
    /// (leaving them up for the next process to adopt).
    pub drain_grace: Duration,
    /// Settings of single calls outside campaigns (the `[dialer]` section).
    pub single: CampaignSpec,
}

/// How the engine ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EngineExit {
    /// Drained: no customer call is live.
    Drained,
    /// The grace period ran out with calls still live; they stay up for the next process.
    GraceExpired { live_calls: usize },
    /// Another process took over the Stasis application.
    Replaced,
}

/// Starts the engine task. `drain` fired means SIGTERM: stop dialling, let calls finish.
pub async fn spawn(
    pool: PgPool,
    ari: AriClient,
    settings: EngineSettings,
    events: EventStream,
    drain: CancellationToken,
) -> anyhow::Result<(EngineHandle, tokio::task::JoinHandle<anyhow::Result<EngineExit>>)> {
    let instance = settings.core.instance.clone();
    // A process that drains hands the journal over when it exits: wait out its grace period.
    let lock_wait = settings.drain_grace + Duration::from_secs(30);
    let (journal, writer) = Journal::open(&settings.journal_dir, &instance, &pool, lock_wait).await?;
    let progress = journal.progress();
    let writer = tokio::spawn(writer.run());
    // What the previous run left must be in the database before it is read back.
    if !progress.caught_up(Duration::from_secs(30)).await {
        anyhow::bail!(
            "the journal of the previous run could not be applied to the database ({} entries left)",
            progress.backlog()
        );
    }
    let restored = restore::from_database(&pool, &instance, &settings.single).await?;
    let directory = restore::directory(&pool).await?;
    if !restored.legs.is_empty() || !restored.sessions.is_empty() {
        tracing::info!(
            calls = restored.legs.len(),
            sessions = restored.sessions.len(),
            "adopting what the previous run left live"
        );
    }
    let (tx, rx) = mpsc::unbounded_channel();
    let (results_tx, results) = mpsc::unbounded_channel();
    let wake = Arc::new(Notify::new());
    let (status_tx, status) = watch::channel(EngineStatus::default());
    let mut shell = Shell {
        status: status_tx,
        core: Core::new(settings.core.clone()),
        ari,
        pool,
        journal,
        progress,
        wake: wake.clone(),
        results_tx,
        replies: HashMap::new(),
        next_reply: 0,
        instance,
        chains: HashMap::new(),
        connection: Arc::new(AtomicU64::new(0)),
    };
    shell.feed(Input::Directory(directory));
    shell.feed(Input::Restore(restored));
    let task = tokio::spawn(async move {
        let exit = shell.run(rx, results, events, drain, settings.drain_grace).await;
        shell.finish(writer).await;
        exit
    });
    Ok((EngineHandle::new(tx, wake, status), task))
}

struct Shell {
    status: watch::Sender<EngineStatus>,
    core: Core,
    ari: AriClient,
    pool: PgPool,
    journal: Journal,
    progress: Arc<Progress>,
    wake: Arc<Notify>,
    results_tx: mpsc::UnboundedSender<Input>,
    replies: HashMap<u64, oneshot::Sender<Reply>>,
    next_reply: u64,
    instance: String,
    /// The worker of each chain of ARI calls that has one.
    chains: HashMap<Chain, mpsc::UnboundedSender<Vec<AriCall>>>,
    /// Counts websocket (dis)connections: a read of Asterisk's state belongs to one.
    connection: Arc<AtomicU64>,
}

impl Shell {
    async fn run(
        &mut self,
        mut commands: mpsc::UnboundedReceiver<Msg>,
        mut results: mpsc::UnboundedReceiver<Input>,
        mut events: EventStream,
        drain: CancellationToken,
        grace: Duration,
    ) -> anyhow::Result<EngineExit> {
        let mut refresh = tokio::time::interval(Duration::from_secs(30));
        let mut sync = tokio::time::interval(Duration::from_secs(1));
        let mut drain_until: Option<tokio::time::Instant> = None;
        // The state at start: if the websocket is already up, read Asterisk now.
        if events.state.borrow_and_update().is_connected() {
            self.connected();
        }
        loop {
            if self.core.replaced() {
                tracing::warn!("another obzvon process took over the Stasis application; this one stops");
                return Ok(EngineExit::Replaced);
            }
            if self.core.finished() {
                return Ok(EngineExit::Drained);
            }
            let deadline = self
                .core
                .next_deadline()
                .map(tokio::time::Instant::from_std)
                .unwrap_or_else(|| tokio::time::Instant::now() + Duration::from_secs(1));
            tokio::select! {
                biased;
                _ = drain.cancelled(), if drain_until.is_none() => {
                    tracing::info!(live_calls = self.core.live_calls(), grace_secs = grace.as_secs(),
                        "draining: no new calls; waiting for live calls to finish");
                    drain_until = Some(tokio::time::Instant::now() + grace);
                    self.feed(Input::Drain);
                }
                _ = async { tokio::time::sleep_until(drain_until.expect("guarded")).await }, if drain_until.is_some() => {
                    let live_calls = self.core.live_calls();
                    tracing::warn!(live_calls, "grace period over; live calls stay up for the next obzvon process");
                    return Ok(EngineExit::GraceExpired { live_calls });
                }
                Some(input) = results.recv() => self.feed(input),
                event = events.events.recv() => match event {
                    Some(event) => {
                        let age = (chrono::Utc::now() - event.timestamp.to_utc()).num_microseconds().unwrap_or(0);
                        metrics::histogram!(crate::metrics::ARI_EVENT_LAG).record(age.max(0) as f64 / 1e6);
                        self.feed(Input::Event(event))
                    }
                    None => anyhow::bail!("the ARI event stream ended"),
                },
                changed = events.state.changed() => {
                    if changed.is_err() {
                        anyhow::bail!("the ARI websocket task ended");
                    }
                    let state = events.state.borrow_and_update().clone();
                    match state {
                        ConnectionState::Connected { .. } => self.connected(),
                        _ => {
                            self.connection.fetch_add(1, AtomicOrdering::AcqRel);
                            self.feed(Input::AriLost)
                        }
                    }
                }
                msg = commands.recv() => match msg {
                    Some(msg) => self.on_message(msg),
                    None => anyhow::bail!("every engine handle was dropped"),
                },
                _ = tokio::time::sleep_until(deadline) => self.feed(Input::Tick),
                _ = refresh.tick() => self.refresh_directory(),
                _ = sync.tick() => {
                    self.journal.sync_in_background();
                    self.chains.retain(|_, tx| !tx.is_closed());
                    self.publish_status();
                }
            }
        }
    }

    /// Waits (bounded) for the journal to reach the database, then lets the writer go.
    async fn finish(&mut self, writer: tokio::task::JoinHandle<()>) {
        self.journal.sync();
        if !self.progress.caught_up(Duration::from_secs(10)).await {
            tracing::warn!(
                entries = self.progress.backlog(),
                "the database did not take every engine write in time; they stay in the journal for the next start"
            );
            writer.abort();
        }
    }

    fn on_message(&mut self, msg: Msg) {
        match msg {
            Msg::Snapshot(reply) => {
                let _ = reply.send(self.core.snapshot(Now::real()));
            }
            Msg::Command(make, reply) => {
                self.next_reply += 1;
                let id = self.next_reply;
                self.replies.insert(id, reply);
                self.feed(Input::Command(make(ReplyTo(id))));
            }
            Msg::Tell(command) => self.feed(Input::Command(command)),
            Msg::OperatorsChanged => self.refresh_directory(),
        }
    }

    fn connected(&mut self) {
        self.feed(Input::AriConnected);
        let ari = self.ari.clone();
        let results = self.results_tx.clone();
        let connection = self.connection.fetch_add(1, AtomicOrdering::AcqRel) + 1;
        let current = self.connection.clone();
        tokio::spawn(async move {
            // Asterisk may still be starting its HTTP side: keep trying (nothing is dialled
            // until it answers) for as long as this connection lasts.
            let mut delay = Duration::from_millis(250);
            let mut told = false;
            while current.load(AtomicOrdering::Acquire) == connection {
                match restore::from_asterisk(&ari).await {
                    Ok(view) => {
                        let _ = results.send(Input::Reconcile(view));
                        return;
                    }
                    Err(e) => {
                        if !told {
                            tracing::warn!(error = %e, "could not read Asterisk's channels; no calls are placed until it answers");
                            told = true;
                        }
                        tokio::time::sleep(delay).await;
                        delay = (delay * 2).min(Duration::from_secs(5));
                    }
                }
            }
        });
    }

    fn refresh_directory(&mut self) {
        let pool = self.pool.clone();
        let results = self.results_tx.clone();
        tokio::spawn(async move {
            match restore::directory(&pool).await {
                Ok(list) => {
                    let _ = results.send(Input::Directory(list));
                }
                Err(e) => tracing::debug!(error = %e, "operators not re-read (database away?)"),
            }
        });
    }

    fn feed(&mut self, input: Input) {
        let started = Instant::now();
        let actions = self.core.handle(input, Now::real());
        for action in actions {
            self.run_action(action);
        }
        self.publish_status();
        metrics::histogram!(crate::metrics::ENGINE_INPUT).record(started.elapsed().as_secs_f64());
    }

    /// Hands each chain's part of an input's ARI calls to that chain's worker (started when it
    /// has none), so calls about one leg or session keep their order across inputs while
    /// unrelated ones never wait for each other.
    fn run_batch(&mut self, batch: Vec<AriCall>) {
        let mut groups: Vec<(Chain, Vec<AriCall>)> = Vec::new();
        for call in batch {
            match groups.iter_mut().find(|(c, _)| *c == call.chain) {
                Some((_, calls)) => calls.push(call),
                None => groups.push((call.chain.clone(), vec![call])),
            }
        }
        for (chain, calls) in groups {
            let calls = match self.chains.get(&chain) {
                Some(tx) => match tx.send(calls) {
                    Ok(()) => continue,
                    // The worker went idle and left: start another.
                    Err(mpsc::error::SendError(calls)) => calls,
                },
                None => calls,
            };
            let (tx, rx) = mpsc::unbounded_channel();
            let _ = tx.send(calls);
            tokio::spawn(chain_worker(self.ari.clone(), rx, self.results_tx.clone()));
            self.chains.insert(chain, tx);
        }
    }

    /// What readiness and the metrics show of the engine.
    fn publish_status(&mut self) {
        let now = EngineStatus {
            synced: self.core.synced(),
            draining: self.core.draining(),
            live_calls: self.core.live_calls(),
            sessions: self.core.sessions().count(),
            journal_backlog: self.progress.backlog(),
        };
        let changed = self.status.send_if_modified(|s| {
            let changed = *s != now;
            *s = now;
            changed
        });
        if changed {
            metrics::gauge!(crate::metrics::JOURNAL_BACKLOG).set(now.journal_backlog as f64);
        }
    }

    fn run_action(&mut self, action: Action) {
        match action {
            Action::Ari(batch) => self.run_batch(batch),
            Action::Persist(write) => self.journal.append(write),
            Action::CreateAttempt(new) => {
                let pool = self.pool.clone();
                let results = self.results_tx.clone();
                let instance = self.core_instance();
                tokio::spawn(async move {
                    let result = match store::create_attempt(&pool, &new, &instance).await {
                        Ok(()) => Ok(()),
                        Err(store::CreateError::NumberBusy) => Err(CreateFail::NumberBusy),
                        Err(store::CreateError::Db(e)) => Err(CreateFail::Database(e.to_string())),
                    };
                    let _ = results.send(Input::AttemptCreated {
                        attempt: new.attempt,
                        result,
                    });
                });
            }
            Action::LookupOperator { channel, endpoint } => {
                let pool = self.pool.clone();
                let results = self.results_tx.clone();
                tokio::spawn(async move {
                    let operator = match operators::by_endpoint(&pool, &endpoint).await {
                        Ok(found) => found.map(|o| super::core::OperatorInfo {
                            id: o.id,
                            name: o.name,
                            endpoint: o.endpoint,
                            skills: o.skills,
                            enabled: o.enabled,
                        }),
                        Err(e) => {
                            tracing::error!(error = %e, endpoint, "operator lookup failed");
                            None
                        }
                    };
                    let _ = results.send(Input::OperatorFound { channel, operator });
                });
            }
            Action::Reply(to, reply) => {
                if let Some(tx) = self.replies.remove(&to.0) {
                    // The caller reads its own writes: the answer goes once what was journaled
                    // before it is in the database (or after a short wait if the database is away).
                    let target = self.progress.appended();
                    if self.progress.applied() >= target {
                        let _ = tx.send(reply);
                    } else {
                        let progress = self.progress.clone();
                        tokio::spawn(async move {
                            progress.applied_up_to(target, Duration::from_secs(3)).await;
                            let _ = tx.send(reply);
                        });
                    }
                }
            }
            Action::Wake => self.wake.notify_one(),
            Action::Observe(o) => observe(o),
            Action::Stop => {}
        }
    }

    fn core_instance(&self) -> String {
        self.instance.clone()
    }
}

/// Runs one chain's ARI calls in order, batch after batch, until it has been idle a while.
async fn chain_worker(
    ari: AriClient,
    mut rx: mpsc::UnboundedReceiver<Vec<AriCall>>,
    results: mpsc::UnboundedSender<Input>,
) {
    loop {
        match tokio::time::timeout(Duration::from_secs(30), rx.recv()).await {
            Ok(Some(calls)) => run_calls(&ari, calls, &results).await,
            Ok(None) => return,
            Err(_) => {
                // Idle: refuse more (the shell starts a new worker) and finish what came meanwhile.
                rx.close();
                while let Ok(calls) = rx.try_recv() {
                    run_calls(&ari, calls, &results).await;
                }
                return;
            }
        }
    }
}

/// One input's calls of one chain, in order. A reported failure stops the rest of them.
async fn run_calls(ari: &AriClient, calls: Vec<AriCall>, results: &mpsc::UnboundedSender<Input>) {
    for call in calls {
        let result = execute(ari, &call.op).await;
        match (&result, call.report) {
            (Ok(_), Report::Outcome) => {
                let _ = results.send(Input::AriDone { op: call.op, result });
            }
            (Ok(_), _) => {}
            (Err(_), Report::Failure | Report::Outcome) => {
                let _ = results.send(Input::AriDone { op: call.op, result });
                return;
            }
            (Err(e), Report::Nothing) => {
                tracing::debug!(op = ?call.op, error = %e, "ARI call failed (nothing depends on it)");
            }
        }
    }
}

async fn execute(ari: &AriClient, op: &AriOp) -> Result<AriReply, AriFail> {
    use crate::ari::{BridgeType, CreateChannel, Originate};
    let done = |r: Result<(), AriError>| r.map(|()| AriReply::Ok);
    let result = match op {
        AriOp::Originate {
            channel,
            endpoint,
            caller_id,
            timeout_secs,
            app_args,
            variables,
        } => ari
            .originate(&Originate {
                endpoint: endpoint.clone(),
                channel_id: Some(channel.to_string()),
                app_args: app_args.clone(),
                caller_id: caller_id.clone(),
                timeout_secs: Some(*timeout_secs),
                variables: variables.clone(),
                ..Default::default()
            })
            .await
            .map(|_| AriReply::Ok),
        AriOp::Create {
            channel,
            endpoint,
            app_args,
            variables,
        } => ari
            .create_channel(&CreateChannel {
                endpoint: endpoint.clone(),
                channel_id: Some(channel.to_string()),
                app_args: app_args.clone(),
                variables: variables.clone(),
                ..Default::default()
            })
            .await
            .map(|_| AriReply::Ok),
        AriOp::Dial { channel, timeout_secs } => done(ari.dial(channel.as_str(), None, Some(*timeout_secs)).await),
        AriOp::Answer { channel } => done(ari.answer(channel.as_str()).await),
        AriOp::Hangup { channel, reason } => done(ari.hangup(channel.as_str(), *reason).await),
        AriOp::CreateBridge { bridge, name } => ari
            .create_bridge(bridge.as_str(), BridgeType::Mixing, name)
            .await
            .map(|_| AriReply::Ok),
        AriOp::AddToBridge { bridge, channel } => done(ari.add_channels(bridge.as_str(), &[channel.as_str()]).await),
        AriOp::DestroyBridge { bridge } => done(ari.destroy_bridge(bridge.as_str()).await),
        AriOp::Play {
            channel,
            media,
            playback,
        } => ari
            .play(channel.as_str(), media, Some(playback))
            .await
            .map(|_| AriReply::Ok),
        AriOp::PlayBridge {
            bridge,
            media,
            playback,
        } => ari
            .play_bridge(bridge.as_str(), media, playback)
            .await
            .map(|_| AriReply::Ok),
        AriOp::StopPlayback { playback } => done(ari.stop_playback(playback).await),
        AriOp::Record { bridge, name } => ari
            .record_bridge(bridge.as_str(), name, "wav")
            .await
            .map(|_| AriReply::Ok),
        AriOp::StopRecording { name } => done(ari.stop_recording(name).await),
        AriOp::Continue { channel, context } => done(ari.continue_in_dialplan(channel.as_str(), context, "s", 1).await),
        AriOp::Subscribe { source } => done(ari.subscribe(source).await),
        AriOp::Unsubscribe { source } => done(ari.unsubscribe(source).await),
        AriOp::RtpReceived { channel } => ari.rtp_statistics(channel.as_str()).await.map(|s| AriReply::Packets {
            count: s.rxcount,
            at: Instant::now(),
        }),
    };
    result.map_err(|e| fail_of(&e))
}

fn fail_of(e: &AriError) -> AriFail {
    match e.status() {
        Some(s) if s.as_u16() == 404 => AriFail::NotFound,
        Some(s) if s.as_u16() == 409 => AriFail::Conflict,
        Some(s) => AriFail::Refused(s.as_u16(), e.to_string()),
        None if e.never_reached() => AriFail::Unreachable(e.to_string()),
        None => AriFail::Unknown(e.to_string()),
    }
}

fn observe(o: Observation) {
    use crate::metrics as m;
    match o {
        Observation::Ringing { after } => metrics::histogram!(m::ORIGINATE_TO_RING).record(after.as_secs_f64()),
        Observation::Connected { latency, connecting } => {
            metrics::histogram!(m::CONNECT_LATENCY).record(latency.as_secs_f64());
            metrics::histogram!(m::CONNECT_WORK).record(connecting.as_secs_f64());
        }
        Observation::Ended {
            campaign,
            status,
            result,
        } => metrics::counter!(
            m::ATTEMPTS,
            "campaign" => super::core::accountcode(campaign),
            "status" => status.as_str(),
            "result" => result.map_or("none", |r| r.as_str())
        )
        .increment(1),
        Observation::SessionDead { .. } => metrics::counter!(m::SESSIONS_DEAD).increment(1),
    }
}
