//! The pacing policies the simulator compares. `progressive`, `ratio` and `predictive` are the
//! dialer's own code (`dialer::pacing`, `dialer::predictive`); `oracle` is the predictive code
//! told the truth; `vicidial-adapt` is a replica of VICIdial's `AST_VDadapt.pl` and
//! `AST_VDauto_dial.pl` with their defaults.

use std::collections::VecDeque;

use crate::dialer::pacing::{calls_to_place, effective_ratio, PacingInput};
use crate::dialer::predictive::{Outcome, Params, Predictive, Priors, TrueDistributions, View};

/// A policy by name, as on the command line and in the table.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum PolicyKind {
    Progressive,
    /// Progressive at a fixed ratio; the simulator searches the best one for the target.
    Ratio(f64),
    VicidialAdapt,
    Predictive,
    Oracle,
}

impl PolicyKind {
    pub fn name(&self) -> &'static str {
        match self {
            PolicyKind::Progressive => "progressive",
            PolicyKind::Ratio(_) => "ratio",
            PolicyKind::VicidialAdapt => "vicidial-adapt",
            PolicyKind::Predictive => "predictive",
            PolicyKind::Oracle => "oracle",
        }
    }
}

/// What a policy is asked and told by the simulator, exactly as the scheduler asks and the
/// engine tells.
pub trait Policy {
    /// Calls to place now.
    fn decide(&mut self, view: &View, now: f64) -> usize;
    fn observe(&mut self, outcome: Outcome, now: f64);
    /// Whether it is asked again as soon as an operator frees up (obzvon's scheduler is woken
    /// by the engine; VICIdial's dialer runs on its own loop).
    fn wakes(&self) -> bool {
        true
    }
    /// Whether it is told the remaining talk times (the oracle).
    fn knows_the_future(&self) -> bool {
        false
    }
    /// Tells the oracle the population's true distributions (again when they drift).
    fn tell(&mut self, _truth: &TrueDistributions) {}
    /// How many calls were placed after the last decision (the rate limit may allow fewer).
    fn dialled(&mut self, _calls: usize, _now: f64) {}
}

/// obzvon's progressive pacing at `ratio` calls per ready operator, with its rule that a
/// campaign at its abandon cap falls back to one call per ready operator.
pub struct Progressive {
    ratio: f64,
    cap: f64,
}

impl Progressive {
    pub fn new(ratio: f64, cap: f64) -> Progressive {
        Progressive { ratio, cap }
    }
}

impl Policy for Progressive {
    fn decide(&mut self, view: &View, _now: f64) -> usize {
        let ratio = effective_ratio(self.ratio, view.window.rate(), self.cap);
        let in_flight = view.ringing.len() + view.waiting;
        calls_to_place(PacingInput {
            ready_operators: view.ready,
            ratio,
            dialing: in_flight,
            live: 0,
            max_concurrent: view.room,
        })
    }

    fn observe(&mut self, _outcome: Outcome, _now: f64) {}
}

/// obzvon's predictive pacing; `told` makes it the oracle.
pub struct Ours {
    pacer: Predictive,
    oracle: bool,
}

impl Ours {
    /// Starts from the default priors, with the wrap-up the campaign sets (as the scheduler does).
    pub fn predictive(params: Params, wrap_up_secs: f64) -> Ours {
        Ours {
            pacer: Predictive::new(params, Priors::with_wrap_up(wrap_up_secs)),
            oracle: false,
        }
    }

    pub fn oracle(params: Params, truth: TrueDistributions) -> Ours {
        Ours {
            pacer: Predictive::told(params, truth),
            oracle: true,
        }
    }
}

impl Policy for Ours {
    fn decide(&mut self, view: &View, now: f64) -> usize {
        self.pacer.decide(view, now).calls
    }

    fn observe(&mut self, outcome: Outcome, now: f64) {
        self.pacer.observe(outcome, now);
    }

    fn dialled(&mut self, calls: usize, now: f64) {
        self.pacer.dialled(calls, now);
    }

    fn knows_the_future(&self) -> bool {
        self.oracle
    }

    fn tell(&mut self, truth: &TrueDistributions) {
        if self.oracle {
            self.pacer.tell(truth.clone());
        }
    }
}

/// What VICIdial's daily drop brake does once today's drops over answers pass the limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AdaptMode {
    /// Level to 1.0.
    HardLimit,
    /// Level halved.
    Average,
}

/// A replica of VICIdial's adaptive pacing with its defaults (`AST_VDadapt.pl` build 250218,
/// `AST_VDauto_dial.pl` build 240917):
/// - every second it samples ready agents (READY/DONE), answered calls waiting for an agent,
///   and all logged-in agents; means over the last 15 samples;
/// - every 15 s: `level *= 1 + (avg_ready - avg_waiting + dl_diff_target) / avg_agents`
///   (intensity 0), capped at `adaptive_maximum_level` (3.0) and floored at 1.0; halved if
///   more than 20 calls were placed in the last minute and over half of them dropped; and, once
///   more than 50 calls were placed today and today's drops over answers exceed
///   `adaptive_dropped_percentage` (3 %), set to 1.0 (ADAPT_HARD_LIMIT) or halved
///   (ADAPT_AVERAGE); drop figures are refreshed every 60 s;
/// - its dialer loop, every 2.5 s, places `round(level × (ready + in call)) − calls up`,
///   where agents in wrap-up (VICIdial's DEAD: in dispo, customer gone) are not counted and
///   calls up are those ringing, waiting and connected.
pub struct VicidialAdapt {
    mode: AdaptMode,
    max_level: f64,
    drop_limit: f64,
    level: f64,
    samples: VecDeque<(f64, f64, f64)>,
    next_sample: f64,
    next_level: f64,
    next_drops: f64,
    next_dial: f64,
    dials_today: u64,
    answers_today: u64,
    drops_today: u64,
    /// Dials and drops of the last minute, by time.
    recent_dials: VecDeque<f64>,
    recent_drops: VecDeque<f64>,
    /// The drop figures as of the last 60-second refresh.
    seen: (u64, u64, u64, usize, usize),
}

impl VicidialAdapt {
    pub fn new(mode: AdaptMode) -> VicidialAdapt {
        VicidialAdapt {
            mode,
            max_level: 3.0,
            drop_limit: 0.03,
            level: 1.0,
            samples: VecDeque::new(),
            next_sample: 0.0,
            next_level: 15.0,
            next_drops: 0.0,
            next_dial: 0.0,
            dials_today: 0,
            answers_today: 0,
            drops_today: 0,
            recent_dials: VecDeque::new(),
            recent_drops: VecDeque::new(),
            seen: (0, 0, 0, 0, 0),
        }
    }

    pub fn level(&self) -> f64 {
        self.level
    }

    fn update_level(&mut self) {
        let n = self.samples.len().max(1) as f64;
        let (ready, waiting, agents) = self
            .samples
            .iter()
            .fold((0.0, 0.0, 0.0), |a, s| (a.0 + s.0, a.1 + s.1, a.2 + s.2));
        let (ready, waiting, agents) = (ready / n, waiting / n, agents / n);
        if agents <= 0.0 {
            return;
        }
        let diff = (ready - waiting) / agents;
        let mut level = (self.level * (1.0 + diff) * 1000.0).round() / 1000.0;
        level = level.min(self.max_level).max(1.0);
        let (dials, answers, drops, minute_dials, minute_drops) = self.seen;
        if minute_dials > 20 && minute_drops as f64 / minute_dials as f64 > 0.5 {
            level /= 2.0;
        }
        let answers = answers.max(1);
        if dials > 50 && drops as f64 / answers as f64 > self.drop_limit {
            level = match self.mode {
                AdaptMode::HardLimit => 1.0,
                AdaptMode::Average => level / 2.0,
            };
        }
        self.level = level.max(1.0);
    }
}

impl Policy for VicidialAdapt {
    fn decide(&mut self, view: &View, now: f64) -> usize {
        let agents = view.ready + view.talking.len() + view.wrapping.len();
        while now >= self.next_sample {
            self.samples
                .push_back((view.ready as f64, view.waiting as f64, agents as f64));
            if self.samples.len() > 15 {
                self.samples.pop_front();
            }
            self.next_sample += 1.0;
        }
        while self.recent_dials.front().is_some_and(|t| *t < now - 60.0) {
            self.recent_dials.pop_front();
        }
        while self.recent_drops.front().is_some_and(|t| *t < now - 60.0) {
            self.recent_drops.pop_front();
        }
        if now >= self.next_drops {
            self.seen = (
                self.dials_today,
                self.answers_today,
                self.drops_today,
                self.recent_dials.len(),
                self.recent_drops.len(),
            );
            self.next_drops = now + 60.0;
        }
        if now >= self.next_level {
            self.update_level();
            self.next_level = now + 15.0;
        }
        if now < self.next_dial {
            return 0;
        }
        self.next_dial = now + 2.5;
        let dialable = (view.ready + view.talking.len()) as f64;
        let goal = (self.level * dialable).round() as usize;
        let up = view.ringing.len() + view.waiting + view.talking.len();
        let calls = goal.saturating_sub(up).min(view.room);
        self.dials_today += calls as u64;
        for _ in 0..calls {
            self.recent_dials.push_back(now);
        }
        calls
    }

    fn observe(&mut self, outcome: Outcome, now: f64) {
        if let Outcome::Connected { abandoned } = outcome {
            self.answers_today += 1;
            if abandoned {
                self.drops_today += 1;
                self.recent_drops.push_back(now);
            }
        }
    }

    fn wakes(&self) -> bool {
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dialer::predictive::{Busy, WindowRate};

    fn view<'a>(ready: usize, talking: &'a [Busy], ringing: &'a [f64], waiting: usize) -> View<'a> {
        View {
            ready,
            waiting,
            talking,
            wrapping: &[],
            ringing,
            room: 1000,
            window: WindowRate::default(),
        }
    }

    #[test]
    fn adapt_raises_its_level_while_agents_wait_and_caps_it() {
        let mut v = VicidialAdapt::new(AdaptMode::HardLimit);
        for s in 0..16 {
            v.decide(&view(10, &[], &[], 0), s as f64);
        }
        assert_eq!(
            v.level(),
            2.0,
            "all ten agents ready, nothing waiting: the level doubles"
        );
        for s in 16..46 {
            v.decide(&view(10, &[], &[], 0), s as f64);
        }
        assert_eq!(v.level(), 3.0, "capped at adaptive_maximum_level");
    }

    #[test]
    fn adapt_goes_to_one_once_todays_drops_pass_the_limit() {
        let mut v = VicidialAdapt::new(AdaptMode::HardLimit);
        for s in 0..31 {
            v.decide(&view(10, &[], &[], 0), s as f64);
        }
        assert!(v.level() > 1.0);
        v.dials_today = 100;
        for i in 0..100 {
            v.observe(Outcome::Connected { abandoned: i < 5 }, 31.0);
        }
        for s in 31..200 {
            v.decide(&view(10, &[], &[], 0), s as f64);
        }
        assert_eq!(v.level(), 1.0);
    }

    #[test]
    fn adapt_dials_level_times_agents_minus_calls_up_on_its_own_loop() {
        let mut v = VicidialAdapt::new(AdaptMode::HardLimit);
        let talking = [Busy {
            elapsed: 5.0,
            remaining: None,
        }; 2];
        assert_eq!(
            v.decide(&view(2, &talking, &[1.0], 0), 0.0),
            1,
            "1.0 × 4 − (1 ringing + 2 connected)"
        );
        assert_eq!(v.decide(&view(2, &talking, &[], 0), 1.0), 0, "not before 2.5 s");
    }

    #[test]
    fn progressive_at_a_ratio_counts_calls_already_ringing() {
        let mut p = Progressive::new(2.0, 0.03);
        assert_eq!(p.decide(&view(3, &[], &[1.0, 2.0], 0), 0.0), 4);
        let mut one = Progressive::new(1.0, 0.03);
        assert_eq!(one.decide(&view(3, &[], &[1.0], 1), 0.0), 1);
    }
}
