//! obzvon: an outbound call-campaign dialer for Asterisk. One process is an ARI Stasis
//! application (the call flow), a scheduler and an HTTP API; PostgreSQL holds all state.
#![forbid(unsafe_code)]

pub mod api;
pub mod app;
pub mod ari;
pub mod audit;
pub mod auth;
pub mod calls;
pub mod campaigns;
pub mod cli;
pub mod compliance;
pub mod config;
pub mod console;
pub mod db;
pub mod demo;
pub mod dialer;
pub mod events;
pub mod ids;
pub mod leads;
pub mod metrics;
pub mod operators;
pub mod phone;
pub mod reports;
pub mod sim;
pub mod telemetry;
pub mod text;
