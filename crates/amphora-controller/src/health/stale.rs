//! Stale-amphora detection: amphorae whose last heartbeat is older than
//! `heartbeat_timeout` get one FailoverAmphora job each, claimed through
//! the health row's `busy` flag so that any number of health managers on
//! one database queue it exactly once; `failover_threshold` stops them all
//! instead (upstream's circuit breaker).

use sqlx::Row;

use crate::db::{Db, now_millis, now_text};
use crate::jobs::{self, FailoverQueued};
use crate::model::{amphora_status, provisioning};

/// Amphorae claimed per transaction.
const CLAIM_BATCH: i64 = 64;

/// What one scan did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Scan {
    /// Amphorae whose failover job was queued.
    pub failed_over: Vec<String>,
    /// Stale amphorae whose load balancer could not be moved to
    /// PENDING_UPDATE (left for a later scan).
    pub deferred: Vec<(String, String, Option<String>)>,
    /// Set when the circuit breaker tripped: the number of stale amphorae.
    pub stopped: Option<i64>,
}

/// Stale health rows of amphorae that still exist: upstream counts every
/// stale row; rows of deleted amphorae do not count here (docs/compatibility.md).
const STALE: &str = "FROM amphora_health h JOIN amphora a ON a.id = h.amphora_id \
     WHERE h.busy = $1 AND h.last_update < $2 AND a.status <> $3 AND a.status <> $4";

/// One pass. `timeout_ms`: `heartbeat_timeout`; `threshold`:
/// `failover_threshold`.
pub async fn scan(db: &Db, timeout_ms: i64, threshold: Option<u64>) -> Result<Scan, sqlx::Error> {
    let cutoff = now_millis() - timeout_ms;
    let mut out = Scan::default();
    let mut tx = db.write().await?;
    // Upstream's update_failover_stopped: stopped amphorae whose health is
    // fresh again are ALLOCATED. (A heartbeat does it too; this catches a
    // row refreshed by a flow.) Written first, so that on SQLite this
    // transaction holds the write lock before it reads.
    sqlx::query(
        "UPDATE amphora SET status = $1, updated_at = $2 WHERE status = $3 AND EXISTS \
         (SELECT 1 FROM amphora_health h WHERE h.amphora_id = amphora.id AND h.busy = $4 AND h.last_update >= $5)",
    )
    .bind(amphora_status::ALLOCATED)
    .bind(now_text())
    .bind(amphora_status::FAILOVER_STOPPED)
    .bind(false)
    .bind(cutoff)
    .execute(&mut **tx)
    .await?;
    if let Some(threshold) = threshold {
        let threshold = i64::try_from(threshold).unwrap_or(i64::MAX);
        // One statement decides and stops, so two health managers cannot
        // see different counts.
        let newly_stopped = sqlx::query(&format!(
            "UPDATE amphora SET status = $5, updated_at = $6 WHERE status <> $5 \
             AND id IN (SELECT h.amphora_id {STALE}) AND (SELECT COUNT(*) {STALE}) >= $7"
        ))
        .bind(false)
        .bind(cutoff)
        .bind(amphora_status::DELETED)
        .bind(amphora_status::PENDING_DELETE)
        .bind(amphora_status::FAILOVER_STOPPED)
        .bind(now_text())
        .bind(threshold)
        .execute(&mut **tx)
        .await?
        .rows_affected();
        let count: i64 = sqlx::query(&format!("SELECT COUNT(*) {STALE}"))
            .bind(false)
            .bind(cutoff)
            .bind(amphora_status::DELETED)
            .bind(amphora_status::PENDING_DELETE)
            .fetch_one(&mut **tx)
            .await?
            .try_get(0)?;
        if count >= threshold {
            tx.commit().await?;
            tracing::error!(
                stale = count,
                threshold,
                newly_stopped,
                "stale amphora count reached failover_threshold: they are FAILOVER_STOPPED and none is failed over; \
                 an operator must look at them (they go back to ALLOCATED when they heartbeat again)"
            );
            out.stopped = Some(count);
            return Ok(out);
        }
    }
    tx.commit().await?;
    loop {
        let mut tx = db.write().await?;
        // Claim: busy = TRUE on rows nobody else holds (SKIP LOCKED on
        // PostgreSQL; SQLite has one writer at a time); `busy = FALSE` again
        // in the UPDATE, so a row claimed meanwhile is not claimed twice.
        let claim = format!(
            "UPDATE amphora_health SET busy = $1 WHERE busy = $2 AND amphora_id IN (\
             SELECT h.amphora_id FROM amphora_health h WHERE h.busy = $2 AND h.last_update < $3 \
             AND EXISTS (SELECT 1 FROM amphora a WHERE a.id = h.amphora_id AND (a.status = $4 OR a.status = $5)) \
             ORDER BY h.last_update LIMIT $6{}) RETURNING amphora_id",
            db.skip_locked()
        );
        let claimed: Vec<String> = sqlx::query(&claim)
            .bind(true)
            .bind(false)
            .bind(cutoff)
            .bind(amphora_status::ALLOCATED)
            .bind(amphora_status::FAILOVER_STOPPED)
            .bind(CLAIM_BATCH)
            .fetch_all(&mut **tx)
            .await?
            .iter()
            .map(|r| r.try_get(0))
            .collect::<Result<_, _>>()?;
        let before = out.failed_over.len();
        for amp in &claimed {
            let lb_id: Option<String> = sqlx::query("SELECT load_balancer_id FROM amphora WHERE id = $1")
                .bind(amp.as_str())
                .fetch_one(&mut **tx)
                .await?
                .try_get(0)?;
            let allowed = [provisioning::ACTIVE, provisioning::ERROR];
            match jobs::queue_amphora_failover(&mut tx, db, amp, lb_id.as_deref(), &allowed).await? {
                FailoverQueued::Queued(_) => out.failed_over.push(amp.clone()),
                FailoverQueued::LbImmutable { lb_id, status } => {
                    // Upstream skips it for this cycle: unclaim.
                    sqlx::query("UPDATE amphora_health SET busy = $1 WHERE amphora_id = $2")
                        .bind(false)
                        .bind(amp.as_str())
                        .execute(&mut **tx)
                        .await?;
                    out.deferred.push((amp.clone(), lb_id, status));
                }
            }
        }
        tx.commit().await?;
        // Done when the claim came back short, or when it held only
        // amphorae deferred again (they would come back forever).
        if (claimed.len() as i64) < CLAIM_BATCH || out.failed_over.len() == before {
            return Ok(out);
        }
    }
}
