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
//!   the log can only start over once it is finished, so past [`RESTART_PAGES`] a
//!   restarting checkpoint copies the few pages committed meanwhile with writers held
//!   back, and the log starts over. It waits at most [`RESTART_WAIT`] for a reader or
//!   writer, then gives up until the next round.
//!
//! A commit checkpoints itself only if this task has fallen far behind.

use std::sync::Weak;
use std::time::Duration;

use sqlx::sqlite::{SqliteConnectOptions, SqliteConnection};
use sqlx::{ConnectOptions, Connection, SqlitePool};

/// How often the background task checkpoints.
pub(crate) const CHECKPOINT_EVERY: Duration = Duration::from_millis(500);

/// Log pages (4 KiB each) past which the task restarts the log.
const RESTART_PAGES: i64 = 8192;

/// The longest a restarting checkpoint waits for readers and writers.
const RESTART_WAIT: Duration = Duration::from_millis(100);

/// Log pages past which a commit checkpoints after all (256 MiB with 4 KiB pages): the
/// log stays bounded even if the background task cannot keep up.
pub(crate) const COMMIT_CHECKPOINT_PAGES: &str = "65536";

/// Checkpoints `pool`'s database every [`CHECKPOINT_EVERY`] until the pool closes or
/// the last store holding `alive` is dropped.
pub(crate) fn spawn(pool: SqlitePool, options: SqliteConnectOptions, alive: Weak<()>) {
    let options = options.busy_timeout(RESTART_WAIT);
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(CHECKPOINT_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut conn: Option<SqliteConnection> = None;
        loop {
            tick.tick().await;
            if alive.strong_count() == 0 || pool.is_closed() {
                break;
            }
            let c = match conn.as_mut() {
                Some(c) => c,
                None => match options.connect().await {
                    Ok(c) => conn.insert(c),
                    Err(e) => {
                        tracing::warn!(error = %e, "SQLite checkpoint connection failed; commits checkpoint past the limit");
                        continue;
                    }
                },
            };
            if let Err(e) = checkpoint(c).await {
                tracing::warn!(error = %e, "SQLite background checkpoint failed; commits checkpoint past the limit");
                conn = None;
            }
        }
        if let Some(c) = conn {
            c.close().await.ok();
        }
    });
}

async fn checkpoint(conn: &mut SqliteConnection) -> Result<(), sqlx::Error> {
    let (_, log_pages, copied): (i64, i64, i64) = sqlx::query_as("PRAGMA wal_checkpoint(PASSIVE)").fetch_one(&mut *conn).await?;
    tracing::trace!(log_pages, copied, "SQLite passive checkpoint");
    if log_pages > RESTART_PAGES {
        let (busy, log_pages, copied): (i64, i64, i64) = sqlx::query_as("PRAGMA wal_checkpoint(RESTART)").fetch_one(&mut *conn).await?;
        tracing::debug!(busy = busy != 0, log_pages, copied, "SQLite restarting checkpoint");
    }
    Ok(())
}
