//! Our own typed client for the Asterisk REST Interface: REST calls ([`client`]), resource
//! models ([`models`]), websocket events ([`events`]) and the self-healing event stream ([`ws`]).

pub mod client;
pub mod events;
pub mod models;
pub mod time;
pub mod ws;

pub use client::{AriClient, AriError, BridgeType, CreateChannel, HangupReason, Originate};
pub use events::{Event, EventKind};
pub use time::AriTime;
pub use ws::{ConnectionState, EventStream, StreamSettings};
