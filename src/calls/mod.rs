//! Calls: attempt statuses and results (the names on the wire and in the database) and how an
//! Asterisk hang-up becomes a result. The Stasis call flow lands here in the campaign issue.

pub mod outcome;

pub use outcome::{classify_unanswered, AttemptResult, AttemptStatus};
