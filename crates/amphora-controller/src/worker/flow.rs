//! Running a flow: an ordered list of steps, each with `execute` and
//! `revert`, with the progress stored in the job row after every step so a
//! worker that takes the job over continues where the last one stopped.
//!
//! The job row says where a flow is:
//! - `reverting = false`: `step` is the index of the next step to execute;
//! - `reverting = true`: `step` is the number of steps still to revert (the
//!   steps `0..step`, reverted from the last one down).
//!
//! A step that writes to the database does so in the same transaction as
//! its progress (`Cx::save`), and records what later steps need (ids it
//! created, ports it allocated) in the job's payload in that transaction
//! too: its database effect happens exactly once. A step's calls outside
//! the database (drivers) may run again when a worker died between them and
//! the progress write; drivers accept that (see `drivers.rs`). Every
//! progress write checks that this worker still owns the job, so a worker
//! whose lease was taken over can no longer change anything.

use std::sync::Arc;

use anyhow::anyhow;
use serde_json::{Map, Value};
use tokio::sync::watch;

use super::drivers::Drivers;
use super::flows::{self, Step};
use crate::config::Config;
use crate::db::{Db, WriteTx, now_millis, now_text};
use crate::jobs::{JobKind, state};

/// The worker lost the job (its lease expired and another worker took it):
/// stop without touching anything.
#[derive(Debug, thiserror::Error)]
#[error("job {0} is no longer owned by this worker")]
pub struct LostJob(pub String);

/// A claimed job, as the claim returned it.
#[derive(Debug, Clone)]
pub struct Claimed {
    pub id: String,
    pub kind: JobKind,
    pub target_id: String,
    pub payload: Map<String, Value>,
    pub step: i64,
    pub reverting: bool,
    pub attempts: i64,
    pub error: Option<String>,
}

/// What a step sees: the job, its payload and the world.
#[derive(Debug)]
pub struct Cx {
    pub db: Db,
    pub drivers: Drivers,
    pub config: Arc<Config>,
    pub job_id: String,
    pub kind: JobKind,
    pub target_id: String,
    pub payload: Map<String, Value>,
    owner: String,
    /// The progress `save` writes: set by the runner before each step.
    next_step: i64,
    reverting: bool,
    saved: bool,
    /// Set by the runner before the flow's last forward step: its save
    /// also marks the job DONE, so the step's effect (a load balancer
    /// turning ACTIVE) and the job's end commit together.
    completes: bool,
    /// The job was marked DONE by a step's save.
    done: bool,
    attempts: i64,
}

/// Claims of one job after which it is reverted instead of resumed.
pub const MAX_ATTEMPTS: i64 = 10;

impl Cx {
    /// Writes the progress (the step just done) and the payload inside the
    /// step's own transaction; fails with `LostJob` when another worker owns
    /// the job now.
    pub async fn save(&mut self, tx: &mut WriteTx<'_>) -> anyhow::Result<()> {
        let completes = self.completes && !self.reverting;
        let (lease, new_state) = if completes {
            (0, state::DONE)
        } else {
            (now_millis() + self.config.worker.job_lease.as_millis() as i64, state::RUNNING)
        };
        // A completing step may save twice in its transaction: the second
        // finds the job DONE already.
        let n = sqlx::query(
            "UPDATE job SET step = $1, reverting = $2, payload = $3, lease_until = $4, updated_at = $5, state = $9 \
             WHERE id = $6 AND owner = $7 AND (state = $8 OR state = $9)",
        )
        .bind(self.next_step)
        .bind(self.reverting)
        .bind(Value::Object(self.payload.clone()).to_string())
        .bind(lease)
        .bind(now_text())
        .bind(self.job_id.as_str())
        .bind(self.owner.as_str())
        .bind(state::RUNNING)
        .bind(new_state)
        .execute(&mut ***tx)
        .await?
        .rows_affected();
        if n != 1 {
            return Err(LostJob(self.job_id.clone()).into());
        }
        self.saved = true;
        self.done = completes;
        Ok(())
    }

    /// Saves the progress in a transaction of its own.
    pub async fn save_alone(&mut self) -> anyhow::Result<()> {
        let db = self.db.clone();
        let mut tx = db.write().await?;
        self.save(&mut tx).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Re-reads the payload (after a step failed half-way: what it had not
    /// committed is not true).
    async fn reload_payload(&mut self) -> anyhow::Result<()> {
        let text: String = sqlx::query_scalar("SELECT payload FROM job WHERE id = $1")
            .bind(self.job_id.as_str())
            .fetch_one(&self.db.pool)
            .await?;
        self.payload = parse_payload(&text);
        Ok(())
    }
}

pub fn parse_payload(text: &str) -> Map<String, Value> {
    match serde_json::from_str(text) {
        Ok(Value::Object(m)) => m,
        _ => Map::new(),
    }
}

/// How a run ended.
#[derive(Debug, PartialEq, Eq)]
pub enum Outcome {
    Done,
    Failed,
    /// Shutdown: the job went back to the queue at a step boundary.
    Released,
    /// Another worker owns the job.
    Lost,
}

fn is_lost(e: &anyhow::Error) -> bool {
    e.downcast_ref::<LostJob>().is_some()
}

/// Runs (or resumes) a claimed job to its end.
pub async fn run_job(
    db: Db,
    drivers: Drivers,
    config: Arc<Config>,
    owner: String,
    job: Claimed,
    shutdown: watch::Receiver<bool>,
) -> anyhow::Result<Outcome> {
    let mut cx = Cx {
        db,
        drivers,
        config,
        job_id: job.id.clone(),
        kind: job.kind,
        target_id: job.target_id.clone(),
        payload: job.payload,
        owner,
        next_step: job.step,
        reverting: job.reverting,
        saved: false,
        completes: false,
        done: false,
        attempts: job.attempts,
    };
    match run_inner(&mut cx, job.step, job.reverting, job.error, &shutdown).await {
        Ok(outcome) => Ok(outcome),
        Err(e) if is_lost(&e) => {
            tracing::warn!(job = %cx.job_id, "lost the job to another worker");
            Ok(Outcome::Lost)
        }
        Err(e) => Err(e),
    }
}

async fn run_inner(
    cx: &mut Cx,
    mut step: i64,
    mut reverting: bool,
    mut error: Option<String>,
    shutdown: &watch::Receiver<bool>,
) -> anyhow::Result<Outcome> {
    let attempts = cx.attempts;
    let give_up = !reverting && attempts > MAX_ATTEMPTS;
    if reverting && attempts > 2 * MAX_ATTEMPTS {
        let text = error.unwrap_or_else(|| format!("{} failed", cx.kind.as_str()));
        return fail(cx, format!("{text}; revert abandoned after {attempts} attempts")).await;
    }
    if !reverting && step == 0 && !give_up {
        // Decide the flow's shape once (topology, amphorae involved) and
        // keep it in the payload, so a resumed flow has the same steps.
        if let Err(e) = flows::plan(cx).await {
            if is_lost(&e) {
                return Err(e);
            }
            return fail(cx, format!("planning {}: {e:#}", cx.kind.as_str())).await;
        }
        cx.next_step = 0;
        cx.reverting = false;
        cx.save_alone().await?;
    }
    let steps = flows::build(cx.kind, &cx.payload);
    if give_up {
        // A job that keeps stopping its worker (crashes, errors) is given
        // up: its done steps, and the one it was in, are reverted.
        let text = format!("{} gave up after {attempts} attempts", cx.kind.as_str());
        tracing::error!(job = %cx.job_id, "{text}; reverting");
        reverting = true;
        step = (step + 1).min(steps.len() as i64);
        start_revert(cx, step, &text).await?;
        error = Some(text);
    }
    if !reverting {
        while (step as usize) < steps.len() {
            let s = &steps[step as usize];
            cx.next_step = step + 1;
            cx.reverting = false;
            cx.saved = false;
            cx.completes = step as usize + 1 == steps.len();
            tracing::debug!(job = %cx.job_id, step, name = ?s, "execute");
            match s.execute(cx).await {
                Ok(()) => {
                    if !cx.saved {
                        cx.save_alone().await?;
                    }
                    step += 1;
                }
                Err(e) if is_lost(&e) => return Err(e),
                Err(e) => {
                    cx.completes = false;
                    let text = format!("{} failed at step {} ({s:?}): {e:#}", cx.kind.as_str(), step);
                    tracing::warn!(job = %cx.job_id, "{text}; reverting");
                    cx.reload_payload().await?;
                    // The failed step is reverted too: reverts check what
                    // exists, and a step may fail after part of its effect.
                    step += 1;
                    reverting = true;
                    start_revert(cx, step, &text).await?;
                    error = Some(text);
                    break;
                }
            }
            if *shutdown.borrow() && (step as usize) < steps.len() {
                return release(cx).await;
            }
        }
        if !reverting {
            cx.completes = false;
            if cx.done {
                tracing::info!(job = %cx.job_id, kind = cx.kind.as_str(), target = %cx.target_id, "job done");
            } else {
                finish(cx, state::DONE, None).await?;
            }
            return Ok(Outcome::Done);
        }
    }
    let step_count = steps.len() as i64;
    while step > 0 {
        let index = (step - 1).min(step_count - 1);
        let s = &steps[index as usize];
        cx.next_step = step - 1;
        cx.reverting = true;
        cx.saved = false;
        tracing::debug!(job = %cx.job_id, step = index, name = ?s, "revert");
        match s.revert(cx).await {
            Ok(()) => {}
            Err(e) if is_lost(&e) => return Err(e),
            Err(e) => {
                // A revert that fails is logged and the flow reverts on:
                // the failure statuses below tell the operator.
                tracing::error!(job = %cx.job_id, step = index, "revert of {s:?} failed: {e:#}");
                cx.reload_payload().await?;
            }
        }
        if !cx.saved {
            cx.save_alone().await?;
        }
        step -= 1;
        if *shutdown.borrow() && step > 0 {
            return release(cx).await;
        }
    }
    let text = error.unwrap_or_else(|| format!("{} failed", cx.kind.as_str()));
    fail(cx, text).await
}

/// Switches the job to reverting `count` steps, keeping the error.
async fn start_revert(cx: &mut Cx, count: i64, error: &str) -> anyhow::Result<()> {
    let db = cx.db.clone();
    let mut tx = db.write().await?;
    cx.next_step = count;
    cx.reverting = true;
    cx.save(&mut tx).await?;
    sqlx::query("UPDATE job SET error = $1 WHERE id = $2")
        .bind(error)
        .bind(cx.job_id.as_str())
        .execute(&mut **tx)
        .await?;
    tx.commit().await?;
    Ok(())
}

/// Runs the flow's failure statuses (upstream's "to ERROR on revert"
/// tasks) and marks the job FAILED, in one transaction.
async fn fail(cx: &mut Cx, error: String) -> anyhow::Result<Outcome> {
    let db = cx.db.clone();
    let mut tx = db.write().await?;
    cx.next_step = 0;
    cx.reverting = true;
    cx.save(&mut tx).await?;
    flows::on_failure(cx, &mut tx).await?;
    set_state(cx, &mut tx, state::FAILED, Some(&error)).await?;
    tx.commit().await?;
    tracing::warn!(job = %cx.job_id, kind = cx.kind.as_str(), target = %cx.target_id, "job failed: {error}");
    Ok(Outcome::Failed)
}

async fn finish(cx: &mut Cx, new_state: &str, error: Option<&str>) -> anyhow::Result<()> {
    let db = cx.db.clone();
    let mut tx = db.write().await?;
    set_state(cx, &mut tx, new_state, error).await?;
    tx.commit().await?;
    tracing::info!(job = %cx.job_id, kind = cx.kind.as_str(), target = %cx.target_id, "job done");
    Ok(())
}

async fn set_state(cx: &Cx, tx: &mut WriteTx<'_>, new_state: &str, error: Option<&str>) -> anyhow::Result<()> {
    let n = sqlx::query(
        "UPDATE job SET state = $1, error = COALESCE($2, error), lease_until = 0, updated_at = $3 \
         WHERE id = $4 AND owner = $5 AND state = $6",
    )
    .bind(new_state)
    .bind(error)
    .bind(now_text())
    .bind(cx.job_id.as_str())
    .bind(cx.owner.as_str())
    .bind(state::RUNNING)
    .execute(&mut ***tx)
    .await?
    .rows_affected();
    if n != 1 {
        return Err(anyhow!(LostJob(cx.job_id.clone())));
    }
    Ok(())
}

/// Shutdown between two steps: the job goes back to the queue with its
/// progress, for any worker to resume at once.
async fn release(cx: &mut Cx) -> anyhow::Result<Outcome> {
    let db = cx.db.clone();
    let mut tx = db.write().await?;
    sqlx::query(
        "UPDATE job SET state = $1, owner = NULL, lease_until = 0, attempts = attempts - 1, updated_at = $2 \
         WHERE id = $3 AND owner = $4 AND state = $5",
    )
    .bind(state::QUEUED)
    .bind(now_text())
    .bind(cx.job_id.as_str())
    .bind(cx.owner.as_str())
    .bind(state::RUNNING)
    .execute(&mut **tx)
    .await?;
    tx.commit().await?;
    tracing::info!(job = %cx.job_id, "shutdown: job released at a step boundary");
    Ok(Outcome::Released)
}

/// A step function's result, for `flows`.
pub type StepResult = anyhow::Result<()>;

impl Step {
    pub async fn execute(&self, cx: &mut Cx) -> StepResult {
        flows::execute(self, cx).await
    }

    pub async fn revert(&self, cx: &mut Cx) -> StepResult {
        flows::revert(self, cx).await
    }
}
