//! `obzvon simulate`: the table, with progress on stderr.

use std::io::Write;
use std::time::Instant;

use anyhow::{bail, Context};

use super::policy::PolicyKind;
use super::{header, line, table, Limits, Population, Scenario, Table};

pub struct Options {
    pub seeds: u64,
    pub hours: f64,
    pub agents: Vec<usize>,
    pub hit_rates: Vec<f64>,
    pub policies: Vec<String>,
    pub extra: bool,
    pub target_abandon_rate: f64,
    pub json: bool,
    pub threads: Option<usize>,
    pub talk_mean_secs: f64,
    pub wrap_secs: f64,
    pub machine_share: f64,
    pub login_spread_secs: f64,
}

pub fn run(o: &Options) -> anyhow::Result<()> {
    let t = plan(o)?;
    let started = Instant::now();
    let total = t.scenarios.len() * t.policies.len();
    let mut done = 0;
    if !o.json {
        println!("{}", header());
    }
    let mut out = std::io::stdout();
    table(&t, &mut |row| {
        done += 1;
        let text = if o.json {
            serde_json::to_string(row).expect("a row serialises")
        } else {
            line(row)
        };
        let _ = writeln!(out, "{text}");
        eprintln!(
            "[{done}/{total}] {} {} ({:.1} s)",
            row.scenario,
            row.policy,
            started.elapsed().as_secs_f64()
        );
    });
    eprintln!(
        "simulated {total} rows × {} seeds of {} h in {:.1} s on {} threads",
        t.seeds,
        o.hours,
        started.elapsed().as_secs_f64(),
        t.threads
    );
    Ok(())
}

fn plan(o: &Options) -> anyhow::Result<Table> {
    if o.seeds == 0 || o.seeds > 10_000 {
        bail!("--seeds must be between 1 and 10000");
    }
    if !(o.hours > 0.0 && o.hours <= 24.0 * 31.0) {
        bail!("--hours must be above 0 and at most 744");
    }
    if !(o.target_abandon_rate > 0.0 && o.target_abandon_rate < 1.0) {
        bail!("--target-abandon-rate is a fraction, e.g. 0.03 for 3 %");
    }
    if !(o.talk_mean_secs >= 1.0 && o.talk_mean_secs <= 3600.0) {
        bail!("--talk-mean-secs must be between 1 and 3600");
    }
    if !(o.wrap_secs >= 0.0 && o.wrap_secs <= 3600.0) {
        bail!("--wrap-secs must be between 0 and 3600");
    }
    if !(0.0..=1.0).contains(&o.machine_share) {
        bail!("--machine-share is a fraction between 0 and 1");
    }
    if !(o.login_spread_secs >= 0.0 && o.login_spread_secs <= o.hours * 3600.0) {
        bail!("--login-spread-secs must be between 0 and the run's length");
    }
    if let Some(a) = o.agents.iter().find(|a| **a == 0 || **a > 5000) {
        bail!("--agents: {a} is not between 1 and 5000");
    }
    if let Some(p) = o.hit_rates.iter().find(|p| !(**p > 0.0 && **p <= 1.0)) {
        bail!("--hit-rates: {p} is not a fraction above 0 and at most 1");
    }
    let policies = o
        .policies
        .iter()
        .map(|name| match name.as_str() {
            "progressive" => Ok(PolicyKind::Progressive),
            "ratio" => Ok(PolicyKind::Ratio(1.0)),
            "vicidial-adapt" => Ok(PolicyKind::VicidialAdapt),
            "predictive" => Ok(PolicyKind::Predictive),
            "oracle" => Ok(PolicyKind::Oracle),
            other => Err(other.to_string()),
        })
        .collect::<Result<Vec<_>, _>>()
        .map_err(|bad| {
            anyhow::anyhow!("unknown policy {bad:?}: use progressive, ratio, vicidial-adapt, predictive or oracle")
        })?;
    let mut scenarios: Vec<Scenario> = Scenario::defaults(o.hours)
        .into_iter()
        .filter(|s| s.hit_rate_from == s.hit_rate_to && s.login_spread_secs > 0.0)
        .collect();
    if !o.agents.is_empty() || !o.hit_rates.is_empty() {
        let agents = if o.agents.is_empty() {
            vec![5, 20, 100]
        } else {
            o.agents.clone()
        };
        let rates = if o.hit_rates.is_empty() {
            vec![0.1, 0.3]
        } else {
            o.hit_rates.clone()
        };
        let template = scenarios.first().cloned().context("no default scenario")?;
        scenarios = agents
            .iter()
            .flat_map(|&a| {
                let template = template.clone();
                rates.iter().map(move |&p| Scenario {
                    name: format!("N={a} p={p}"),
                    agents: a,
                    hit_rate_from: p,
                    hit_rate_to: p,
                    ..template.clone()
                })
            })
            .collect();
    }
    for s in &mut scenarios {
        s.login_spread_secs = o.login_spread_secs;
    }
    if o.extra {
        scenarios.extend(
            Scenario::defaults(o.hours)
                .into_iter()
                .filter(|s| s.hit_rate_from != s.hit_rate_to || s.login_spread_secs == 0.0),
        );
    }
    let threads = o
        .threads
        .unwrap_or_else(|| std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1));
    Ok(Table {
        scenarios,
        policies,
        seeds: o.seeds,
        population: Population {
            talk_mean_secs: o.talk_mean_secs,
            wrap_secs: o.wrap_secs,
            machine_share: o.machine_share,
            ..Population::default()
        },
        limits: Limits {
            target_abandon_rate: o.target_abandon_rate,
            ..Limits::default()
        },
        threads: threads.max(1),
    })
}
