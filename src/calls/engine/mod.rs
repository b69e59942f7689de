//! The call engine: one task per instance owns every live call and operator session, split in
//! two. [`core`] is pure: state machines per customer leg and per operator session, advanced
//! by one input at a time. [`shell`] runs what the core asks for: ARI calls (concurrently,
//! each input's calls in order), durable state writes through the [`journal`] (so call
//! control never waits on PostgreSQL), scheduler wake-ups, replies, metrics; and it feeds the
//! outcomes back as inputs.
//!
//! On start-up and after every ARI reconnect the shell reads Asterisk's channels and bridges
//! and the core adopts what is still live (see `core::reconcile`), so calls outlive a crash or
//! a restart of obzvon. On SIGTERM the engine drains: nothing new is dialled, live calls
//! finish (up to the grace period), operator sessions stay up for the next process.

pub mod core;
pub mod journal;
mod restore;
pub mod shell;

use std::sync::Arc;

use tokio::sync::{mpsc, oneshot, watch, Notify};

pub use self::core::{
    Answer, CallKind, Claimed, CommandError, Offer, OfferAction, OperatorInfo, ReadyOperator, SingleCall, Snapshot,
};
pub use self::shell::{spawn, EngineExit, EngineSettings};
use crate::ids::{AttemptId, OperatorId};
use crate::operators::OperatorState;

pub(crate) enum Msg {
    Snapshot(oneshot::Sender<Snapshot>),
    Command(
        Box<dyn FnOnce(core::ReplyTo) -> core::Command + Send>,
        oneshot::Sender<core::Reply>,
    ),
    /// No answer expected.
    Tell(core::Command),
    /// The operators table changed: re-read it.
    OperatorsChanged,
}

/// What the engine shows of itself (readiness, metrics).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct EngineStatus {
    /// Asterisk's state is known: calls may be placed.
    pub synced: bool,
    pub draining: bool,
    pub live_calls: usize,
    pub sessions: usize,
    /// State changes journaled and not yet in PostgreSQL.
    pub journal_backlog: u64,
}

/// How the rest of the app talks to the engine.
#[derive(Clone)]
pub struct EngineHandle {
    tx: mpsc::UnboundedSender<Msg>,
    /// Fired when capacity may have appeared (operator ready, call ended): the scheduler wakes.
    pub wake: Arc<Notify>,
    status: watch::Receiver<EngineStatus>,
}

impl EngineHandle {
    pub(crate) fn new(
        tx: mpsc::UnboundedSender<Msg>,
        wake: Arc<Notify>,
        status: watch::Receiver<EngineStatus>,
    ) -> EngineHandle {
        EngineHandle { tx, wake, status }
    }

    pub fn status(&self) -> EngineStatus {
        *self.status.borrow()
    }

    pub fn dial(&self, claimed: Claimed) {
        let _ = self.tx.send(Msg::Tell(core::Command::Dial(Box::new(claimed))));
    }

    pub async fn snapshot(&self) -> Option<Snapshot> {
        let (tx, rx) = oneshot::channel();
        self.tx.send(Msg::Snapshot(tx)).ok()?;
        rx.await.ok()
    }

    /// Rings the operator's phone; the session starts when it answers.
    pub async fn start_session(&self, operator: OperatorInfo) -> Result<(), CommandError> {
        let channel = crate::ids::ChannelId::new(format!(
            "session-{}-{}",
            operator.id,
            &uuid::Uuid::new_v4().simple().to_string()[..8]
        ));
        self.ask(move |reply| core::Command::StartSession {
            operator,
            channel,
            reply,
        })
        .await
        .map(drop)
    }

    pub async fn end_session(&self, operator: OperatorId) -> Result<(), CommandError> {
        self.ask(move |reply| core::Command::EndSession { operator, reply })
            .await
            .map(drop)
    }

    pub async fn set_paused(&self, operator: OperatorId, paused: bool) -> Result<OperatorState, CommandError> {
        match self
            .ask(move |reply| core::Command::SetPaused {
                operator,
                paused,
                reply,
            })
            .await?
        {
            Answer::State(s) => Ok(s),
            other => Err(unexpected(other)),
        }
    }

    /// A disposition was written over REST: the operator's wrap-up for that call ends.
    pub fn disposition_done(&self, attempt: AttemptId) {
        let _ = self.tx.send(Msg::Tell(core::Command::DispositionDone { attempt }));
    }

    /// Places a single call for an operator (click-to-call); Ok once the attempt exists.
    pub async fn single_call(&self, call: SingleCall) -> Result<(), CommandError> {
        self.ask(move |reply| core::Command::Single {
            call: Box::new(call),
            reply,
        })
        .await
        .map(drop)
    }

    /// Offers a reserved lead to a ready operator (preview); false if they cannot take it now.
    pub async fn offer(&self, offer: Offer) -> bool {
        let asked = self
            .ask(move |reply| core::Command::Offer {
                offer: Box::new(offer),
                reply,
            })
            .await;
        matches!(asked, Ok(Answer::Flag(true)))
    }

    /// Dials or skips the lead offered to an operator; the attempt when dialled.
    pub async fn offer_action(
        &self,
        operator: OperatorId,
        action: OfferAction,
    ) -> Result<Option<AttemptId>, CommandError> {
        match self
            .ask(move |reply| core::Command::OfferAction {
                operator,
                action,
                reply,
            })
            .await?
        {
            Answer::Attempt(a) => Ok(a),
            other => Err(unexpected(other)),
        }
    }

    /// Hangs up a live attempt of this instance; false if it holds no such call.
    pub async fn cancel(&self, attempt: AttemptId) -> bool {
        matches!(
            self.ask(move |reply| core::Command::Cancel { attempt, reply }).await,
            Ok(Answer::Flag(true))
        )
    }

    /// An operator was created, changed or deleted.
    pub fn operators_changed(&self) {
        let _ = self.tx.send(Msg::OperatorsChanged);
    }

    async fn ask(
        &self,
        make: impl FnOnce(core::ReplyTo) -> core::Command + Send + 'static,
    ) -> Result<Answer, CommandError> {
        let (tx, rx) = oneshot::channel();
        self.tx
            .send(Msg::Command(Box::new(make), tx))
            .map_err(|_| CommandError::Failed("the call engine is stopping".into()))?;
        rx.await
            .map_err(|_| CommandError::Failed("the call engine is stopping".into()))?
    }
}

fn unexpected(answer: Answer) -> CommandError {
    CommandError::Failed(format!("the call engine answered {answer:?}"))
}
