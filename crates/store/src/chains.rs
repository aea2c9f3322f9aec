//! Chain scanning state: the checkpoint (the blocks scanned, kept for reorg
//! detection), halts after a reorg deeper than allowed, and the leases that keep one
//! instance per worker (a chain's watcher, its broadcaster, the notifier's sweeps).

use crate::{on_pool, Result, Store};

impl Store {
    /// The highest scanned block of a chain.
    pub async fn chain_checkpoint(&self, chain: &str) -> Result<Option<(u64, String)>> {
        let row: Option<(i64, String)> = on_pool!(self, pool => sqlx::query_as(
                "SELECT height, hash FROM chain_blocks WHERE chain = $1 ORDER BY height DESC LIMIT 1")
            .bind(chain)
            .fetch_optional(pool)
            .await?);
        Ok(row.map(|(h, hash)| (h as u64, hash)))
    }

    pub async fn chain_block_hash(&self, chain: &str, height: u64) -> Result<Option<String>> {
        Ok(on_pool!(self, pool => sqlx::query_scalar("SELECT hash FROM chain_blocks WHERE chain = $1 AND height = $2")
            .bind(chain)
            .bind(height as i64)
            .fetch_optional(pool)
            .await?))
    }

    /// Sets the starting checkpoint of a chain never scanned before.
    pub async fn init_chain_checkpoint(&self, chain: &str, height: u64, hash: &str) -> Result<()> {
        on_pool!(self, pool => {
            sqlx::query("INSERT INTO chain_blocks (chain, height, hash) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING")
                .bind(chain)
                .bind(height as i64)
                .bind(hash)
                .execute(pool)
                .await?;
        });
        Ok(())
    }

    /// Stops a chain (a reorg deeper than allowed): crediting and sending halt until an
    /// operator resumes it.
    pub async fn halt_chain(&self, chain: &str, reason: &str) -> Result<()> {
        on_pool!(self, pool => {
            sqlx::query(
                "INSERT INTO chain_state (chain, halted_reason, halted_at_ms) VALUES ($1, $2, $3)
                 ON CONFLICT (chain) DO UPDATE SET halted_reason = excluded.halted_reason, halted_at_ms = excluded.halted_at_ms")
            .bind(chain)
            .bind(reason)
            .bind(self.now_ms())
            .execute(pool)
            .await?;
        });
        Ok(())
    }

    pub async fn chain_halted(&self, chain: &str) -> Result<Option<String>> {
        let r: Option<Option<String>> = on_pool!(self, pool => sqlx::query_scalar("SELECT halted_reason FROM chain_state WHERE chain = $1")
            .bind(chain)
            .fetch_optional(pool)
            .await?);
        Ok(r.flatten())
    }

    /// Marks `chain` lagging: its node's tip `tip_hash` has not moved since `since_ms`.
    pub async fn set_chain_lagging(&self, chain: &str, since_ms: i64, tip_hash: &str) -> Result<()> {
        on_pool!(self, pool => {
            sqlx::query(
                "INSERT INTO chain_state (chain, lagging_since_ms, lagging_tip_hash) VALUES ($1, $2, $3)
                 ON CONFLICT (chain) DO UPDATE SET lagging_since_ms = excluded.lagging_since_ms, lagging_tip_hash = excluded.lagging_tip_hash")
            .bind(chain)
            .bind(since_ms)
            .bind(tip_hash)
            .execute(pool)
            .await?;
        });
        Ok(())
    }

    /// Clears `chain`'s lagging mark; whether it was set.
    pub async fn clear_chain_lagging(&self, chain: &str) -> Result<bool> {
        let n = on_pool!(self, pool => sqlx::query(
                "UPDATE chain_state SET lagging_since_ms = NULL, lagging_tip_hash = NULL WHERE chain = $1 AND lagging_since_ms IS NOT NULL")
            .bind(chain)
            .execute(pool)
            .await?
            .rows_affected());
        Ok(n == 1)
    }

    /// Since when `chain` lags, and at which tip (if it does).
    pub async fn chain_lagging(&self, chain: &str) -> Result<Option<(i64, String)>> {
        let r: Option<(Option<i64>, Option<String>)> =
            on_pool!(self, pool => sqlx::query_as("SELECT lagging_since_ms, lagging_tip_hash FROM chain_state WHERE chain = $1")
                .bind(chain)
                .fetch_optional(pool)
                .await?);
        Ok(r.and_then(|(since, hash)| Some((since?, hash.unwrap_or_default()))))
    }

    pub async fn resume_chain(&self, chain: &str) -> Result<bool> {
        let n = on_pool!(self, pool => sqlx::query("UPDATE chain_state SET halted_reason = NULL, halted_at_ms = NULL WHERE chain = $1 AND halted_reason IS NOT NULL")
            .bind(chain)
            .execute(pool)
            .await?
            .rows_affected());
        Ok(n == 1)
    }

    /// Takes or renews the lease that makes one instance the scanner of `chain`.
    pub async fn acquire_chain_lease(&self, chain: &str, owner: &str, ttl_ms: i64) -> Result<bool> {
        let now = self.now_ms();
        let n = on_pool!(self, pool => {
            sqlx::query("INSERT INTO chain_state (chain) VALUES ($1) ON CONFLICT (chain) DO NOTHING")
                .bind(chain)
                .execute(pool)
                .await?;
            sqlx::query(
                "UPDATE chain_state SET lease_owner = $1, lease_until_ms = $2
                 WHERE chain = $3 AND (lease_owner IS NULL OR lease_owner = $1 OR lease_until_ms < $4)")
                .bind(owner)
                .bind(now + ttl_ms)
                .bind(chain)
                .bind(now)
                .execute(pool)
                .await?
                .rows_affected()
        });
        Ok(n == 1)
    }
}
