//! The housekeeping role: purges DELETED amphorae and load balancers older
//! than their expiry age, every `cleanup_interval`.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use crate::config::Config;
use crate::db::{Db, format_time};

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

pub async fn run(db: Db, config: Arc<Config>, shutdown: watch::Receiver<bool>) -> anyhow::Result<()> {
    let stop = crate::stopped(shutdown);
    tokio::pin!(stop);
    let mut tick = tokio::time::interval(Duration::from_secs(config.housekeeping.cleanup_interval));
    loop {
        tokio::select! {
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
