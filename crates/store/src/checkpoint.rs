//! SQLite appends each commit to its write-ahead log, and a checkpoint copies the log
//! back into the database file. By default the commit that takes the log past 1000
//! pages runs that checkpoint itself, with every other writer waiting behind it; as the
//! ledger's indexes grow, a commit dirties more pages, checkpoints come every few
//! commits and ledger throughput fell with the database's size (64 clients: 17,000 →
//! 7,900 transfers/s within 40 s). Here a task checkpoints in the background instead,
//! on a connection of its own, so a page rewritten by many commits between two
//! checkpoints is copied once:
//! - a passive checkpoint, which never waits for or blocks a writer, copies what has
//!   been committed so far;
//! - under a steady stream of commits a passive checkpoint never finishes the log, and
//!   the log can only start over once it is finished. So when the log is past
//!   [`RESTART_PAGES`] and the passive checkpoint got within [`RESTART_GAP_PAGES`] of
//!   its end (no old reader holds it back), a restarting checkpoint copies the rest
//!   with writers held back and the log starts over. It waits at most
//!   [`RESTART_WAIT`] for readers and writers, then gives up until the next round.
//!
//! A commit checkpoints itself (passively) only if this task has fallen far behind.
//! The first round is one interval after opening, so a short command never runs one.

use std::sync::Weak;
use std::time::Duration;

use sqlx::sqlite::{SqliteConnectOptions, SqliteConnection};
use sqlx::{ConnectOptions, Connection, SqlitePool};
use tokio::task::JoinHandle;

/// How often the background task checkpoints.
pub(crate) const CHECKPOINT_EVERY: Duration = Duration::from_millis(500);

/// Log pages (4 KiB each) past which the task restarts the log.
const RESTART_PAGES: i64 = 8192;

/// A restart is tried only when the passive checkpoint left at most this many pages.
const RESTART_GAP_PAGES: i64 = 1024;

/// The longest a restarting checkpoint waits for readers and writers (writers are
/// held back meanwhile).
const RESTART_WAIT: Duration = Duration::from_millis(20);

/// Log pages past which a commit checkpoints after all (256 MiB with 4 KiB pages).
pub(crate) const COMMIT_CHECKPOINT_PAGES: &str = "65536";

/// Checkpoints `pool`'s database every [`CHECKPOINT_EVERY`] until the pool closes or
/// the last store holding `alive` is dropped. The task closes its own connection when
/// it ends; `Store::close` waits for that.
pub(crate) fn spawn<T: Send + Sync + 'static>(pool: SqlitePool, options: SqliteConnectOptions, alive: Weak<T>) -> JoinHandle<()> {
    let options = options.busy_timeout(RESTART_WAIT);
    tokio::spawn(async move {
        let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + CHECKPOINT_EVERY, CHECKPOINT_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let closed = pool.close_event();
        tokio::pin!(closed);
        let mut conn: Option<SqliteConnection> = None;
        let mut failing = false;
        loop {
            tokio::select! {
                _ = &mut closed => break,
                _ = tick.tick() => {}
            }
            if alive.strong_count() == 0 {
                break;
            }
            let result = match conn.as_mut() {
                Some(c) => checkpoint(c).await,
                None => match options.connect().await {
                    Ok(c) => checkpoint(conn.insert(c)).await,
                    Err(e) => Err(e),
                },
            };
            match result {
                Ok(()) if failing => {
                    tracing::info!("SQLite background checkpoints work again");
                    failing = false;
                }
                Ok(()) => {}
                Err(e) => {
                    // Said once; retried every round.
                    if !failing {
                        tracing::warn!(error = %e, "SQLite background checkpoint failed; commits checkpoint past the limit until it works again");
                        failing = true;
                    }
                    conn = None;
                }
            }
        }
        if let Some(c) = conn {
            c.close().await.ok();
        }
    })
}

async fn checkpoint(conn: &mut SqliteConnection) -> Result<(), sqlx::Error> {
    let (_, log_pages, copied): (i64, i64, i64) = sqlx::query_as("PRAGMA wal_checkpoint(PASSIVE)").fetch_one(&mut *conn).await?;
    tracing::trace!(log_pages, copied, "SQLite passive checkpoint");
    if log_pages > RESTART_PAGES && log_pages - copied <= RESTART_GAP_PAGES {
        let (busy, log_pages, copied): (i64, i64, i64) = sqlx::query_as("PRAGMA wal_checkpoint(RESTART)").fetch_one(&mut *conn).await?;
        tracing::debug!(busy = busy != 0, log_pages, copied, "SQLite restarting checkpoint");
    }
    Ok(())
}
