//! Calls: attempt statuses and results, their storage ([`store`]), the engine that runs the
//! Stasis call flow and the operators' sessions ([`engine`]), and placing single calls from
//! requests ([`place`]).

pub mod amd;
pub mod engine;
pub mod outcome;
pub mod place;
pub mod store;

pub use outcome::{classify_unanswered, AttemptResult, AttemptStatus, EndedBy};
