//! Which ready operator takes an answered customer: the preferred one (a callback) if
//! eligible, else by the campaign's distribution among operators assigned to it who have all
//! its skills.

use std::time::Instant;

use crate::campaigns::spec::{CampaignSpec, Distribution};
use crate::ids::OperatorId;

/// A ready operator who could take the call.
#[derive(Debug, Clone, Copy)]
pub struct Candidate<'a> {
    pub id: OperatorId,
    pub skills: &'a [String],
    /// Ready since (longest idle first).
    pub idle_since: Instant,
}

pub fn choose_operator<'a>(
    candidates: impl Iterator<Item = Candidate<'a>>,
    spec: &CampaignSpec,
    preferred: Option<OperatorId>,
    last: Option<OperatorId>,
) -> Option<OperatorId> {
    let mut eligible: Vec<Candidate<'a>> = candidates.filter(|c| spec.may_take(c.id, c.skills)).collect();
    if let Some(p) = preferred.filter(|p| eligible.iter().any(|c| c.id == *p)) {
        return Some(p);
    }
    match spec.distribution {
        Distribution::LongestIdle => eligible.iter().min_by_key(|c| (c.idle_since, c.id)).map(|c| c.id),
        Distribution::RoundRobin => {
            eligible.sort_by_key(|c| c.id);
            eligible
                .iter()
                .find(|c| last.is_some_and(|l| c.id > l))
                .or(eligible.first())
                .map(|c| c.id)
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    struct Op {
        id: OperatorId,
        skills: Vec<String>,
        since: Instant,
    }

    fn op(idle_secs: u64, skills: &[&str]) -> Op {
        Op {
            id: OperatorId::new(),
            skills: skills.iter().map(|s| s.to_string()).collect(),
            since: Instant::now() - Duration::from_secs(idle_secs),
        }
    }

    fn all(ops: &[Op]) -> impl Iterator<Item = Candidate<'_>> {
        ops.iter().map(|o| Candidate {
            id: o.id,
            skills: &o.skills,
            idle_since: o.since,
        })
    }

    #[test]
    fn longest_idle_ready_operator_takes_the_call() {
        let s = [op(5, &[]), op(50, &[]), op(20, &[])];
        let spec = CampaignSpec::default();
        assert_eq!(choose_operator(all(&s), &spec, None, None), Some(s[1].id));
        assert_eq!(choose_operator(all(&[]), &spec, None, None), None);
    }

    #[test]
    fn round_robin_goes_around_in_a_fixed_order() {
        let s = [op(1, &[]), op(1, &[]), op(1, &[])];
        let spec = CampaignSpec {
            distribution: Distribution::RoundRobin,
            ..CampaignSpec::default()
        };
        let mut order = Vec::new();
        let mut last = None;
        for _ in 0..6 {
            last = choose_operator(all(&s), &spec, None, last);
            order.push(last.unwrap());
        }
        assert_eq!(order[..3], order[3..], "repeats every three calls");
        let distinct: std::collections::HashSet<_> = order[..3].iter().collect();
        assert_eq!(distinct.len(), 3, "everyone gets a call");
    }

    #[test]
    fn skills_and_assignment_limit_who_is_eligible_and_callbacks_prefer_their_operator() {
        let s = [op(100, &["en"]), op(10, &["ru", "sales"]), op(1, &["ru"])];
        let skilled = CampaignSpec {
            skills: vec!["ru".into(), "sales".into()],
            ..CampaignSpec::default()
        };
        assert_eq!(choose_operator(all(&s), &skilled, None, None), Some(s[1].id));
        let assigned = CampaignSpec {
            operators: vec![s[2].id],
            ..CampaignSpec::default()
        };
        assert_eq!(choose_operator(all(&s), &assigned, None, None), Some(s[2].id));
        let spec = CampaignSpec::default();
        assert_eq!(choose_operator(all(&s), &spec, Some(s[2].id), None), Some(s[2].id));
        // A preferred operator who is not eligible is passed over.
        assert_eq!(choose_operator(all(&s), &skilled, Some(s[0].id), None), Some(s[1].id));
    }
}
