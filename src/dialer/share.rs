//! Operators shared by several dialling campaigns: each counts for one of them only, so two
//! campaigns on one team do not both dial for the same ready operator (which would double the
//! calls ringing per operator and the abandons with them).
//!
//! The share is kept from one scheduler round to the next: an operator stays with their campaign
//! while they work for it, and is shared out again when a call of theirs ends (busy last round,
//! ready now), when they log in, or when their campaign no longer may use them. Operators only one
//! campaign may use are that campaign's; the others go, the most constrained first, to the
//! campaign they may work for that counts the fewest operators, and on a tie to another than the
//! one they last worked for, so one operator shared by two campaigns alternates between them.
//! A campaign that found no due lead a moment ago takes part only for operators nobody else may
//! use, so a campaign waiting for its retries does not hold half the team idle.

use std::collections::HashMap;

use crate::campaigns::spec::CampaignSpec;
use crate::ids::{CampaignId, OperatorId};

/// A dialling campaign as the share sees it.
pub struct Taker<'a> {
    pub id: CampaignId,
    pub spec: &'a CampaignSpec,
    /// Found no due lead a moment ago.
    pub dry: bool,
}

/// A logged-in operator.
pub struct Member<'a> {
    pub id: OperatorId,
    pub skills: &'a [String],
    pub busy: bool,
}

/// Whom an operator counts for, and whether they were busy then.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Counted {
    pub campaign: CampaignId,
    pub busy: bool,
}

/// The share: for each logged-in operator some dialling campaign may use, whom they count for.
pub type Shares = HashMap<OperatorId, Counted>;

/// This round's share, from the last one.
pub fn share<'a>(takers: &[Taker], members: impl IntoIterator<Item = Member<'a>>, last: &Shares) -> Shares {
    let mut counts = vec![0usize; takers.len()];
    // (operator, busy now, index of the taker they count for)
    let mut picks: Vec<(OperatorId, bool, usize)> = Vec::new();
    let mut open: Vec<(Member, Vec<usize>, Option<CampaignId>)> = Vec::new();
    for m in members {
        let may: Vec<usize> = (0..takers.len())
            .filter(|&i| takers[i].spec.may_take(m.id, m.skills))
            .collect();
        let wet: Vec<usize> = may.iter().copied().filter(|&i| !takers[i].dry).collect();
        let may = if may.len() > 1 && !wet.is_empty() { wet } else { may };
        if may.is_empty() {
            continue;
        }
        let before = last.get(&m.id);
        let kept = before
            .filter(|b| b.busy <= m.busy)
            .and_then(|b| may.iter().copied().find(|&i| takers[i].id == b.campaign));
        match kept {
            Some(i) => {
                counts[i] += 1;
                picks.push((m.id, m.busy, i));
            }
            None => open.push((m, may, before.map(|b| b.campaign))),
        }
    }
    open.sort_by_key(|(m, may, _)| (may.len(), m.id));
    for (m, may, before) in open {
        let Some(&pick) = may
            .iter()
            .min_by_key(|&&i| (counts[i], Some(takers[i].id) == before, i))
        else {
            continue;
        };
        counts[pick] += 1;
        picks.push((m.id, m.busy, pick));
    }
    picks
        .into_iter()
        .map(|(op, busy, i)| {
            (
                op,
                Counted {
                    campaign: takers[i].id,
                    busy,
                },
            )
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(operators: &[OperatorId], skills: &[&str]) -> CampaignSpec {
        let mut s: CampaignSpec = serde_json::from_value(serde_json::json!({
            "name": "t", "trunk": "PJSIP/{number}@trunk", "caller_id": "+15550100",
        }))
        .expect("a minimal spec");
        s.operators = operators.to_vec();
        s.skills = skills.iter().map(|k| (*k).to_owned()).collect();
        s
    }

    fn ops(n: usize) -> Vec<OperatorId> {
        let mut v: Vec<OperatorId> = (0..n).map(|_| OperatorId::new()).collect();
        v.sort();
        v
    }

    fn ready(team: &[OperatorId]) -> impl Iterator<Item = Member<'static>> + '_ {
        team.iter().map(|o| Member {
            id: *o,
            skills: &[],
            busy: false,
        })
    }

    fn taker(id: CampaignId, spec: &CampaignSpec, dry: bool) -> Taker<'_> {
        Taker { id, spec, dry }
    }

    fn counts(shares: &Shares, id: CampaignId) -> usize {
        shares.values().filter(|c| c.campaign == id).count()
    }

    #[test]
    fn two_campaigns_on_one_team_split_it_and_count_nobody_twice() {
        let team = ops(10);
        let (a, b) = (spec(&[], &[]), spec(&[], &[]));
        let (ia, ib) = (CampaignId::new(), CampaignId::new());
        let takers = [taker(ia, &a, false), taker(ib, &b, false)];
        let shares = share(&takers, ready(&team), &Shares::new());
        assert_eq!(shares.len(), 10);
        assert_eq!((counts(&shares, ia), counts(&shares, ib)), (5, 5));
        // The next round, nothing changed: the same share.
        assert_eq!(shares, share(&takers, ready(&team), &shares));
    }

    #[test]
    fn an_operator_only_one_campaign_may_use_is_that_campaigns_and_the_rest_even_out() {
        let team = ops(6);
        // `a` may use only team[0]; `b` anyone with the skill "ru", which all but team[5] have.
        let (a, b) = (spec(&team[..1], &[]), spec(&[], &["ru"]));
        let (ia, ib) = (CampaignId::new(), CampaignId::new());
        let takers = [taker(ia, &a, false), taker(ib, &b, false)];
        let ru = ["ru".to_owned()];
        let members = team.iter().map(|o| Member {
            id: *o,
            skills: if *o == team[5] { &[][..] } else { &ru[..] },
            busy: false,
        });
        let shares = share(&takers, members, &Shares::new());
        assert_eq!(shares.get(&team[0]).map(|c| c.campaign), Some(ia));
        assert_eq!(shares.get(&team[5]), None, "nobody may use it");
        assert_eq!(counts(&shares, ib), 4);
    }

    #[test]
    fn one_operator_shared_by_two_campaigns_alternates_call_by_call() {
        let team = ops(1);
        let (a, b) = (spec(&[], &[]), spec(&[], &[]));
        let (ia, ib) = (CampaignId::new(), CampaignId::new());
        let takers = [taker(ia, &a, false), taker(ib, &b, false)];
        let member = |busy| Member {
            id: team[0],
            skills: &[],
            busy,
        };
        let mut shares = Shares::new();
        let mut worked_for = Vec::new();
        for _ in 0..3 {
            // Ready for two rounds, then on a call for two, then ready again.
            for busy in [false, false, true, true] {
                shares = share(&takers, [member(busy)], &shares);
                if busy {
                    worked_for.push(shares[&team[0]].campaign);
                }
            }
        }
        assert_eq!(worked_for, [ia, ia, ib, ib, ia, ia]);
    }

    #[test]
    fn a_campaign_joining_late_gets_operators_as_their_calls_end() {
        let team = ops(4);
        let (a, b) = (spec(&[], &[]), spec(&[], &[]));
        let (ia, ib) = (CampaignId::new(), CampaignId::new());
        let only_a = [taker(ia, &a, false)];
        let busy = |team: &[OperatorId]| {
            team.iter()
                .map(|o| Member {
                    id: *o,
                    skills: &[],
                    busy: true,
                })
                .collect::<Vec<_>>()
        };
        let shares = share(&only_a, busy(&team), &Shares::new());
        assert_eq!(counts(&shares, ia), 4);
        let both = [taker(ia, &a, false), taker(ib, &b, false)];
        // Still on their calls: they stay where they are.
        let shares = share(&both, busy(&team), &shares);
        assert_eq!(counts(&shares, ia), 4);
        // Their calls end: shared out evenly.
        let shares = share(&both, ready(&team), &shares);
        assert_eq!((counts(&shares, ia), counts(&shares, ib)), (2, 2));
    }

    #[test]
    fn a_campaign_without_due_leads_keeps_only_operators_nobody_else_may_use() {
        let team = ops(4);
        let (a, b) = (spec(&[], &[]), spec(&team[..1], &[]));
        let (ia, ib) = (CampaignId::new(), CampaignId::new());
        let takers = [taker(ia, &a, true), taker(ib, &b, false)];
        let shares = share(&takers, ready(&team), &Shares::new());
        assert_eq!(shares.get(&team[0]).map(|c| c.campaign), Some(ib));
        assert_eq!(counts(&shares, ia), 3, "the others only `a` may use: {shares:?}");
        // Both dry: as if neither were.
        let takers = [taker(ia, &a, true), taker(ib, &b, true)];
        let shares = share(&takers, ready(&team), &Shares::new());
        assert_eq!(shares.len(), 4);
    }
}
