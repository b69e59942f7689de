//! Leads whose far ends behave like a population of customers, for the pacing test and the
//! load harness: the test-bed trunk (scripts/sipp/trunk-uas.xml) reads what to do from the last
//! five digits of each number.

use obzvon::sim::Population;
use rand::rngs::StdRng;
use rand::Rng;

/// Lead `i`'s number: `live` of them a person who answers after `people.answer_after` and
/// talks `people.talk_time` (the simulator's draws); of the others, `busy` are busy after 2-6 s
/// and the rest ring out at the dial timeout. The index keeps the numbers apart (+7 9XX,
/// Russian mobiles; at most 10,000 leads).
pub fn lead_number(i: usize, live: f64, busy: f64, people: &Population, rng: &mut StdRng) -> String {
    assert!(i < 10_000, "lead numbers run out at 10,000");
    let (behaviour, ring, talk) = if rng.random::<f64>() < live {
        let ring = people.answer_after(rng).round();
        let talk = people.talk_time(rng).round().clamp(1.0, 99.0);
        (1, ring as u8, talk as u8)
    } else if rng.random::<f64>() < busy {
        (2, rng.random_range(2..=6), 0)
    } else {
        (3, 0, 0)
    };
    format!("+79{i:04}{behaviour}{ring:02}{talk:02}")
}
