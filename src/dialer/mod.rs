//! The dialer: which leads to call now (scheduler), how many (pacing: progressive, and
//! predictive) and when a lead may be called at all (calling windows).

pub mod pacing;
pub mod predictive;
pub mod scheduler;
pub mod share;
pub mod window;
