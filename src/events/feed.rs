//! The outbox read in order for live subscribers (the server-sent-event stream): rows after a
//! cursor (`seq`), oldest first. `seq` comes from an identity sequence, so a row can commit
//! after a later one; the feed never moves past a missing number until it has waited
//! [`GAP_WAIT`] for it (a transaction still in flight), so a resumed stream does not skip an
//! event that committed late. A number still missing after that belonged to a rolled-back
//! transaction.

use std::time::{Duration, Instant};

use sqlx::PgPool;
use uuid::Uuid;

/// How long a gap in `seq` holds the feed back before it is taken for a rollback.
pub const GAP_WAIT: Duration = Duration::from_secs(3);
const BATCH: i64 = 500;

/// One event as the stream sends it.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct FeedEvent {
    pub seq: i64,
    pub id: Uuid,
    pub event_type: String,
    pub payload: serde_json::Value,
}

/// A subscriber's position in the outbox.
#[derive(Debug)]
pub struct Feed {
    cursor: i64,
    gap_since: Option<Instant>,
}

impl Feed {
    /// After the event `seq` (what a client sent as `Last-Event-ID`).
    pub fn after(seq: i64) -> Feed {
        Feed {
            cursor: seq,
            gap_since: None,
        }
    }

    /// At the newest event: only what is written from now on.
    pub async fn from_now(pool: &PgPool) -> Result<Feed, sqlx::Error> {
        let last: Option<i64> =
            sqlx::query_scalar("SELECT pg_sequence_last_value(pg_get_serial_sequence('outbox', 'seq')::regclass)")
                .fetch_one(pool)
                .await?;
        Ok(Feed::after(last.unwrap_or(0)))
    }

    pub fn cursor(&self) -> i64 {
        self.cursor
    }

    /// The next events in order, possibly none; `full` when there may be more right away.
    pub async fn next(&mut self, pool: &PgPool) -> Result<(Vec<FeedEvent>, bool), sqlx::Error> {
        let rows: Vec<FeedEvent> = sqlx::query_as(
            "SELECT seq, id, event_type, payload FROM outbox
             WHERE seq > $1 ORDER BY seq LIMIT $2",
        )
        .bind(self.cursor)
        .bind(BATCH)
        .fetch_all(pool)
        .await?;
        let read = rows.len();
        let taken = self.take_in_order(rows, Instant::now());
        // Rows held back behind a gap are not "more right away": the caller waits for the gap.
        let full = read as i64 == BATCH && taken.len() == read;
        Ok((taken, full))
    }

    /// The rows that follow the cursor without a gap, or past a gap that waited long enough.
    fn take_in_order(&mut self, rows: Vec<FeedEvent>, now: Instant) -> Vec<FeedEvent> {
        let mut out = Vec::with_capacity(rows.len());
        for row in rows {
            if row.seq != self.cursor + 1 {
                let since = *self.gap_since.get_or_insert(now);
                if now.duration_since(since) < GAP_WAIT {
                    break;
                }
            }
            self.gap_since = None;
            self.cursor = row.seq;
            out.push(row);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(seq: i64) -> FeedEvent {
        FeedEvent {
            seq,
            id: Uuid::new_v4(),
            event_type: "OutboundCallEnded".into(),
            payload: serde_json::json!({}),
        }
    }

    fn seqs(rows: &[FeedEvent]) -> Vec<i64> {
        rows.iter().map(|r| r.seq).collect()
    }

    #[test]
    fn a_gap_holds_later_events_until_it_fills() {
        let t0 = Instant::now();
        let mut feed = Feed::after(10);
        assert_eq!(seqs(&feed.take_in_order(vec![row(11), row(13)], t0)), [11]);
        assert_eq!(feed.cursor(), 11);
        // 12 commits late: it comes first, then 13.
        let later = t0 + Duration::from_millis(500);
        assert_eq!(seqs(&feed.take_in_order(vec![row(12), row(13)], later)), [12, 13]);
        assert_eq!(feed.cursor(), 13);
    }

    #[test]
    fn a_gap_that_never_fills_is_passed_after_the_wait() {
        let t0 = Instant::now();
        let mut feed = Feed::after(0);
        assert!(feed.take_in_order(vec![row(2)], t0).is_empty());
        assert!(feed.take_in_order(vec![row(2)], t0 + GAP_WAIT / 2).is_empty());
        assert_eq!(seqs(&feed.take_in_order(vec![row(2), row(3)], t0 + GAP_WAIT)), [2, 3]);
        // A second gap waits afresh.
        assert!(feed.take_in_order(vec![row(5)], t0 + GAP_WAIT * 2).is_empty());
    }
}
