//! The engine's durable write queue. Every state change the core emits is appended to a
//! journal file on this instance's disk (one JSON line per entry, numbered) and handed to the
//! [`Writer`], which applies the entries to PostgreSQL strictly in order, those queued together
//! in one transaction that also records the last one's number (`engine_journal.applied_seq`).
//! So:
//! - call control never waits on PostgreSQL: appending is a local write;
//! - during a database outage entries wait in order and are applied when it returns;
//! - a crash loses nothing that was appended: the next start applies what is left, and a
//!   replayed entry that was already applied is skipped.
//!
//! Files are segments named `<instance>-<first seq>.journal`; a segment is deleted once every
//! entry in it is applied. A lock file keeps two processes of one instance from sharing the
//! journal (a new process waits for the old one to let go).

use std::collections::VecDeque;
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Write as _};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use sqlx::PgPool;
use tokio::sync::{mpsc, Notify};

use super::core::Write;
use crate::calls::store;

/// A segment is closed (and a new one started) past this size.
const SEGMENT_BYTES: u64 = 4 << 20;

#[derive(Debug, Serialize, Deserialize)]
struct Entry {
    seq: u64,
    write: Write,
}

#[derive(Debug, thiserror::Error)]
pub enum JournalError {
    #[error("journal directory {dir}: {source}")]
    Io { dir: PathBuf, source: std::io::Error },
    #[error("another obzvon process of instance {instance:?} holds the journal in {dir} (still running after {waited_secs} s)")]
    Locked {
        instance: String,
        dir: PathBuf,
        waited_secs: u64,
    },
    #[error("reading the journal checkpoint: {0}")]
    Db(#[from] sqlx::Error),
}

/// The appending side, owned by the engine.
pub struct Journal {
    dir: PathBuf,
    instance: String,
    file: File,
    file_bytes: u64,
    /// Closed segments and their last entry, oldest first.
    closed: VecDeque<(PathBuf, u64)>,
    current: PathBuf,
    next_seq: u64,
    tx: mpsc::UnboundedSender<Entry>,
    progress: Arc<Progress>,
    /// A background flush is running (a slow disk never holds up the engine's loop).
    syncing: Arc<std::sync::atomic::AtomicBool>,
    _lock: File,
}

/// How far the writer got; shared with the engine.
#[derive(Debug, Default)]
pub struct Progress {
    applied: AtomicU64,
    appended: AtomicU64,
    changed: Notify,
}

impl Progress {
    pub fn applied(&self) -> u64 {
        self.applied.load(Ordering::Acquire)
    }

    /// Entries appended and not yet applied.
    pub fn backlog(&self) -> u64 {
        self.appended.load(Ordering::Acquire).saturating_sub(self.applied())
    }

    /// The last entry appended.
    pub fn appended(&self) -> u64 {
        self.appended.load(Ordering::Acquire)
    }

    /// Waits until every entry appended so far is applied, or `limit` passes; true if it was.
    pub async fn caught_up(&self, limit: Duration) -> bool {
        self.applied_up_to(self.appended(), limit).await
    }

    /// Waits until entry `target` is applied, or `limit` passes; true if it was.
    pub async fn applied_up_to(&self, target: u64, limit: Duration) -> bool {
        let wait = async {
            loop {
                let changed = self.changed.notified();
                if self.applied() >= target {
                    return;
                }
                changed.await;
            }
        };
        tokio::time::timeout(limit, wait).await.is_ok()
    }
}

/// The applying side: a task of its own.
pub struct Writer {
    pool: PgPool,
    instance: String,
    rx: mpsc::UnboundedReceiver<Entry>,
    progress: Arc<Progress>,
}

impl Journal {
    /// Opens the instance's journal in `dir`: takes the lock (waiting up to `lock_wait` for a
    /// process that is handing over), reads the entries not applied yet and queues them for
    /// the writer ahead of anything new.
    pub async fn open(
        dir: &Path,
        instance: &str,
        pool: &PgPool,
        lock_wait: Duration,
    ) -> Result<(Journal, Writer), JournalError> {
        let io = |source| JournalError::Io {
            dir: dir.to_owned(),
            source,
        };
        std::fs::create_dir_all(dir).map_err(io)?;
        let lock = lock(dir, instance, lock_wait).await?;
        let (journal_id, applied) = store::journal_checkpoint(pool, instance).await?;
        set_aside_foreign(dir, instance, journal_id).map_err(io)?;
        let (tx, rx) = mpsc::unbounded_channel();
        let mut segments = segments(dir, instance).map_err(io)?;
        segments.sort();
        let mut closed = VecDeque::new();
        let mut last_seq = applied;
        let mut pending = 0usize;
        for (_, path) in &segments {
            let mut seg_last = 0;
            for entry in read_segment(path).map_err(io)? {
                seg_last = seg_last.max(entry.seq);
                last_seq = last_seq.max(entry.seq);
                if entry.seq > applied {
                    pending += 1;
                    let _ = tx.send(entry);
                }
            }
            closed.push_back((path.clone(), seg_last));
        }
        if pending > 0 {
            tracing::info!(
                entries = pending,
                "journal entries from the previous run are applied first"
            );
        }
        let next_seq = last_seq + 1;
        let current = dir.join(format!("{instance}-{next_seq:020}.journal"));
        // A file of that name from an earlier run holds no entry from next_seq on (at most a
        // torn line): it is started afresh, and is the current segment, never a closed one.
        closed.retain(|(path, _)| *path != current);
        let file = OpenOptions::new()
            .create(true)
            .write(true)
            .truncate(true)
            .open(&current)
            .map_err(io)?;
        let progress = Arc::new(Progress::default());
        progress.applied.store(applied, Ordering::Release);
        progress.appended.store(last_seq, Ordering::Release);
        let mut journal = Journal {
            dir: dir.to_owned(),
            instance: instance.to_owned(),
            file,
            file_bytes: 0,
            closed,
            current,
            next_seq,
            tx,
            progress: progress.clone(),
            syncing: Arc::default(),
            _lock: lock,
        };
        journal.drop_applied_segments();
        let writer = Writer {
            pool: pool.clone(),
            instance: instance.to_owned(),
            rx,
            progress,
        };
        Ok((journal, writer))
    }

    pub fn progress(&self) -> Arc<Progress> {
        self.progress.clone()
    }

    /// Appends a write and queues it for the database. A local file write; never waits on
    /// PostgreSQL.
    pub fn append(&mut self, write: Write) {
        let seq = self.next_seq;
        self.next_seq += 1;
        let entry = Entry { seq, write };
        match serde_json::to_string(&entry) {
            Ok(mut line) => {
                line.push('\n');
                if let Err(e) = self.file.write_all(line.as_bytes()) {
                    // The entry still reaches the database; only its crash safety is lost.
                    tracing::error!(error = %e, path = %self.current.display(), "journal write failed");
                }
                self.file_bytes += line.len() as u64;
            }
            Err(e) => tracing::error!(error = %e, "journal entry not serializable"),
        }
        self.progress.appended.store(seq, Ordering::Release);
        let _ = self.tx.send(entry);
        if self.file_bytes > SEGMENT_BYTES {
            self.rotate();
        }
    }

    /// Flushes the journal to the disk (against power loss; a process crash loses nothing
    /// appended either way). Also drops segments that are fully applied.
    pub fn sync(&mut self) {
        if let Err(e) = self.file.sync_data() {
            tracing::warn!(error = %e, "journal sync failed");
        }
        self.drop_applied_segments();
    }

    /// `sync` for the engine's loop: the flush runs on a blocking thread (an fsync can take
    /// seconds on a busy disk, and call control must not wait for it); one at a time.
    pub fn sync_in_background(&mut self) {
        self.drop_applied_segments();
        if self.syncing.swap(true, Ordering::AcqRel) {
            return;
        }
        let file = match self.file.try_clone() {
            Ok(file) => file,
            Err(e) => {
                self.syncing.store(false, Ordering::Release);
                tracing::warn!(error = %e, "journal sync failed");
                return;
            }
        };
        let syncing = self.syncing.clone();
        tokio::task::spawn_blocking(move || {
            if let Err(e) = file.sync_data() {
                tracing::warn!(error = %e, "journal sync failed");
            }
            syncing.store(false, Ordering::Release);
        });
    }

    fn rotate(&mut self) {
        let path = self
            .dir
            .join(format!("{}-{:020}.journal", self.instance, self.next_seq));
        match OpenOptions::new().create(true).append(true).open(&path) {
            Ok(file) => {
                let _ = self.file.sync_data();
                let old = std::mem::replace(&mut self.current, path);
                self.closed.push_back((old, self.next_seq - 1));
                self.file = file;
                self.file_bytes = 0;
            }
            Err(e) => tracing::error!(error = %e, "could not start a new journal segment"),
        }
        self.drop_applied_segments();
    }

    fn drop_applied_segments(&mut self) {
        let applied = self.progress.applied();
        while let Some((path, last)) = self.closed.front() {
            if *last > applied {
                break;
            }
            if let Err(e) = std::fs::remove_file(path) {
                tracing::warn!(error = %e, path = %path.display(), "could not remove an applied journal segment");
            }
            self.closed.pop_front();
        }
    }
}

/// At most this many queued entries are applied in one transaction.
const BATCH: usize = 256;

impl Writer {
    /// Applies entries in order until the journal is dropped and everything queued is applied:
    /// what has queued up meanwhile (up to `BATCH` entries) in one transaction, so the database
    /// keeps up with a busy engine (one commit per entry held it to ~500 entries/s); a batch
    /// the database refuses is applied entry by entry, so only the refused write is skipped.
    pub async fn run(mut self) {
        let mut delay = Duration::from_millis(100);
        let mut batch: Vec<Entry> = Vec::with_capacity(BATCH);
        while let Some(first) = self.rx.recv().await {
            batch.push(first);
            while batch.len() < BATCH {
                match self.rx.try_recv() {
                    Ok(entry) => batch.push(entry),
                    Err(_) => break,
                }
            }
            let batched = batch.len() > 1 && self.apply_batch(&batch, &mut delay).await;
            for entry in batch.drain(..) {
                if !batched {
                    self.apply_one(&entry, &mut delay).await;
                }
                self.progress.applied.store(entry.seq, Ordering::Release);
            }
            delay = Duration::from_millis(100);
            self.progress.changed.notify_waiters();
        }
    }

    /// Applies `batch` in one transaction, waiting out database outages; false if the database
    /// refused it.
    async fn apply_batch(&self, batch: &[Entry], delay: &mut Duration) -> bool {
        let entries: Vec<(u64, &Write)> = batch.iter().map(|e| (e.seq, &e.write)).collect();
        loop {
            match store::apply_batch(&self.pool, &self.instance, &entries).await {
                Ok(()) => return true,
                Err(e) if is_outage(&e) => {
                    tracing::warn!(error = %e, backlog = self.progress.backlog(),
                        "database unavailable; engine writes wait in the journal");
                    tokio::time::sleep(*delay).await;
                    *delay = (*delay * 2).min(Duration::from_secs(2));
                }
                Err(e) => {
                    tracing::warn!(error = %e, entries = entries.len(),
                        "a batch of engine writes was refused; applying them one by one");
                    return false;
                }
            }
        }
    }

    async fn apply_one(&self, entry: &Entry, delay: &mut Duration) {
        loop {
            match store::apply(&self.pool, &self.instance, entry.seq, &entry.write).await {
                Ok(()) => return,
                Err(e) if is_outage(&e) => {
                    tracing::warn!(error = %e, seq = entry.seq, backlog = self.progress.backlog(),
                        "database unavailable; engine writes wait in the journal");
                    tokio::time::sleep(*delay).await;
                    *delay = (*delay * 2).min(Duration::from_secs(2));
                }
                Err(e) => {
                    // Retrying cannot help a write the database refuses; it must not hold
                    // up the ones behind it.
                    tracing::error!(error = %e, seq = entry.seq, write = ?entry.write, "engine write refused; skipped");
                    match store::skip(&self.pool, &self.instance, entry.seq).await {
                        Ok(()) => return,
                        Err(e) => {
                            tracing::warn!(error = %e, "could not record the skipped write; retrying");
                            tokio::time::sleep(*delay).await;
                        }
                    }
                }
            }
        }
    }
}

/// The database is away (not the write's fault): wait and try again.
fn is_outage(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::Protocol(_)
        | sqlx::Error::WorkerCrashed => true,
        sqlx::Error::Database(d) => {
            // 57P01 admin shutdown, 57P02 crash shutdown, 57P03 cannot connect now, 08xxx
            // connection exceptions, 40001/40P01 serialization failure and deadlock.
            let code = d.code().unwrap_or_default();
            code.starts_with("08") || code.starts_with("57P") || code == "40001" || code == "40P01"
        }
        _ => false,
    }
}

async fn lock(dir: &Path, instance: &str, wait: Duration) -> Result<File, JournalError> {
    let path = dir.join(format!("{instance}.lock"));
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|source| JournalError::Io {
            dir: dir.to_owned(),
            source,
        })?;
    let started = std::time::Instant::now();
    let mut told = false;
    loop {
        match file.try_lock() {
            Ok(()) => return Ok(file),
            Err(std::fs::TryLockError::WouldBlock) => {
                if started.elapsed() >= wait {
                    return Err(JournalError::Locked {
                        instance: instance.to_owned(),
                        dir: dir.to_owned(),
                        waited_secs: wait.as_secs(),
                    });
                }
                if !told {
                    tracing::info!(
                        instance,
                        "another process of this instance holds the journal; waiting for it to hand over"
                    );
                    told = true;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(std::fs::TryLockError::Error(source)) => {
                return Err(JournalError::Io {
                    dir: dir.to_owned(),
                    source,
                })
            }
        }
    }
}

/// Segments written for another database (the id file names a different journal) are moved
/// to a subdirectory instead of being applied here; the id file then names this database's.
fn set_aside_foreign(dir: &Path, instance: &str, journal_id: uuid::Uuid) -> std::io::Result<()> {
    let id_file = dir.join(format!("{instance}.journal-id"));
    let found = std::fs::read_to_string(&id_file).ok().map(|s| s.trim().to_owned());
    if found.as_deref().is_some_and(|f| f != journal_id.to_string()) {
        let aside = dir.join(format!("foreign-{}", found.unwrap_or_default()));
        std::fs::create_dir_all(&aside)?;
        for (_, path) in segments(dir, instance)? {
            if let Some(name) = path.file_name() {
                std::fs::rename(&path, aside.join(name))?;
            }
        }
        tracing::warn!(
            dir = %aside.display(),
            "the journal in this directory belongs to another database; set aside, not applied"
        );
    }
    std::fs::write(&id_file, journal_id.to_string())
}

fn segments(dir: &Path, instance: &str) -> std::io::Result<Vec<(u64, PathBuf)>> {
    let prefix = format!("{instance}-");
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
            continue;
        };
        let Some(first) = name
            .strip_prefix(&prefix)
            .and_then(|rest| rest.strip_suffix(".journal"))
            .and_then(|n| n.parse::<u64>().ok())
        else {
            continue;
        };
        out.push((first, path));
    }
    Ok(out)
}

/// Entries of a segment; a torn last line (a crash mid-write) is ignored.
fn read_segment(path: &Path) -> std::io::Result<Vec<Entry>> {
    let mut out = Vec::new();
    for line in BufReader::new(File::open(path)?).lines() {
        let line = line?;
        match serde_json::from_str::<Entry>(&line) {
            Ok(entry) => out.push(entry),
            Err(e) if !line.trim().is_empty() => {
                tracing::warn!(error = %e, path = %path.display(), "unreadable journal line skipped")
            }
            Err(_) => {}
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::{AttemptId, BridgeId, ChannelId, OperatorId};

    #[test]
    fn entries_survive_a_round_trip_through_a_segment_and_a_torn_line_is_ignored() {
        let dir = std::env::temp_dir().join(format!("obzvon-journal-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("i-00000000000000000001.journal");
        let writes = [
            Write::Operator {
                operator: OperatorId::new(),
                state: crate::operators::OperatorState::Ready,
                session: Some((ChannelId::new("c"), BridgeId::new("b"))),
            },
            Write::Finish {
                attempt: AttemptId::new(),
                status: crate::calls::AttemptStatus::Completed,
                change: Default::default(),
            },
        ];
        let mut text = String::new();
        for (i, w) in writes.iter().enumerate() {
            text.push_str(
                &serde_json::to_string(&Entry {
                    seq: i as u64 + 1,
                    write: w.clone(),
                })
                .unwrap(),
            );
            text.push('\n');
        }
        text.push_str("{\"seq\": 3, \"wri");
        std::fs::write(&path, text).unwrap();
        let read = read_segment(&path).unwrap();
        assert_eq!(read.len(), 2);
        assert_eq!(read[1].seq, 2);
        assert_eq!(read[0].write, writes[0]);
        assert_eq!(segments(&dir, "i").unwrap(), vec![(1, path.clone())]);
        assert!(segments(&dir, "other").unwrap().is_empty());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
