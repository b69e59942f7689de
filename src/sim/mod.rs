//! `obzvon simulate`: pacing policies side by side against a simulated population of leads and
//! a team of operators, seeded and fast. The policies are the dialer's own pacing code (see
//! `policy`); the simulator plays the engine's part as far as pacing reads it (who is ready, on
//! a call or in wrap-up and for how long, which calls ring and since when, who waits) and the
//! population's (when and whether a person answers, how long they talk).

pub mod cli;
pub mod policy;

use std::cmp::Ordering;
use std::collections::{BinaryHeap, VecDeque};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::Serialize;

use crate::dialer::predictive::{Busy, Outcome, Params, TrueDistributions, View, WindowRate};
use policy::{AdaptMode, Ours, Policy, PolicyKind, Progressive, VicidialAdapt};

/// Who is called and how they behave (the default population).
#[derive(Debug, Clone)]
pub struct Population {
    pub talk_mean_secs: f64,
    pub talk_cv: f64,
    pub wrap_secs: f64,
    /// A person answers `answer_min_secs` + Gamma(`answer_shape`, `answer_scale_secs`) after
    /// the dial, at most at the timeout.
    pub answer_min_secs: f64,
    pub answer_shape: u32,
    pub answer_scale_secs: f64,
    pub dial_timeout_secs: f64,
    /// Of the dials without a person: busy or failed (2–6 s), and machines (detected
    /// `machine_detect_secs` after they answer); the rest ring out.
    pub busy_share: f64,
    pub machine_share: f64,
    pub machine_detect_secs: f64,
    pub connect_limit_secs: f64,
}

impl Default for Population {
    fn default() -> Population {
        Population {
            talk_mean_secs: 120.0,
            talk_cv: 1.0,
            wrap_secs: 10.0,
            answer_min_secs: 2.0,
            answer_shape: 3,
            answer_scale_secs: 3.0,
            dial_timeout_secs: 28.0,
            busy_share: 0.25,
            machine_share: 0.20,
            machine_detect_secs: 3.5,
            connect_limit_secs: 2.0,
        }
    }
}

impl Population {
    /// When a person answers, after the dial.
    pub fn answer_after(&self, rng: &mut StdRng) -> f64 {
        let g: f64 = (0..self.answer_shape).map(|_| -(1.0 - rng.random::<f64>()).ln()).sum();
        (self.answer_min_secs + g * self.answer_scale_secs).min(self.dial_timeout_secs)
    }

    /// When a dial without a person ends: busy or failed, a machine detected, or no answer.
    fn no_live_end_after(&self, rng: &mut StdRng) -> f64 {
        let r = rng.random::<f64>();
        if r < self.busy_share {
            2.0 + 4.0 * rng.random::<f64>()
        } else if r < self.busy_share + self.machine_share {
            self.answer_after(rng) + self.machine_detect_secs
        } else {
            self.dial_timeout_secs
        }
    }

    /// How long a person talks.
    pub fn talk_time(&self, rng: &mut StdRng) -> f64 {
        let sigma2 = (1.0 + self.talk_cv * self.talk_cv).ln();
        let mu = self.talk_mean_secs.ln() - sigma2 / 2.0;
        (mu + sigma2.sqrt() * standard_normal(rng)).exp()
    }
}

/// One simulated shift.
#[derive(Debug, Clone)]
pub struct Scenario {
    pub name: String,
    pub agents: usize,
    /// The live-answer rate at the start and at the end (linear in between).
    pub hit_rate_from: f64,
    pub hit_rate_to: f64,
    pub hours: f64,
    /// Operators log in spread over this long from the start; 0: all at once.
    pub login_spread_secs: f64,
}

impl Scenario {
    /// The default table: operators 5, 20, 100 × live-answer rate 0.1, 0.3, then a day whose
    /// answer rate falls from 0.3 to 0.1, and a shift start (20 operators all at once).
    pub fn defaults(hours: f64) -> Vec<Scenario> {
        let mut all = Vec::new();
        for agents in [5, 20, 100] {
            for p in [0.1, 0.3] {
                all.push(Scenario {
                    name: format!("N={agents} p={p}"),
                    agents,
                    hit_rate_from: p,
                    hit_rate_to: p,
                    hours,
                    login_spread_secs: 600.0,
                });
            }
        }
        all.push(Scenario {
            name: "drift N=20 p=0.3→0.1".into(),
            agents: 20,
            hit_rate_from: 0.3,
            hit_rate_to: 0.1,
            hours,
            login_spread_secs: 600.0,
        });
        all.push(Scenario {
            name: "shift-start N=20 p=0.3".into(),
            agents: 20,
            hit_rate_from: 0.3,
            hit_rate_to: 0.3,
            hours,
            login_spread_secs: 0.0,
        });
        all
    }

    fn hit_rate(&self, now: f64) -> f64 {
        let f = (now / (self.hours * 3600.0)).clamp(0.0, 1.0);
        self.hit_rate_from + (self.hit_rate_to - self.hit_rate_from) * f
    }
}

/// Pacing settings shared by every policy in a run.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub target_abandon_rate: f64,
    /// Lines (calls holding a channel) per operator.
    pub max_lines_per_agent: usize,
    pub calls_per_second: f64,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            target_abandon_rate: 0.03,
            max_lines_per_agent: 10,
            calls_per_second: 50.0,
        }
    }
}

/// What one run measured.
#[derive(Debug, Clone, Default, Serialize)]
pub struct RunResult {
    pub occupancy: f64,
    pub talk_minutes_per_hour: f64,
    pub abandon_rate: f64,
    pub abandon_rate_worst_hour: f64,
    pub dials_per_agent_hour: f64,
    pub mean_wait_between_calls_s: f64,
    pub dials: u64,
    pub live_answers: u64,
    pub abandoned: u64,
}

/// Runs one policy through one scenario with one seed.
pub fn run(sc: &Scenario, pop: &Population, limits: &Limits, kind: PolicyKind, seed: u64) -> RunResult {
    let params = Params {
        target_abandon_rate: limits.target_abandon_rate,
        connect_limit_secs: pop.connect_limit_secs,
        dial_timeout_secs: pop.dial_timeout_secs,
        max_ringing_per_operator: limits.max_lines_per_agent as f64,
    };
    let truth = Truth::new(pop);
    let mut policy: Box<dyn Policy> = match kind {
        PolicyKind::Progressive => Box::new(Progressive::new(1.0, limits.target_abandon_rate)),
        PolicyKind::Ratio(r) => Box::new(Progressive::new(r, limits.target_abandon_rate)),
        PolicyKind::VicidialAdapt => Box::new(VicidialAdapt::new(AdaptMode::HardLimit)),
        PolicyKind::Predictive => Box::new(Ours::predictive(params, pop.wrap_secs)),
        PolicyKind::Oracle => Box::new(Ours::oracle(params, truth.at(sc.hit_rate(0.0)))),
    };
    let mut sim = Sim::new(sc, pop, limits, seed);
    sim.run(policy.as_mut(), &truth);
    sim.result()
}

#[derive(Debug, Clone, Copy)]
enum Ev {
    Login(usize),
    LiveAnswer(usize),
    NoLiveEnd(usize),
    Abandon(usize),
    TalkEnd(usize),
    WrapEnd(usize),
    Tick,
}

struct Timed {
    at: f64,
    seq: u64,
    ev: Ev,
}

impl PartialEq for Timed {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}
impl Eq for Timed {}
impl PartialOrd for Timed {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Timed {
    /// Earliest first (the heap is a max-heap).
    fn cmp(&self, other: &Self) -> Ordering {
        other.at.total_cmp(&self.at).then(other.seq.cmp(&self.seq))
    }
}

#[derive(Debug, Clone, Copy)]
enum OpState {
    Out,
    Idle { since: f64 },
    Talking { since: f64, until: f64 },
    Wrapping { since: f64, until: f64 },
}

struct Call {
    dialled: f64,
    /// Index in `ringing` while it rings.
    ring_slot: Option<usize>,
    waiting: bool,
}

struct Sim<'a> {
    sc: &'a Scenario,
    pop: &'a Population,
    limits: &'a Limits,
    rng: StdRng,
    now: f64,
    end: f64,
    seq: u64,
    queue: BinaryHeap<Timed>,
    ops: Vec<OpState>,
    login_at: Vec<f64>,
    calls: Vec<Call>,
    ringing: Vec<usize>,
    waiting: VecDeque<usize>,
    window: WindowRate,
    tokens: f64,
    tokens_at: f64,
    // Measurements.
    talk_secs: f64,
    wrap_secs: f64,
    idle_secs: f64,
    connects: u64,
    dials: u64,
    hourly: Vec<(u64, u64)>,
}

const TICK_SECS: f64 = 1.0;

impl<'a> Sim<'a> {
    fn new(sc: &'a Scenario, pop: &'a Population, limits: &'a Limits, seed: u64) -> Sim<'a> {
        let mut sim = Sim {
            sc,
            pop,
            limits,
            rng: StdRng::seed_from_u64(seed),
            now: 0.0,
            end: sc.hours * 3600.0,
            seq: 0,
            queue: BinaryHeap::new(),
            ops: vec![OpState::Out; sc.agents],
            login_at: vec![f64::INFINITY; sc.agents],
            calls: Vec::new(),
            ringing: Vec::new(),
            waiting: VecDeque::new(),
            window: WindowRate::default(),
            tokens: limits.calls_per_second,
            tokens_at: 0.0,
            talk_secs: 0.0,
            wrap_secs: 0.0,
            idle_secs: 0.0,
            connects: 0,
            dials: 0,
            hourly: vec![(0, 0); sc.hours.ceil() as usize + 1],
        };
        for op in 0..sc.agents {
            let at = if sc.login_spread_secs > 0.0 {
                sim.rng.random::<f64>() * sc.login_spread_secs
            } else {
                0.0
            };
            sim.at(at, Ev::Login(op));
        }
        sim.at(0.0, Ev::Tick);
        sim
    }

    fn at(&mut self, at: f64, ev: Ev) {
        self.seq += 1;
        self.queue.push(Timed { at, seq: self.seq, ev });
    }

    fn run(&mut self, policy: &mut dyn Policy, truth: &Truth) {
        let mut told_rate = self.sc.hit_rate(0.0);
        while let Some(t) = self.queue.pop() {
            if t.at > self.end {
                break;
            }
            self.now = t.at;
            let wake = match t.ev {
                Ev::Login(op) => {
                    self.ops[op] = OpState::Idle { since: self.now };
                    self.login_at[op] = self.now;
                    true
                }
                Ev::LiveAnswer(c) => {
                    self.stop_ringing(c);
                    let after = self.now - self.calls[c].dialled;
                    policy.observe(Outcome::LiveAnswer { after_secs: after }, self.now);
                    self.window.answered += 1;
                    self.hour().0 += 1;
                    match self.longest_idle() {
                        Some(op) => self.connect(op, policy),
                        None => {
                            self.calls[c].waiting = true;
                            self.waiting.push_back(c);
                            self.at(self.now + self.pop.connect_limit_secs, Ev::Abandon(c));
                        }
                    }
                    false
                }
                Ev::NoLiveEnd(c) => {
                    self.stop_ringing(c);
                    let after = self.now - self.calls[c].dialled;
                    policy.observe(Outcome::NoLiveAnswer { after_secs: after }, self.now);
                    false
                }
                Ev::Abandon(c) => {
                    if self.calls[c].waiting {
                        self.calls[c].waiting = false;
                        self.waiting.retain(|w| *w != c);
                        self.window.abandoned += 1;
                        self.hour().1 += 1;
                        policy.observe(Outcome::Connected { abandoned: true }, self.now);
                    }
                    false
                }
                Ev::TalkEnd(op) => {
                    if let OpState::Talking { since, .. } = self.ops[op] {
                        self.talk_secs += self.now - since;
                        policy.observe(Outcome::Talk { secs: self.now - since }, self.now);
                        let until = self.now + self.pop.wrap_secs;
                        self.ops[op] = OpState::Wrapping { since: self.now, until };
                        self.at(until, Ev::WrapEnd(op));
                    }
                    false
                }
                Ev::WrapEnd(op) => {
                    if let OpState::Wrapping { since, .. } = self.ops[op] {
                        self.wrap_secs += self.now - since;
                        policy.observe(Outcome::WrapUp { secs: self.now - since }, self.now);
                        self.ops[op] = OpState::Idle { since: self.now };
                        if let Some(c) = self.waiting.pop_front() {
                            self.calls[c].waiting = false;
                            self.connect(op, policy);
                        }
                    }
                    true
                }
                Ev::Tick => {
                    let rate = self.sc.hit_rate(self.now);
                    if (rate - told_rate).abs() > 0.002 {
                        policy.tell(&truth.at(rate));
                        told_rate = rate;
                    }
                    self.at(self.now + TICK_SECS, Ev::Tick);
                    true
                }
            };
            if wake && (policy.wakes() || matches!(t.ev, Ev::Tick)) {
                self.pace(policy);
            }
        }
        self.now = self.end;
        for op in 0..self.ops.len() {
            match self.ops[op] {
                OpState::Talking { since, .. } => self.talk_secs += self.end - since,
                OpState::Wrapping { since, .. } => self.wrap_secs += self.end - since,
                _ => {}
            }
        }
    }

    fn hour(&mut self) -> &mut (u64, u64) {
        let h = ((self.now / 3600.0) as usize).min(self.hourly.len() - 1);
        &mut self.hourly[h]
    }

    fn stop_ringing(&mut self, c: usize) {
        if let Some(slot) = self.calls[c].ring_slot.take() {
            self.ringing.swap_remove(slot);
            if let Some(&moved) = self.ringing.get(slot) {
                self.calls[moved].ring_slot = Some(slot);
            }
        }
    }

    fn longest_idle(&self) -> Option<usize> {
        self.ops
            .iter()
            .enumerate()
            .filter_map(|(i, s)| match s {
                OpState::Idle { since } => Some((i, *since)),
                _ => None,
            })
            .min_by(|a, b| a.1.total_cmp(&b.1))
            .map(|(i, _)| i)
    }

    fn connect(&mut self, op: usize, policy: &mut dyn Policy) {
        if let OpState::Idle { since } = self.ops[op] {
            self.idle_secs += self.now - since;
        }
        self.connects += 1;
        let talk = self.pop.talk_time(&mut self.rng);
        let until = self.now + talk;
        self.ops[op] = OpState::Talking { since: self.now, until };
        self.at(until, Ev::TalkEnd(op));
        policy.observe(Outcome::Connected { abandoned: false }, self.now);
    }

    fn pace(&mut self, policy: &mut dyn Policy) {
        let future = policy.knows_the_future();
        let now = self.now;
        let mut ready = 0;
        let mut talking = Vec::new();
        let mut wrapping = Vec::new();
        for s in &self.ops {
            match *s {
                OpState::Out => {}
                OpState::Idle { .. } => ready += 1,
                OpState::Talking { since, until } => talking.push(Busy {
                    elapsed: now - since,
                    remaining: future.then_some(until - now),
                }),
                OpState::Wrapping { since, until } => wrapping.push(Busy {
                    elapsed: now - since,
                    remaining: future.then_some(until - now),
                }),
            }
        }
        let ages: Vec<f64> = self.ringing.iter().map(|&c| now - self.calls[c].dialled).collect();
        let logged_in = ready + talking.len() + wrapping.len();
        let lines = self.ringing.len() + self.waiting.len() + talking.len();
        let room = (self.limits.max_lines_per_agent * logged_in).saturating_sub(lines);
        let view = View {
            ready,
            waiting: self.waiting.len(),
            talking: &talking,
            wrapping: &wrapping,
            ringing: &ages,
            room,
            window: self.window,
        };
        let wanted = policy.decide(&view, now).min(room);
        self.tokens = (self.tokens + (now - self.tokens_at) * self.limits.calls_per_second)
            .min(self.limits.calls_per_second.max(1.0));
        self.tokens_at = now;
        let calls = wanted.min(self.tokens.floor() as usize);
        self.tokens -= calls as f64;
        policy.dialled(calls, now);
        for _ in 0..calls {
            self.dial();
        }
    }

    fn dial(&mut self) {
        let c = self.calls.len();
        self.calls.push(Call {
            dialled: self.now,
            ring_slot: Some(self.ringing.len()),
            waiting: false,
        });
        self.ringing.push(c);
        self.dials += 1;
        let p = self.sc.hit_rate(self.now);
        if self.rng.random::<f64>() < p {
            let at = self.now + self.pop.answer_after(&mut self.rng);
            self.at(at, Ev::LiveAnswer(c));
            return;
        }
        let after = self.pop.no_live_end_after(&mut self.rng);
        self.at(self.now + after, Ev::NoLiveEnd(c));
    }

    fn result(&self) -> RunResult {
        let logged_in: f64 = self.login_at.iter().map(|at| (self.end - at).max(0.0)).sum();
        let hours = logged_in / 3600.0;
        let answered = self.window.answered;
        let worst = self
            .hourly
            .iter()
            .filter(|(a, _)| *a > 0)
            .map(|(a, d)| *d as f64 / *a as f64)
            .fold(0.0, f64::max);
        RunResult {
            occupancy: (self.talk_secs + self.wrap_secs) / logged_in.max(1.0),
            talk_minutes_per_hour: self.talk_secs / 60.0 / hours.max(1e-9),
            abandon_rate: self.window.abandoned as f64 / answered.max(1) as f64,
            abandon_rate_worst_hour: worst,
            dials_per_agent_hour: self.dials as f64 / hours.max(1e-9),
            mean_wait_between_calls_s: self.idle_secs / self.connects.max(1) as f64,
            dials: self.dials,
            live_answers: answered,
            abandoned: self.window.abandoned,
        }
    }
}

fn standard_normal(rng: &mut StdRng) -> f64 {
    let u1 = 1.0 - rng.random::<f64>();
    let u2 = rng.random::<f64>();
    (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()
}

/// The population's true distributions, for the oracle: the answer-time shapes (live, and
/// without a person) are fixed; the live-answer rate scales them.
struct Truth {
    live_shape: Vec<f64>,
    not_live_shape: Vec<f64>,
    talk: Vec<f64>,
    wrap: Vec<f64>,
}

impl Truth {
    fn new(pop: &Population) -> Truth {
        const SAMPLES: usize = 200_000;
        let mut rng = StdRng::seed_from_u64(0x0b27_0000);
        let bins = TrueDistributions::answer_bins(pop.dial_timeout_secs);
        let bin = |x: f64, width: f64, n: usize| ((x / width) as usize).min(n - 1);
        let w = 1.0 / SAMPLES as f64;
        let mut live_shape = vec![0.0; bins];
        let mut not_live_shape = vec![0.0; bins];
        for _ in 0..SAMPLES {
            live_shape[bin(pop.answer_after(&mut rng), TrueDistributions::ANSWER_BIN_SECS, bins)] += w;
            not_live_shape[bin(
                pop.no_live_end_after(&mut rng),
                TrueDistributions::ANSWER_BIN_SECS,
                bins,
            )] += w;
        }
        let mut talk = vec![0.0; TrueDistributions::TALK_BINS];
        for _ in 0..SAMPLES {
            let t = pop.talk_time(&mut rng);
            talk[bin(t, TrueDistributions::TALK_BIN_SECS, TrueDistributions::TALK_BINS)] += w;
        }
        let mut wrap = vec![0.0; TrueDistributions::WRAP_BINS];
        wrap[bin(
            pop.wrap_secs,
            TrueDistributions::WRAP_BIN_SECS,
            TrueDistributions::WRAP_BINS,
        )] = 1.0;
        Truth {
            live_shape,
            not_live_shape,
            talk,
            wrap,
        }
    }

    fn at(&self, hit_rate: f64) -> TrueDistributions {
        TrueDistributions {
            live: self.live_shape.iter().map(|v| v * hit_rate).collect(),
            not_live: self.not_live_shape.iter().map(|v| v * (1.0 - hit_rate)).collect(),
            talk: self.talk.clone(),
            wrap: self.wrap.clone(),
        }
    }
}

/// One row of the table: a policy in a scenario over all seeds.
#[derive(Debug, Clone, Serialize)]
pub struct Row {
    pub scenario: String,
    pub policy: String,
    pub agents: usize,
    pub hit_rate: f64,
    pub hit_rate_end: f64,
    /// The fixed ratio (policy `ratio` only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ratio: Option<f64>,
    pub seed_count: usize,
    pub occupancy: f64,
    pub talk_minutes_per_hour: f64,
    pub abandon_rate: f64,
    pub abandon_rate_worst_hour: f64,
    pub abandon_rate_p95_seed: f64,
    /// Share of seeds whose abandon rate over the run is at or under the target.
    pub seeds_within_target: f64,
    pub dials_per_agent_hour: f64,
    pub mean_wait_between_calls_s: f64,
}

/// Settings of a whole table.
#[derive(Debug, Clone)]
pub struct Table {
    pub scenarios: Vec<Scenario>,
    pub policies: Vec<PolicyKind>,
    pub seeds: u64,
    pub population: Population,
    pub limits: Limits,
    pub threads: usize,
}

/// Ratios tried when searching the best fixed ratio: the largest one whose abandon rate stays at
/// or under the target in every calibration seed (seeds apart from the table's).
const RATIO_SEARCH: (f64, f64, usize) = (1.0, 12.0, 8);
const CALIBRATION_SEEDS: u64 = 3;

/// Runs the table; `progress` is told each finished row.
pub fn table(t: &Table, progress: &mut dyn FnMut(&Row)) -> Vec<Row> {
    let mut rows = Vec::new();
    for sc in &t.scenarios {
        for kind in &t.policies {
            let kind = match kind {
                PolicyKind::Ratio(_) => PolicyKind::Ratio(best_ratio(t, sc)),
                k => *k,
            };
            let seeds: Vec<u64> = (1..=t.seeds).collect();
            let results = parallel(t.threads, &seeds, |seed| run(sc, &t.population, &t.limits, kind, seed));
            let row = summarise(t, sc, kind, &results);
            progress(&row);
            rows.push(row);
        }
    }
    rows
}

fn best_ratio(t: &Table, sc: &Scenario) -> f64 {
    let (mut lo, mut hi, steps) = RATIO_SEARCH;
    let seeds: Vec<u64> = (0..CALIBRATION_SEEDS).map(|s| 1_000_000 + s).collect();
    let ok = |r: f64| {
        parallel(t.threads, &seeds, |seed| {
            run(sc, &t.population, &t.limits, PolicyKind::Ratio(r), seed)
        })
        .iter()
        .all(|res| res.abandon_rate <= t.limits.target_abandon_rate)
    };
    if !ok(lo) {
        return lo;
    }
    for _ in 0..steps {
        let mid = (lo + hi) / 2.0;
        if ok(mid) {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    (lo * 100.0).floor() / 100.0
}

fn parallel<T: Send>(threads: usize, seeds: &[u64], f: impl Fn(u64) -> T + Sync) -> Vec<T> {
    let threads = threads.max(1).min(seeds.len().max(1));
    let chunks: Vec<Vec<u64>> = (0..threads)
        .map(|i| seeds.iter().copied().skip(i).step_by(threads).collect())
        .collect();
    let f = &f;
    let mut out: Vec<(u64, T)> = std::thread::scope(|s| {
        let handles: Vec<_> = chunks
            .into_iter()
            .map(|chunk| s.spawn(move || chunk.into_iter().map(|seed| (seed, f(seed))).collect::<Vec<_>>()))
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().expect("a simulation thread panicked"))
            .collect()
    });
    out.sort_by_key(|(seed, _)| *seed);
    out.into_iter().map(|(_, r)| r).collect()
}

fn summarise(t: &Table, sc: &Scenario, kind: PolicyKind, results: &[RunResult]) -> Row {
    let n = results.len().max(1) as f64;
    let mean = |f: fn(&RunResult) -> f64| results.iter().map(f).sum::<f64>() / n;
    let mut rates: Vec<f64> = results.iter().map(|r| r.abandon_rate).collect();
    rates.sort_by(f64::total_cmp);
    let p95 = rates
        .get(((rates.len() as f64 * 0.95).ceil() as usize).saturating_sub(1))
        .copied()
        .unwrap_or(0.0);
    let within = rates.iter().filter(|r| **r <= t.limits.target_abandon_rate).count() as f64 / n;
    Row {
        scenario: sc.name.clone(),
        policy: kind.name().into(),
        agents: sc.agents,
        hit_rate: sc.hit_rate_from,
        hit_rate_end: sc.hit_rate_to,
        ratio: match kind {
            PolicyKind::Ratio(r) => Some(r),
            _ => None,
        },
        seed_count: results.len(),
        occupancy: mean(|r| r.occupancy),
        talk_minutes_per_hour: mean(|r| r.talk_minutes_per_hour),
        abandon_rate: mean(|r| r.abandon_rate),
        abandon_rate_worst_hour: results.iter().map(|r| r.abandon_rate_worst_hour).fold(0.0, f64::max),
        abandon_rate_p95_seed: p95,
        seeds_within_target: within,
        dials_per_agent_hour: mean(|r| r.dials_per_agent_hour),
        mean_wait_between_calls_s: mean(|r| r.mean_wait_between_calls_s),
    }
}

/// The table's header and one line per row, for a terminal.
pub fn header() -> String {
    format!(
        "{:<24} {:<15} {:>6} {:>6} {:>8} {:>8} {:>8} {:>8} {:>7} {:>8} {:>7}",
        "scenario", "policy", "occ%", "talk/h", "aband%", "worst-h%", "p95%", "≤target", "dials/h", "wait-s", "ratio"
    )
}

pub fn line(r: &Row) -> String {
    format!(
        "{:<24} {:<15} {:>6.1} {:>6.1} {:>8.2} {:>8.2} {:>8.2} {:>7.0}% {:>7.1} {:>8.1} {:>7}",
        r.scenario,
        r.policy,
        r.occupancy * 100.0,
        r.talk_minutes_per_hour,
        r.abandon_rate * 100.0,
        r.abandon_rate_worst_hour * 100.0,
        r.abandon_rate_p95_seed * 100.0,
        r.seeds_within_target * 100.0,
        r.dials_per_agent_hour,
        r.mean_wait_between_calls_s,
        r.ratio.map(|x| format!("{x:.2}")).unwrap_or_default()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scenario(agents: usize, p: f64, hours: f64) -> Scenario {
        Scenario {
            name: "t".into(),
            agents,
            hit_rate_from: p,
            hit_rate_to: p,
            hours,
            login_spread_secs: 0.0,
        }
    }

    #[test]
    fn the_same_seed_gives_the_same_run_and_another_seed_another() {
        let sc = scenario(5, 0.3, 1.0);
        let pop = Population::default();
        let a = run(&sc, &pop, &Limits::default(), PolicyKind::Predictive, 7);
        let b = run(&sc, &pop, &Limits::default(), PolicyKind::Predictive, 7);
        let c = run(&sc, &pop, &Limits::default(), PolicyKind::Predictive, 8);
        assert_eq!(
            (a.dials, a.live_answers, a.abandoned),
            (b.dials, b.live_answers, b.abandoned)
        );
        assert_ne!((a.dials, a.live_answers), (c.dials, c.live_answers));
    }

    #[test]
    fn the_population_answers_at_its_rate_and_talks_its_mean() {
        let sc = scenario(20, 0.3, 2.0);
        let r = run(
            &sc,
            &Population::default(),
            &Limits::default(),
            PolicyKind::Progressive,
            1,
        );
        let rate = r.live_answers as f64 / r.dials as f64;
        assert!((rate - 0.3).abs() < 0.03, "live-answer rate {rate}");
        assert_eq!(r.abandoned, 0, "one call per ready operator never abandons: {r:?}");
        // Talk 120 s + wrap-up 10 s, and waiting for answers in between.
        assert!(r.occupancy > 0.5 && r.occupancy < 0.95, "{r:?}");
    }

    #[test]
    fn predictive_keeps_operators_busier_than_progressive_within_the_target() {
        let sc = scenario(20, 0.1, 2.0);
        let pop = Population::default();
        let prog = run(&sc, &pop, &Limits::default(), PolicyKind::Progressive, 3);
        let pred = run(&sc, &pop, &Limits::default(), PolicyKind::Predictive, 3);
        assert!(pred.occupancy > prog.occupancy + 0.1, "{pred:?} vs {prog:?}");
        assert!(pred.abandon_rate <= 0.03, "{pred:?}");
    }
}
