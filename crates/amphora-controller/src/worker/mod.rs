//! The worker role: claims jobs and runs their flows.
//!
//! A job is claimed with one statement that moves it to RUNNING under this
//! worker's id with a lease (`[controller_worker] job_lease`); PostgreSQL
//! skips rows another worker is claiming (`FOR UPDATE SKIP LOCKED`), SQLite
//! serialises claims behind its single writer. A worker renews the leases of
//! its running jobs; a job whose lease ran out (its worker died) is claimed
//! again by any worker and resumes from its stored progress (`flow.rs`).
//! On shutdown the running steps finish and their jobs go back to the queue.

pub mod drivers;
pub mod flow;
pub mod flows;
pub mod rest_driver;

use std::collections::HashSet;
use std::panic::AssertUnwindSafe;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::FutureExt;

use sqlx::Row;
use tokio::sync::{Notify, Semaphore, watch};
use tokio::task::JoinSet;

use crate::config::Config;
use crate::db::{Db, new_id, now_millis, now_text};
use crate::jobs::{JobKind, state};
use drivers::Drivers;
use flow::{Claimed, Outcome};

/// How often the queue is looked at without a wake-up (jobs queued by
/// another process, leases that ran out).
const POLL: Duration = Duration::from_secs(1);

/// The longest a job that stopped on an error (not a flow failure: e.g.
/// the database went away) waits before it is claimed again; shorter when
/// the lease is.
const RETRY_AFTER: Duration = Duration::from_secs(5);

#[derive(Debug)]
pub struct Worker {
    db: Db,
    config: Arc<Config>,
    wake: Arc<Notify>,
    drivers: Option<Drivers>,
    id: String,
    /// The jobs this worker is running (whose leases it renews).
    running: Arc<Mutex<HashSet<String>>>,
}

impl Worker {
    pub fn new(db: Db, config: Arc<Config>, wake: Arc<Notify>) -> Worker {
        Worker { db, config, wake, drivers: None, id: new_id(), running: Arc::default() }
    }

    /// A worker with the given drivers instead of the configured ones
    /// (tests, and the real drivers' own wiring).
    pub fn with_drivers(db: Db, config: Arc<Config>, wake: Arc<Notify>, drivers: Drivers) -> Worker {
        Worker { db, config, wake, drivers: Some(drivers), id: new_id(), running: Arc::default() }
    }

    /// This worker's id, as the job rows' `owner` shows it.
    pub fn id(&self) -> &str {
        &self.id
    }

    pub async fn run(self, shutdown: watch::Receiver<bool>) -> anyhow::Result<()> {
        let drivers = match self.drivers.clone() {
            Some(d) => d,
            None => Drivers::from_config(&self.db, &self.config)?,
        };
        let slots = Arc::new(Semaphore::new(self.config.worker.workers.max(1)));
        let mut running: JoinSet<()> = JoinSet::new();
        let renew_every = (self.config.worker.job_lease / 3).max(Duration::from_millis(100));
        let mut renew = tokio::time::interval(renew_every);
        renew.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let stop = crate::stopped(shutdown.clone());
        tokio::pin!(stop);
        tracing::info!(worker = %self.id, flows = self.config.worker.workers, "worker started");
        'outer: loop {
            // Claim while there are free slots and runnable jobs.
            loop {
                if *shutdown.borrow() {
                    break 'outer;
                }
                let Ok(permit) = slots.clone().try_acquire_owned() else { break };
                match self.claim().await {
                    Ok(Some(job)) => {
                        self.db.activity.touch();
                        tracing::info!(worker = %self.id, job = %job.id, kind = job.kind.as_str(),
                            target = %job.target_id, step = job.step, reverting = job.reverting,
                            attempts = job.attempts, "claimed job");
                        let (db, drivers, config) = (self.db.clone(), drivers.clone(), self.config.clone());
                        let (owner, stop) = (self.id.clone(), shutdown.clone());
                        let (wake, mine) = (self.wake.clone(), self.running.clone());
                        let retry_after = self.config.worker.job_lease.min(RETRY_AFTER);
                        mine.lock().unwrap_or_else(|e| e.into_inner()).insert(job.id.clone());
                        running.spawn(async move {
                            let id = job.id.clone();
                            let run = flow::run_job(db.clone(), drivers, config, owner.clone(), job, stop);
                            let trouble = match AssertUnwindSafe(run).catch_unwind().await {
                                Ok(Ok(Outcome::Done | Outcome::Failed | Outcome::Released | Outcome::Lost)) => None,
                                Ok(Err(e)) => Some(format!("{e:#}")),
                                Err(_) => Some("the flow panicked".to_owned()),
                            };
                            if let Some(trouble) = trouble {
                                // The job is not lost: it goes back to the
                                // queue with its progress, after a pause.
                                tracing::error!(job = %id, "job stopped: {trouble}; retrying later");
                                if let Err(e) = release_after_error(&db, &id, &owner, retry_after).await {
                                    tracing::error!(job = %id, "cannot release the job: {e:#}");
                                }
                            }
                            mine.lock().unwrap_or_else(|e| e.into_inner()).remove(&id);
                            db.activity.touch();
                            drop(permit);
                            // A slot is free: look at the queue again.
                            wake.notify_one();
                        });
                    }
                    Ok(None) => break,
                    Err(e) => {
                        tracing::warn!(worker = %self.id, "claiming a job failed: {e:#}");
                        break;
                    }
                }
            }
            tokio::select! {
                _ = &mut stop => break,
                _ = self.wake.notified() => {}
                _ = tokio::time::sleep(POLL) => {}
                _ = renew.tick() => {
                    if let Err(e) = self.renew().await {
                        tracing::warn!(worker = %self.id, "renewing job leases failed: {e:#}");
                    }
                }
                Some(_) = running.join_next(), if !running.is_empty() => {}
            }
        }
        // In-flight steps finish; their jobs go back to the queue.
        tracing::info!(worker = %self.id, running = running.len(), "worker stopping");
        loop {
            tokio::select! {
                next = running.join_next() => if next.is_none() { break },
                _ = renew.tick() => {
                    let _ = self.renew().await;
                }
            }
        }
        Ok(())
    }

    /// Moves the oldest runnable job to RUNNING under this worker.
    async fn claim(&self) -> anyhow::Result<Option<Claimed>> {
        let now = now_millis();
        let lease = now + self.config.worker.job_lease.as_millis() as i64;
        // Runnable: QUEUED (lease_until is 0, or a retry time), or RUNNING
        // with a lease that ran out (its worker died). The jobs of one
        // target run one at a time, in the order they were queued (the
        // API's PENDING states make a second one rare; this makes running
        // them at once or out of order impossible).
        let sql = format!(
            "UPDATE job SET state = $1, owner = $2, lease_until = $3, attempts = attempts + 1, updated_at = $4 \
             WHERE id = (SELECT j.id FROM job j WHERE j.state IN ($5, $1) AND j.lease_until < $6 \
             AND NOT EXISTS (SELECT 1 FROM job o WHERE o.target_id = j.target_id AND o.id <> j.id \
             AND ((o.state = $1 AND o.lease_until >= $6) OR (o.state IN ($5, $1) \
             AND (o.created_at < j.created_at OR (o.created_at = j.created_at AND o.id < j.id))))) \
             ORDER BY j.created_at, j.id LIMIT 1{}) \
             RETURNING id, kind, target_id, payload, step, CASE WHEN reverting THEN CAST(1 AS BIGINT) ELSE CAST(0 AS BIGINT) END, attempts, error",
            self.db.skip_locked()
        );
        let mut tx = self.db.write().await?;
        let row = sqlx::query(&sql)
            .bind(state::RUNNING)
            .bind(self.id.as_str())
            .bind(lease)
            .bind(now_text())
            .bind(state::QUEUED)
            .bind(now)
            .fetch_optional(&mut **tx)
            .await?;
        let Some(row) = row else {
            tx.commit().await?;
            return Ok(None);
        };
        let id: String = row.try_get(0)?;
        let kind: String = row.try_get(1)?;
        let Some(kind) = JobKind::parse(&kind) else {
            // A job this build does not know: fail it rather than loop on it.
            sqlx::query("UPDATE job SET state = $1, error = $2, lease_until = 0 WHERE id = $3")
                .bind(state::FAILED)
                .bind(format!("unknown job kind {kind:?}"))
                .bind(id.as_str())
                .execute(&mut **tx)
                .await?;
            tx.commit().await?;
            return Ok(None);
        };
        let job = Claimed {
            id,
            kind,
            target_id: row.try_get(2)?,
            payload: flow::parse_payload(&row.try_get::<String, _>(3)?),
            step: row.try_get(4)?,
            // Booleans are read as integers: sqlx's Any driver has no SQLite bool.
            reverting: row.try_get::<i64, _>(5)? != 0,
            attempts: row.try_get(6)?,
            error: row.try_get(7)?,
        };
        tx.commit().await?;
        Ok(Some(job))
    }

    /// Extends the leases of the jobs this worker runs.
    async fn renew(&self) -> anyhow::Result<()> {
        let ids: Vec<String> = self.running.lock().unwrap_or_else(|e| e.into_inner()).iter().cloned().collect();
        if ids.is_empty() {
            return Ok(());
        }
        let lease = now_millis() + self.config.worker.job_lease.as_millis() as i64;
        let mut tx = self.db.write().await?;
        for id in ids {
            sqlx::query("UPDATE job SET lease_until = $1 WHERE id = $2 AND owner = $3 AND state = $4")
                .bind(lease)
                .bind(id)
                .bind(self.id.as_str())
                .bind(state::RUNNING)
                .execute(&mut **tx)
                .await?;
        }
        tx.commit().await?;
        Ok(())
    }
}

/// Puts a job that stopped on an error back in the queue, claimable again
/// after `retry_after`.
async fn release_after_error(db: &Db, id: &str, owner: &str, retry_after: Duration) -> anyhow::Result<()> {
    let mut tx = db.write().await?;
    sqlx::query(
        "UPDATE job SET state = $1, owner = NULL, lease_until = $2, updated_at = $3 \
         WHERE id = $4 AND owner = $5 AND state = $6",
    )
    .bind(state::QUEUED)
    .bind(now_millis() + retry_after.as_millis() as i64)
    .bind(now_text())
    .bind(id)
    .bind(owner)
    .bind(state::RUNNING)
    .execute(&mut **tx)
    .await?;
    tx.commit().await?;
    Ok(())
}
