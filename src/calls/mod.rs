//! Calls: attempt statuses and results, their storage ([`store`]), and the engine that runs
//! the Stasis call flow and the operators' sessions ([`engine`]).

pub mod engine;
pub mod outcome;
pub mod store;

pub use outcome::{classify_unanswered, AttemptResult, AttemptStatus};
