//! The housekeeping role: purges DELETED amphorae and load balancers older
//! than their expiry age, every `cleanup_interval`.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use crate::config::Config;
use crate::db::{Db, format_time};
use crate::jobs::{self, JobKind};

/// One purge pass; returns (amphorae, load balancers) removed.
pub async fn purge(db: &Db, config: &Config) -> Result<(u64, u64), sqlx::Error> {
    let now = time::OffsetDateTime::now_utc();
    let age = |secs: u64| format_time(now - Duration::from_secs(secs.min(100 * 365 * 86_400)));
    let mut tx = db.write().await?;
    let amps = sqlx::query("DELETE FROM amphora WHERE status = 'DELETED' AND COALESCE(updated_at, created_at) < $1")
        .bind(age(config.housekeeping.amphora_expiry_age))
        .execute(&mut **tx)
        .await?
        .rows_affected();
    let lbs = sqlx::query(
        "DELETE FROM load_balancer WHERE provisioning_status = 'DELETED' AND COALESCE(updated_at, created_at) < $1 \
         AND id NOT IN (SELECT load_balancer_id FROM amphora WHERE load_balancer_id IS NOT NULL)",
    )
    .bind(age(config.housekeeping.load_balancer_expiry_age))
    .execute(&mut **tx)
    .await?
    .rows_affected();
    tx.commit().await?;
    Ok((amps, lbs))
}

/// One certificate pass (upstream's `CertRotation`): every ALLOCATED
/// amphora whose certificate expires within `cert_expiry_buffer` and that
/// is not being rotated gets a rotation job, marked `cert_busy` in the same
/// transaction so two passes (or two controllers) queue it once. Returns
/// the number of jobs queued.
pub async fn rotate_certificates(db: &Db, config: &Config) -> anyhow::Result<u64> {
    let horizon =
        format_time(time::OffsetDateTime::now_utc() + Duration::from_secs(config.housekeeping.cert_expiry_buffer));
    let mut tx = db.write().await?;
    let sql = format!(
        "SELECT id FROM amphora WHERE status = 'ALLOCATED' AND cert_expiration < $1 AND NOT cert_busy \
         ORDER BY cert_expiration{}",
        db.skip_locked()
    );
    let ids: Vec<String> = sqlx::query_scalar(&sql).bind(horizon).fetch_all(&mut **tx).await?;
    for id in &ids {
        sqlx::query("UPDATE amphora SET cert_busy = $1, updated_at = $2 WHERE id = $3")
            .bind(true)
            .bind(crate::db::now_text())
            .bind(id.as_str())
            .execute(&mut **tx)
            .await?;
        jobs::enqueue(&mut tx, JobKind::RotateCertificate, id, serde_json::json!({})).await?;
    }
    tx.commit().await?;
    Ok(ids.len() as u64)
}

pub async fn run(db: Db, config: Arc<Config>, shutdown: watch::Receiver<bool>) -> anyhow::Result<()> {
    let stop = crate::stopped(shutdown);
    tokio::pin!(stop);
    let mut tick = tokio::time::interval(Duration::from_secs(config.housekeeping.cleanup_interval));
    let mut cert_tick = tokio::time::interval(Duration::from_secs(config.housekeeping.cert_interval));
    loop {
        tokio::select! {
            _ = cert_tick.tick() => {
                match rotate_certificates(&db, &config).await {
                    Ok(0) => {}
                    Ok(n) => tracing::info!(amphorae = n, "queued certificate rotations"),
                    Err(e) => tracing::warn!(error = %format!("{e:#}"), "certificate rotation pass failed"),
                }
            }
            _ = tick.tick() => {
                match purge(&db, &config).await {
                    Ok((0, 0)) => {}
                    Ok((amps, lbs)) => tracing::info!(amps, lbs, "purged deleted rows"),
                    Err(e) => tracing::warn!(error = %e, "purge failed"),
                }
            }
            _ = &mut stop => return Ok(()),
        }
    }
}
