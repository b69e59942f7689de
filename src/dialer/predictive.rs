//! Predictive pacing: how many calls to start now so that customers answer as operators free
//! up, with the abandon rate held under the campaign's target. Pure code with an explicit `now`
//! (seconds on any monotonic clock): the scheduler and `obzvon simulate` feed it the same view
//! and the same outcomes.
//!
//! The model, learnt online per campaign with forgetting (`FORGET_HALF_LIFE_SECS`) on top of priors:
//! - the dial's timeline: when a live person answers, or when a dial ends without one (busy,
//!   failed, no answer, machine); from it the live-answer rate and, for a call ringing for `a`
//!   seconds, the chance it is answered by a person in the next `h` seconds;
//! - talk and wrap-up times; from them, for an operator `e` seconds into a call or a wrap-up,
//!   the chance they are free `h` seconds from now.
//!
//! At every step `h` (2 s) of the next answer horizon, supply is the ready operators plus
//! those expected free by `h + connect limit` (a customer may wait that long), and demand is
//! the customers waiting plus the people expected to answer by `h` among the calls ringing, the
//! calls pacing will go on dialling meanwhile (at its recent rate) and the new dials so far. A new call answered by a person at `h` is abandoned if demand has
//! caught up with supply by then (operators go first come, first served); its chance of that,
//! over when it may be answered, is computed exactly for few terms and as a normal for many.
//! Calls are placed while that chance stays under `theta`; `theta` itself follows the abandon
//! rate actually measured (a stochastic-approximation step per answered call, aiming a little
//! under the target). When the regulatory window's rate has reached the target, pacing falls
//! back to one call per ready operator until it recovers.

use std::f64::consts::FRAC_1_SQRT_2;

/// Forgetting: an observation's weight halves every 30 minutes, so a change during the day
/// (the answer rate falling in the afternoon) is followed within the hour or two.
pub const FORGET_HALF_LIFE_SECS: f64 = 1800.0;
/// `theta` aims this far under the target, so the measured rate's noise stays below it.
const CONTROL_FRACTION: f64 = 0.9;
/// Step of `ln theta` per answered call (an abandon moves it down by about
/// `STEP / target`, a connected call up by `STEP`).
const STEP: f64 = 0.01;
const ANSWER_BIN: f64 = 0.5;
const TALK_BIN: f64 = 2.0;
const TALK_MAX: f64 = 3600.0;
const WRAP_BIN: f64 = 1.0;
const WRAP_MAX: f64 = 600.0;

/// A campaign's pacing settings.
#[derive(Debug, Clone, Copy)]
pub struct Params {
    /// Abandoned calls over live answers that the campaign may reach in its window.
    pub target_abandon_rate: f64,
    /// How long an answered customer may wait for an operator before it is an abandon.
    pub connect_limit_secs: f64,
    /// A dial not answered by then ends as no answer.
    pub dial_timeout_secs: f64,
    /// Safety cap: calls ringing per logged-in operator, whatever the model says.
    pub max_ringing_per_operator: f64,
}

/// What the model starts from, before a campaign has data of its own.
#[derive(Debug, Clone, Copy)]
pub struct Priors {
    pub live_rate: f64,
    pub answer_mean_secs: f64,
    pub talk_mean_secs: f64,
    pub wrap_mean_secs: f64,
    /// How many observations the priors are worth.
    pub weight: f64,
}

impl Default for Priors {
    fn default() -> Priors {
        Priors {
            live_rate: 0.25,
            answer_mean_secs: 10.0,
            talk_mean_secs: 120.0,
            wrap_mean_secs: 10.0,
            weight: 20.0,
        }
    }
}

impl Priors {
    /// The defaults, with the wrap-up a campaign sets (its operators' wrap-up is known before
    /// any call).
    pub fn with_wrap_up(wrap_up_secs: f64) -> Priors {
        Priors {
            wrap_mean_secs: wrap_up_secs,
            ..Priors::default()
        }
    }
}

/// An operator who is busy now: on a call or in wrap-up, for `elapsed` seconds. `remaining`
/// is only known to the simulator's oracle.
#[derive(Debug, Clone, Copy)]
pub struct Busy {
    pub elapsed: f64,
    pub remaining: Option<f64>,
}

/// Abandons and live answers counted over the campaign's regulatory window.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct WindowRate {
    pub answered: u64,
    pub abandoned: u64,
}

impl WindowRate {
    pub fn rate(&self) -> Option<f64> {
        (self.answered > 0).then(|| self.abandoned as f64 / self.answered as f64)
    }
}

/// What pacing sees of one campaign at one moment.
#[derive(Debug, Clone, Copy)]
pub struct View<'a> {
    /// Eligible operators ready and not promised to a customer.
    pub ready: usize,
    /// Answered customers waiting for an operator.
    pub waiting: usize,
    /// Eligible operators on a call.
    pub talking: &'a [Busy],
    /// Eligible operators in wrap-up.
    pub wrapping: &'a [Busy],
    /// Ages of the campaign's calls dialled and not answered.
    pub ringing: &'a [f64],
    /// Calls the concurrency cap still allows.
    pub room: usize,
    pub window: WindowRate,
}

/// What the pacing learnt from one call.
#[derive(Debug, Clone, Copy)]
pub enum Outcome {
    /// A person answered this long after the dial.
    LiveAnswer {
        after_secs: f64,
    },
    /// The dial ended without a person (busy, failed, no answer, machine) this long after it.
    NoLiveAnswer {
        after_secs: f64,
    },
    /// An answered customer was connected, or abandoned.
    Connected {
        abandoned: bool,
    },
    Talk {
        secs: f64,
    },
    WrapUp {
        secs: f64,
    },
}

/// One decision, with the figures behind it (for `/live` and metrics).
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct Decision {
    pub calls: usize,
    /// The window's rate is at the target: at most one call per ready operator.
    pub fallback: bool,
    /// Calls ringing after this decision per operator logged in.
    pub dial_level: f64,
    pub live_rate: f64,
    pub answer_mean_secs: f64,
    pub talk_mean_secs: f64,
    pub wrap_mean_secs: f64,
    /// Operators expected free within the mean answer time (and the connect limit).
    pub predicted_free: f64,
    /// The chance that the last call dialled, answered by a person, is abandoned.
    pub marginal_abandon: f64,
    /// Calls per second pacing has been dialling lately (their answers compete with the new
    /// calls' for the operators who free up).
    pub flow_per_sec: f64,
    pub theta: f64,
}

/// A campaign's predictive pacer: the learnt model and the abandon controller.
#[derive(Debug, Clone)]
pub struct Predictive {
    params: Params,
    model: Model,
    ln_theta: f64,
    /// The model is told, not learnt (the simulator's oracle).
    frozen: bool,
    /// Recent decisions' calls, by time, for the rate at which pacing keeps dialling.
    recent: std::collections::VecDeque<(f64, usize)>,
    /// The curves last built from the model, and when.
    curves: Option<(f64, Curves)>,
}

/// Calls dialled over this long give the rate at which pacing is expected to keep dialling: a
/// call answered `h` seconds from now competes with the answers of calls dialled meanwhile.
const FLOW_SECS: f64 = 30.0;

impl Predictive {
    pub fn new(params: Params, priors: Priors) -> Predictive {
        Predictive {
            params,
            model: Model::new(&params, &priors, priors.weight),
            ln_theta: params.target_abandon_rate.max(1e-4).ln(),
            frozen: false,
            recent: Default::default(),
            curves: None,
        }
    }

    /// A pacer that knows the true distributions and never learns them (the oracle). `live`
    /// and `not_live` are the masses of answers and of dials ending without one per answer bin
    /// (`answer_bin_secs` wide), `talk` and `wrap` densities over their bins.
    pub fn told(params: Params, dist: TrueDistributions) -> Predictive {
        let mut model = Model::new(&params, &Priors::default(), 1.0);
        model.set_true(dist);
        Predictive {
            params,
            model,
            ln_theta: params.target_abandon_rate.max(1e-4).ln(),
            frozen: true,
            recent: Default::default(),
            curves: None,
        }
    }

    /// Tells a `told` pacer new true distributions (the population drifted).
    pub fn tell(&mut self, dist: TrueDistributions) {
        self.model.set_true(dist);
        self.curves = None;
    }

    pub fn params(&self) -> &Params {
        &self.params
    }

    pub fn set_params(&mut self, params: Params) {
        self.params = params;
    }

    pub fn observe(&mut self, outcome: Outcome, now: f64) {
        self.model.forget(now);
        match outcome {
            Outcome::Connected { abandoned } => {
                let aim = self.params.target_abandon_rate * CONTROL_FRACTION;
                if aim > 0.0 {
                    let hit = if abandoned { 1.0 } else { 0.0 };
                    self.ln_theta += STEP * (aim - hit) / aim;
                    let lo = (self.params.target_abandon_rate / 50.0).max(1e-5).ln();
                    self.ln_theta = self.ln_theta.clamp(lo, 0.5f64.ln());
                }
            }
            _ if self.frozen => {}
            Outcome::LiveAnswer { after_secs } => self.model.live.add(after_secs),
            Outcome::NoLiveAnswer { after_secs } => self.model.not_live.add(after_secs),
            Outcome::Talk { secs } => self.model.talk.add(secs),
            Outcome::WrapUp { secs } => self.model.wrap.add(secs),
        }
    }

    /// Tells the pacer how many calls were placed after its decision: the rate limiter and the
    /// leads due may allow fewer than it asked for, and only calls placed will answer (counting
    /// the ones asked for held pacing back for half a minute after every capped burst).
    pub fn dialled(&mut self, calls: usize, now: f64) {
        if calls > 0 {
            self.recent.push_back((now, calls));
        }
    }

    pub fn decide(&mut self, view: &View, now: f64) -> Decision {
        self.model.forget(now);
        if self
            .curves
            .as_ref()
            .is_none_or(|(at, _)| now - at >= CURVES_EVERY_SECS || now < *at)
        {
            self.curves = Some((now, self.model.curves()));
        }
        let Some((_, m)) = &self.curves else {
            unreachable!("built above")
        };
        let p = &self.params;
        let theta = self.ln_theta.exp();
        let operators = view.ready + view.talking.len() + view.wrapping.len();
        let in_flight = view.ringing.len() + view.waiting;
        let mut decision = Decision {
            calls: 0,
            fallback: false,
            dial_level: 0.0,
            live_rate: m.live_rate(),
            answer_mean_secs: m.live.mean(),
            talk_mean_secs: m.talk.mean(),
            wrap_mean_secs: m.wrap.mean(),
            predicted_free: 0.0,
            marginal_abandon: 0.0,
            flow_per_sec: 0.0,
            theta,
        };
        let cap = ((p.max_ringing_per_operator * operators as f64).floor() as usize)
            .saturating_sub(view.ringing.len())
            .min(view.room);
        if view.window.rate().is_some_and(|r| r >= p.target_abandon_rate) {
            decision.fallback = true;
            decision.calls = view.ready.saturating_sub(in_flight).min(cap);
        } else if operators > 0 {
            while self.recent.front().is_some_and(|(t, _)| *t < now - FLOW_SECS) {
                self.recent.pop_front();
            }
            let flow = self.recent.iter().map(|(_, n)| *n).sum::<usize>() as f64 / FLOW_SECS;
            decision.flow_per_sec = flow;
            let mut horizon = Horizon::new(view, m, p, flow);
            decision.predicted_free = horizon.free_at(m.live.mean());
            let mut n = 0;
            while n < cap {
                let chance = horizon.next_abandon_chance();
                if chance > theta {
                    break;
                }
                decision.marginal_abandon = chance;
                horizon.add_dial();
                n += 1;
            }
            decision.calls = n;
        }
        decision.dial_level = (view.ringing.len() + decision.calls) as f64 / operators.max(1) as f64;
        decision
    }
}

/// The true distributions the oracle is told: masses per bin of `answer_bin_secs` (live
/// answers, dials ending without one; together they sum to 1), talk and wrap-up densities per
/// bin of `talk_bin_secs` and `wrap_bin_secs`.
#[derive(Debug, Clone)]
pub struct TrueDistributions {
    pub live: Vec<f64>,
    pub not_live: Vec<f64>,
    pub talk: Vec<f64>,
    pub wrap: Vec<f64>,
}

impl TrueDistributions {
    pub const ANSWER_BIN_SECS: f64 = ANSWER_BIN;
    pub const TALK_BIN_SECS: f64 = TALK_BIN;
    pub const WRAP_BIN_SECS: f64 = WRAP_BIN;
    pub const TALK_BINS: usize = (TALK_MAX / TALK_BIN) as usize;
    pub const WRAP_BINS: usize = (WRAP_MAX / WRAP_BIN) as usize;

    pub fn answer_bins(dial_timeout_secs: f64) -> usize {
        answer_bins(dial_timeout_secs)
    }
}

fn answer_bins(dial_timeout_secs: f64) -> usize {
    ((dial_timeout_secs.max(1.0) + 5.0) / ANSWER_BIN).ceil() as usize
}

/// The learnt histograms: data (which decays) on top of priors (which do not).
#[derive(Debug, Clone)]
struct Model {
    live: Hist,
    not_live: Hist,
    talk: Hist,
    wrap: Hist,
    last_forget: f64,
}

impl Model {
    fn new(params: &Params, priors: &Priors, weight: f64) -> Model {
        let bins = answer_bins(params.dial_timeout_secs);
        let timeout = params.dial_timeout_secs;
        let live_w = weight * priors.live_rate;
        let rest = weight - live_w;
        // Answers: a gamma(3) shape around the prior mean, cut at the dial timeout (nobody
        // answers a call that has given up; left uncut, a short timeout would put most of the
        // prior's answers past the horizon, where they look harmless). Dials without a person:
        // a third end early (busy, failed), the rest at the timeout.
        let live = Hist::with_prior(ANSWER_BIN, bins, live_w, |x| {
            if x < timeout {
                gamma3(x, priors.answer_mean_secs)
            } else {
                0.0
            }
        });
        let not_live = Hist::with_prior(ANSWER_BIN, bins, rest, |x| {
            let early = if (2.0..6.0).contains(&x) { 1.0 / 12.0 } else { 0.0 };
            let late = if (x - timeout).abs() < ANSWER_BIN {
                2.0 / 3.0 / (2.0 * ANSWER_BIN)
            } else {
                0.0
            };
            early + late
        });
        let talk_bins = (TALK_MAX / TALK_BIN) as usize;
        let talk = Hist::with_prior(TALK_BIN, talk_bins, weight, |x| lognormal_cv1(x, priors.talk_mean_secs));
        let wrap_bins = (WRAP_MAX / WRAP_BIN) as usize;
        let wrap = Hist::with_prior(WRAP_BIN, wrap_bins, weight, |x| gamma3(x, priors.wrap_mean_secs));
        Model {
            live,
            not_live,
            talk,
            wrap,
            last_forget: f64::NEG_INFINITY,
        }
    }

    fn set_true(&mut self, d: TrueDistributions) {
        self.live = Hist::from_masses(ANSWER_BIN, d.live);
        self.not_live = Hist::from_masses(ANSWER_BIN, d.not_live);
        self.talk = Hist::from_masses(TALK_BIN, d.talk);
        self.wrap = Hist::from_masses(WRAP_BIN, d.wrap);
    }

    fn forget(&mut self, now: f64) {
        if self.last_forget == f64::NEG_INFINITY {
            self.last_forget = now;
            return;
        }
        let dt = now - self.last_forget;
        if dt < CURVES_EVERY_SECS {
            return;
        }
        let keep = (-dt / FORGET_HALF_LIFE_SECS * std::f64::consts::LN_2).exp();
        for h in [&mut self.live, &mut self.not_live, &mut self.talk, &mut self.wrap] {
            h.scale_data(keep);
        }
        self.last_forget = now;
    }

    fn curves(&self) -> Curves {
        Curves {
            live: self.live.cumulative(),
            not_live: self.not_live.cumulative(),
            talk: self.talk.cumulative(),
            wrap: self.wrap.cumulative(),
        }
    }
}

#[derive(Debug, Clone)]
struct Hist {
    width: f64,
    prior: Vec<f64>,
    data: Vec<f64>,
}

impl Hist {
    fn with_prior(width: f64, bins: usize, weight: f64, density: impl Fn(f64) -> f64) -> Hist {
        let raw: Vec<f64> = (0..bins).map(|i| density((i as f64 + 0.5) * width).max(0.0)).collect();
        let sum: f64 = raw.iter().sum();
        let prior = raw
            .iter()
            .map(|v| if sum > 0.0 { v / sum * weight } else { 0.0 })
            .collect();
        Hist {
            width,
            prior,
            data: vec![0.0; bins],
        }
    }

    fn from_masses(width: f64, masses: Vec<f64>) -> Hist {
        let bins = masses.len();
        Hist {
            width,
            prior: masses,
            data: vec![0.0; bins],
        }
    }

    fn add(&mut self, x: f64) {
        if !x.is_finite() || self.data.is_empty() {
            return;
        }
        let i = ((x.max(0.0) / self.width) as usize).min(self.data.len() - 1);
        self.data[i] += 1.0;
    }

    fn scale_data(&mut self, keep: f64) {
        for v in &mut self.data {
            *v *= keep;
        }
    }

    fn cumulative(&self) -> Cdf {
        let mut cum = Vec::with_capacity(self.data.len() + 1);
        let mut total = 0.0;
        let mut moment = 0.0;
        cum.push(0.0);
        for (i, (p, d)) in self.prior.iter().zip(&self.data).enumerate() {
            total += p + d;
            moment += (p + d) * (i as f64 + 0.5) * self.width;
            cum.push(total);
        }
        Cdf {
            width: self.width,
            cum,
            mean: if total > 0.0 { moment / total } else { 0.0 },
        }
    }
}

/// A cumulative mass over bins, linear inside each bin.
#[derive(Debug, Clone)]
struct Cdf {
    width: f64,
    cum: Vec<f64>,
    mean: f64,
}

impl Cdf {
    fn total(&self) -> f64 {
        *self.cum.last().unwrap_or(&0.0)
    }

    /// Mass at or below `x`.
    fn at(&self, x: f64) -> f64 {
        if x <= 0.0 {
            return 0.0;
        }
        let pos = x / self.width;
        // `pos` is positive: truncation is its floor (and much cheaper than `floor`).
        let i = pos as usize;
        if i + 1 >= self.cum.len() {
            return self.total();
        }
        let frac = pos - i as f64;
        self.cum[i] + (self.cum[i + 1] - self.cum[i]) * frac
    }

    fn mean(&self) -> f64 {
        self.mean
    }

    /// How far something `elapsed` seconds in is into this curve.
    fn survival(&self, elapsed: f64) -> Survival {
        let total = self.total();
        let below = self.at(elapsed);
        Survival {
            elapsed,
            below,
            left: total - below,
        }
    }

    /// For something that far in, the chance it ends within `more` seconds.
    fn ends_within(&self, from: &Survival, more: f64) -> f64 {
        if more <= 0.0 {
            return 0.0;
        }
        let total = self.total();
        if from.left <= total * 1e-9 || total <= 0.0 {
            // Past everything seen: take it as memoryless with the mean.
            return 1.0 - (-more / self.mean.max(1.0)).exp();
        }
        ((self.at(from.elapsed + more) - from.below) / from.left).clamp(0.0, 1.0)
    }
}

/// Something `elapsed` seconds into a curve: the mass below that point and the mass left.
#[derive(Debug, Clone, Copy)]
struct Survival {
    elapsed: f64,
    below: f64,
    left: f64,
}

/// Calls ringing for the same time (dialled together).
#[derive(Debug, Clone, Copy)]
struct RingGroup {
    age: f64,
    calls: usize,
    /// Live answers expected before `age`, and the chance mass of everything still to come.
    live_below: f64,
    still: f64,
}

#[derive(Debug, Clone)]
struct Curves {
    live: Cdf,
    not_live: Cdf,
    talk: Cdf,
    wrap: Cdf,
}

impl Curves {
    fn live_rate(&self) -> f64 {
        let all = self.live.total() + self.not_live.total();
        if all > 0.0 {
            self.live.total() / all
        } else {
            0.0
        }
    }

    fn ringing_groups(&self, ages: &[f64]) -> Vec<RingGroup> {
        let mut sorted = ages.to_vec();
        sorted.sort_by(f64::total_cmp);
        let all = self.live.total() + self.not_live.total();
        let mut groups: Vec<RingGroup> = Vec::new();
        for age in sorted {
            match groups.last_mut() {
                Some(g) if g.age == age => g.calls += 1,
                _ => {
                    let live_below = self.live.at(age);
                    groups.push(RingGroup {
                        age,
                        calls: 1,
                        live_below,
                        still: all - live_below - self.not_live.at(age),
                    });
                }
            }
        }
        groups
    }

    /// For calls ringing `g.age` seconds, the chance a person answers within `more` seconds.
    fn answer_within(&self, g: &RingGroup, more: f64) -> f64 {
        let all = self.live.total() + self.not_live.total();
        if g.still <= all * 1e-9 {
            return 0.0;
        }
        ((self.live.at(g.age + more) - g.live_below) / g.still).clamp(0.0, 1.0)
    }
}

/// Past this many uncertain terms at one step, demand over supply is taken as normal; below
/// it, its distribution is computed exactly (few operators and calls are where the normal
/// approximation is worst).
const EXACT_TERMS: usize = 32;
/// The horizon is looked at every this many seconds.
const STEP_SECS: f64 = 2.0;
/// The learnt curves are rebuilt (and old observations faded) at most this often.
const CURVES_EVERY_SECS: f64 = 5.0;

/// Demand over supply, second by second over the answer horizon. Demand minus supply at a
/// step is a constant plus a sum of independent Bernoulli terms (a call ringing is answered by
/// then; an operator busy now is *not* free by then), plus the new dials' answers.
struct Horizon {
    steps: Vec<Step>,
    /// Per step: expected operators free by then (for `predicted_free`).
    free: Vec<f64>,
}

struct Step {
    /// The integer part of demand minus supply.
    base: f64,
    mean: f64,
    var: f64,
    /// A new dial's chance of a live answer by this step.
    u: f64,
    /// The chance that a new dial's live answer, if it comes, comes in the second before this
    /// step.
    weight: f64,
    /// The exact distribution of the uncertain terms plus the new dials so far, while small.
    pmf: Option<Vec<f64>>,
}

impl Step {
    /// The chance that demand has caught up with supply by then: a customer answering now
    /// finds every operator free by then promised to someone who answered before them.
    fn all_taken(&self) -> f64 {
        match &self.pmf {
            Some(pmf) => pmf
                .iter()
                .enumerate()
                .filter(|(k, _)| self.base + *k as f64 >= 0.0)
                .map(|(_, p)| p)
                .sum(),
            None if self.var <= 1e-12 => f64::from(u8::from(self.base + self.mean > -0.5)),
            None => 1.0 - normal_cdf((-0.5 - self.base - self.mean) / self.var.sqrt()),
        }
    }

    /// Adds one more new dial.
    fn add_dial(&mut self) {
        let u = self.u;
        self.mean += u;
        self.var += u * (1.0 - u);
        if let Some(pmf) = &mut self.pmf {
            if pmf.len() > EXACT_TERMS {
                self.pmf = None;
            } else {
                convolve(pmf, u);
            }
        }
    }
}

/// Adds a Poisson count with this mean (the future calls' answers), cut where it is negligible.
fn convolve_poisson(pmf: &mut Vec<f64>, mean: f64) {
    if mean <= 1e-9 {
        return;
    }
    let top = (mean + 6.0 * mean.sqrt() + 3.0).ceil() as usize;
    let mut poisson = Vec::with_capacity(top + 1);
    let mut term = (-mean).exp();
    for k in 0..=top {
        poisson.push(term);
        term *= mean / (k + 1) as f64;
    }
    let mut out = vec![0.0; pmf.len() + top];
    for (i, a) in pmf.iter().enumerate() {
        for (j, b) in poisson.iter().enumerate() {
            out[i + j] += a * b;
        }
    }
    *pmf = out;
}

fn convolve(pmf: &mut Vec<f64>, p: f64) {
    pmf.push(0.0);
    for k in (1..pmf.len()).rev() {
        pmf[k] = pmf[k] * (1.0 - p) + pmf[k - 1] * p;
    }
    pmf[0] *= 1.0 - p;
}

/// The uncertain terms of one step (with how many calls share each chance), summed as they
/// come; a certain term moves the step's integer part instead.
#[derive(Default)]
struct Terms {
    uncertain: Vec<(f64, usize)>,
    count: usize,
    mean: f64,
    var: f64,
}

impl Terms {
    fn clear(&mut self) {
        self.uncertain.clear();
        self.count = 0;
        self.mean = 0.0;
        self.var = 0.0;
    }

    fn add(&mut self, q: f64, n: usize, base: &mut f64) {
        if q >= 1.0 - 1e-9 {
            *base += n as f64;
        } else if q > 1e-9 {
            self.uncertain.push((q, n));
            self.count += n;
            self.mean += q * n as f64;
            self.var += q * (1.0 - q) * n as f64;
        }
    }
}

impl Horizon {
    fn new(view: &View, m: &Curves, p: &Params, flow: f64) -> Horizon {
        let grace = p.connect_limit_secs;
        let end = (p.dial_timeout_secs.max(1.0) / STEP_SECS).ceil() as usize;
        let all = m.live.total() + m.not_live.total();
        let wrap = m.wrap.mean();
        // What does not depend on the step is worked out once: how far each busy operator
        // and each ringing call already is into its curve. Calls dialled together ring for
        // the same time and are one group.
        let talkers: Vec<(Busy, Survival)> = view.talking.iter().map(|b| (*b, m.talk.survival(b.elapsed))).collect();
        let wrappers: Vec<(Busy, Survival)> = view.wrapping.iter().map(|b| (*b, m.wrap.survival(b.elapsed))).collect();
        let rings = m.ringing_groups(view.ringing);
        // People expected to answer by each step among calls dialled from now on at `flow`.
        let mut future = 0.0;
        let mut steps = Vec::with_capacity(end + 1);
        let mut free = Vec::with_capacity(end + 1);
        let mut terms = Terms::default();
        for s in 0..=end {
            let h = s as f64 * STEP_SECS;
            terms.clear();
            let mut base = view.waiting as f64 - view.ready as f64 - (talkers.len() + wrappers.len()) as f64;
            let mut expected_free = view.ready as f64;
            for (b, from) in &talkers {
                let q = match b.remaining {
                    Some(left) => f64::from(u8::from(left + wrap <= h + grace)),
                    None => m.talk.ends_within(from, h + grace - wrap),
                };
                expected_free += q;
                terms.add(1.0 - q, 1, &mut base);
            }
            for (b, from) in &wrappers {
                let q = match b.remaining {
                    Some(left) => f64::from(u8::from(left <= h + grace)),
                    None => m.wrap.ends_within(from, h + grace),
                };
                expected_free += q;
                terms.add(1.0 - q, 1, &mut base);
            }
            for g in &rings {
                terms.add(m.answer_within(g, h), g.calls, &mut base);
            }
            if s > 0 && all > 0.0 {
                future += flow * STEP_SECS * m.live.at(h - STEP_SECS / 2.0) / all;
            }
            let mean = terms.mean + future;
            let var = terms.var + future;
            let pmf = (terms.count <= EXACT_TERMS).then(|| {
                let mut pmf = vec![1.0];
                for &(q, n) in &terms.uncertain {
                    for _ in 0..n {
                        convolve(&mut pmf, q);
                    }
                }
                convolve_poisson(&mut pmf, future);
                pmf
            });
            let u = if all > 0.0 { m.live.at(h) / all } else { 0.0 };
            let lives = m.live.total();
            let weight = if lives > 0.0 && s > 0 {
                (m.live.at(h) - m.live.at(h - STEP_SECS)) / lives
            } else {
                0.0
            };
            steps.push(Step {
                base,
                weight,
                mean,
                var,
                u,
                pmf,
            });
            free.push(expected_free);
        }
        Horizon { steps, free }
    }

    /// The chance that one more new dial, answered by a person, finds no operator within the
    /// connect limit, with the new dials added so far answering alongside it.
    fn next_abandon_chance(&self) -> f64 {
        self.steps.iter().map(|s| s.weight * s.all_taken()).sum()
    }

    fn add_dial(&mut self) {
        for s in &mut self.steps {
            s.add_dial();
        }
    }

    fn free_at(&self, secs: f64) -> f64 {
        let i = ((secs.max(0.0) / STEP_SECS).round() as usize).min(self.free.len().saturating_sub(1));
        self.free.get(i).copied().unwrap_or(0.0)
    }
}

fn normal_cdf(z: f64) -> f64 {
    0.5 * erfc(-z * FRAC_1_SQRT_2)
}

/// Complementary error function (Numerical Recipes' Chebyshev fit, relative error < 1.2e-7).
fn erfc(x: f64) -> f64 {
    let z = x.abs();
    let t = 1.0 / (1.0 + 0.5 * z);
    let poly = -z * z - 1.265_512_23
        + t * (1.000_023_68
            + t * (0.374_091_96
                + t * (0.096_784_18
                    + t * (-0.186_288_06
                        + t * (0.278_868_07
                            + t * (-1.135_203_98 + t * (1.488_515_87 + t * (-0.822_152_23 + t * 0.170_872_77))))))));
    let r = t * poly.exp();
    if x >= 0.0 {
        r
    } else {
        2.0 - r
    }
}

/// Gamma density with shape 3 and this mean (unnormalised).
fn gamma3(x: f64, mean: f64) -> f64 {
    let theta = (mean / 3.0).max(0.1);
    x * x * (-x / theta).exp()
}

/// Lognormal density with this mean and a coefficient of variation of 1 (unnormalised).
fn lognormal_cv1(x: f64, mean: f64) -> f64 {
    let sigma2 = 2f64.ln();
    let mu = mean.max(1.0).ln() - sigma2 / 2.0;
    if x <= 0.0 {
        return 0.0;
    }
    let d = x.ln() - mu;
    (-d * d / (2.0 * sigma2)).exp() / x
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn params() -> Params {
        Params {
            target_abandon_rate: 0.03,
            connect_limit_secs: 2.0,
            dial_timeout_secs: 28.0,
            max_ringing_per_operator: 8.0,
        }
    }

    fn view<'a>(ready: usize, talking: &'a [Busy], ringing: &'a [f64], window: WindowRate) -> View<'a> {
        View {
            ready,
            waiting: 0,
            talking,
            wrapping: &[],
            ringing,
            room: 1000,
            window,
        }
    }

    fn busy(elapsed: f64) -> Busy {
        Busy {
            elapsed,
            remaining: None,
        }
    }

    /// Teaches the pacer a live-answer rate `p` with answers at 8 s and the rest at 28 s.
    fn teach(pacer: &mut Predictive, p: f64, dials: usize, now: f64) {
        for i in 0..dials {
            let live = (i as f64 * p).floor() != ((i + 1) as f64 * p).floor();
            let o = if live {
                Outcome::LiveAnswer { after_secs: 8.0 }
            } else {
                Outcome::NoLiveAnswer { after_secs: 28.0 }
            };
            pacer.observe(o, now);
        }
    }

    #[test]
    fn with_a_low_answer_rate_it_dials_several_calls_per_ready_operator() {
        let mut pacer = Predictive::new(params(), Priors::default());
        teach(&mut pacer, 0.1, 2000, 0.0);
        let d = pacer.decide(&view(5, &[], &[], WindowRate::default()), 0.0);
        assert!((d.live_rate - 0.1).abs() < 0.01, "{d:?}");
        assert!(d.calls > 5, "five ready operators and a 10 % answer rate: {d:?}");
        assert!(!d.fallback);
    }

    #[test]
    fn at_the_target_it_dials_at_most_one_call_per_ready_operator() {
        let mut pacer = Predictive::new(params(), Priors::default());
        teach(&mut pacer, 0.1, 2000, 0.0);
        let at = WindowRate {
            answered: 100,
            abandoned: 3,
        };
        let d = pacer.decide(&view(5, &[], &[], at), 0.0);
        assert!(d.fallback);
        assert_eq!(d.calls, 5);
        let d = pacer.decide(&view(5, &[], &[1.0, 2.0], at), 0.0);
        assert_eq!(d.calls, 3, "two calls ringing already count");
        let under = WindowRate {
            answered: 101,
            abandoned: 3,
        };
        assert!(!pacer.decide(&view(5, &[], &[], under), 0.0).fallback);
    }

    #[test]
    fn nobody_logged_in_means_no_calls() {
        let mut pacer = Predictive::new(params(), Priors::default());
        let d = pacer.decide(&view(0, &[], &[], WindowRate::default()), 0.0);
        assert_eq!(d.calls, 0);
    }

    #[test]
    fn operators_about_to_finish_are_dialled_for_before_they_are_free() {
        let mut pacer = Predictive::new(params(), Priors::default());
        teach(&mut pacer, 0.3, 1000, 0.0);
        for _ in 0..200 {
            pacer.observe(Outcome::Talk { secs: 60.0 }, 0.0);
            pacer.observe(Outcome::WrapUp { secs: 5.0 }, 0.0);
        }
        let finishing = [busy(59.0), busy(59.0), busy(59.0)];
        let fresh = [busy(1.0), busy(1.0), busy(1.0)];
        let soon = pacer.decide(&view(0, &finishing, &[], WindowRate::default()), 0.0);
        let later = pacer.decide(&view(0, &fresh, &[], WindowRate::default()), 0.0);
        assert!(soon.calls > 0, "{soon:?}");
        assert!(soon.calls > later.calls, "{soon:?} / {later:?}");
    }

    #[test]
    fn a_fall_in_the_answer_rate_is_followed() {
        let mut pacer = Predictive::new(params(), Priors::default());
        teach(&mut pacer, 0.3, 3000, 0.0);
        let before = pacer.decide(&view(5, &[], &[], WindowRate::default()), 0.0);
        for minute in 1..=120 {
            teach(&mut pacer, 0.1, 100, minute as f64 * 60.0);
            pacer.decide(&view(5, &[], &[], WindowRate::default()), minute as f64 * 60.0);
        }
        let after = pacer.decide(&view(5, &[], &[], WindowRate::default()), 7200.0);
        assert!((before.live_rate - 0.3).abs() < 0.02, "{before:?}");
        assert!((after.live_rate - 0.1).abs() < 0.02, "two hours later: {after:?}");
        assert!(after.calls > before.calls);
    }

    #[test]
    fn abandons_lower_theta_and_connected_calls_raise_it() {
        let mut pacer = Predictive::new(params(), Priors::default());
        let start = pacer.decide(&view(1, &[], &[], WindowRate::default()), 0.0).theta;
        pacer.observe(Outcome::Connected { abandoned: true }, 0.0);
        let down = pacer.decide(&view(1, &[], &[], WindowRate::default()), 0.0).theta;
        for _ in 0..100 {
            pacer.observe(Outcome::Connected { abandoned: false }, 0.0);
        }
        let up = pacer.decide(&view(1, &[], &[], WindowRate::default()), 0.0).theta;
        assert!(down < start && up > down, "{start} {down} {up}");
    }

    #[test]
    fn the_oracle_knows_when_operators_free_up() {
        let mut d = TrueDistributions {
            live: vec![0.0; TrueDistributions::answer_bins(28.0)],
            not_live: vec![0.0; TrueDistributions::answer_bins(28.0)],
            talk: vec![0.0; TrueDistributions::TALK_BINS],
            wrap: vec![0.0; TrueDistributions::WRAP_BINS],
        };
        d.live[16] = 0.5; // 8 s
        d.not_live[56] = 0.5; // 28 s
        d.talk[30] = 1.0;
        d.wrap[5] = 1.0;
        let mut oracle = Predictive::told(params(), d);
        let gone = [Busy {
            elapsed: 100.0,
            remaining: Some(400.0),
        }];
        let soon = [Busy {
            elapsed: 100.0,
            remaining: Some(1.0),
        }];
        assert_eq!(oracle.decide(&view(0, &gone, &[], WindowRate::default()), 0.0).calls, 0);
        assert!(oracle.decide(&view(0, &soon, &[], WindowRate::default()), 0.0).calls >= 1);
    }

    #[test]
    fn only_the_calls_placed_count_as_the_flow_of_calls() {
        // Many ready operators: pacing asks for hundreds, a rate limit lets 50 through. The next
        // decision must not believe the hundreds are ringing somewhere and hold back.
        let mut pacer = Predictive::new(params(), Priors::default());
        let first = pacer.decide(&view(186, &[], &[], WindowRate::default()), 0.0);
        assert!(first.calls > 100, "{first:?}");
        pacer.dialled(50, 0.0);
        let ringing = [1.0; 50];
        let next = pacer.decide(&view(186, &[], &ringing, WindowRate::default()), 1.0);
        let mut told_all = Predictive::new(params(), Priors::default());
        told_all.decide(&view(186, &[], &[], WindowRate::default()), 0.0);
        told_all.dialled(first.calls, 0.0);
        let held = told_all.decide(&view(186, &[], &ringing, WindowRate::default()), 1.0);
        assert!(next.calls > 50, "50 placed of {}: then {next:?}", first.calls);
        assert!(next.calls > held.calls, "{next:?} / {held:?}");
    }

    #[test]
    fn before_any_data_a_short_dial_timeout_does_not_make_it_bolder() {
        // Nobody answers after the dial gave up: with a 5 s timeout every answer comes within
        // the horizon, so the first calls can only be fewer than with a 28 s one.
        for ready in [2usize, 5, 20] {
            let first = |timeout: f64| {
                let p = Params {
                    dial_timeout_secs: timeout,
                    ..params()
                };
                let mut pacer = Predictive::new(p, Priors::with_wrap_up(3.0));
                pacer.decide(&view(ready, &[], &[], WindowRate::default()), 0.0).calls
            };
            let (short, long) = (first(5.0), first(28.0));
            assert!(
                short <= long,
                "{ready} ready: {short} calls with a 5 s timeout, {long} with 28 s"
            );
        }
    }

    proptest! {
        #[test]
        fn never_above_the_limits_and_more_ready_operators_never_mean_fewer_calls(
            ready in 0usize..30,
            talking in proptest::collection::vec(0.0f64..900.0, 0..30),
            ringing in proptest::collection::vec(0.0f64..40.0, 0..60),
            waiting in 0usize..5,
            room in 0usize..200,
            answered in 0u64..500,
            abandoned in 0u64..30,
            p in 0.02f64..0.9,
        ) {
            let mut pacer = Predictive::new(params(), Priors::default());
            teach(&mut pacer, p, 500, 0.0);
            let talking: Vec<Busy> = talking.into_iter().map(busy).collect();
            let window = WindowRate { answered, abandoned: abandoned.min(answered) };
            let v = View { ready, waiting, talking: &talking, wrapping: &[], ringing: &ringing, room, window };
            // The same pacer twice would see its own first dials as the flow of calls.
            let mut twin = pacer.clone();
            let d = pacer.decide(&v, 0.0);
            prop_assert!(d.calls <= room);
            let operators = ready + talking.len();
            prop_assert!(ringing.len() + d.calls <= ((8.0 * operators as f64) as usize).max(ringing.len()));
            if window.rate().is_some_and(|r| r >= 0.03) {
                prop_assert!(d.calls <= ready.saturating_sub(ringing.len() + waiting));
            }
            if operators == 0 {
                prop_assert_eq!(d.calls, 0);
            }
            let more = View { ready: ready + 1, ..v };
            let room_cap_bound = d.calls == room;
            let d2 = twin.decide(&more, 0.0);
            prop_assert!(d2.calls >= d.calls || room_cap_bound, "{:?} then {:?}", d, d2);
        }
    }
}
