//! The jobs table: work the API queues in the same transaction as the state
//! change that asks for it, so an accepted request always has its job (and
//! a job never exists for a change that was rolled back). The worker claims
//! them (`worker.rs`).

use serde_json::Value;

use crate::db::{WriteTx, new_id, now_text};

/// What a job does; stored as text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JobKind {
    CreateLoadBalancer,
    /// Render and push a load balancer's configuration after a change to it
    /// or its children, then settle their provisioning statuses.
    UpdateLoadBalancer,
    DeleteLoadBalancer,
    FailoverLoadBalancer,
    FailoverAmphora,
    DeleteAmphora,
    ConfigureAmphora,
    /// Give an amphora a new server certificate before its current one
    /// expires (upstream's cert rotation flow).
    RotateCertificate,
}

impl JobKind {
    pub const ALL: [JobKind; 8] = [
        JobKind::CreateLoadBalancer,
        JobKind::UpdateLoadBalancer,
        JobKind::DeleteLoadBalancer,
        JobKind::FailoverLoadBalancer,
        JobKind::FailoverAmphora,
        JobKind::DeleteAmphora,
        JobKind::ConfigureAmphora,
        JobKind::RotateCertificate,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            JobKind::CreateLoadBalancer => "create_load_balancer",
            JobKind::UpdateLoadBalancer => "update_load_balancer",
            JobKind::DeleteLoadBalancer => "delete_load_balancer",
            JobKind::FailoverLoadBalancer => "failover_load_balancer",
            JobKind::FailoverAmphora => "failover_amphora",
            JobKind::DeleteAmphora => "delete_amphora",
            JobKind::ConfigureAmphora => "configure_amphora",
            JobKind::RotateCertificate => "rotate_certificate",
        }
    }

    pub fn parse(s: &str) -> Option<JobKind> {
        JobKind::ALL.into_iter().find(|k| k.as_str() == s)
    }
}

/// Job states.
pub mod state {
    pub const QUEUED: &str = "QUEUED";
    pub const RUNNING: &str = "RUNNING";
    pub const DONE: &str = "DONE";
    pub const FAILED: &str = "FAILED";
}

/// Now to the microsecond: jobs run in the order they were queued, and an
/// API queues several in one second. (Sorts with the second-precision
/// times of other tables.)
fn queued_at() -> String {
    let f = time::macros::format_description!("[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:6]");
    time::OffsetDateTime::now_utc().format(&f).unwrap_or_else(|_| now_text())
}

/// Queues a job inside the caller's transaction; returns its id.
pub async fn enqueue(
    tx: &mut WriteTx<'_>,
    kind: JobKind,
    target_id: &str,
    payload: Value,
) -> Result<String, sqlx::Error> {
    let id = new_id();
    sqlx::query(
        "INSERT INTO job (id, kind, target_id, payload, state, step, reverting, lease_until, attempts, created_at) \
         VALUES ($1, $2, $3, $4, $5, 0, $6, 0, 0, $7)",
    )
    .bind(id.as_str())
    .bind(kind.as_str())
    .bind(target_id)
    .bind(payload.to_string())
    .bind(state::QUEUED)
    .bind(false)
    .bind(queued_at())
    .execute(&mut *tx.tx)
    .await?;
    Ok(id)
}

/// How a request to fail an amphora over ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FailoverQueued {
    /// The job's id.
    Queued(String),
    /// The amphora's load balancer is in none of the allowed statuses
    /// (with its current status); nothing was changed.
    LbImmutable { lb_id: String, status: Option<String> },
}

/// Queues the failover of one amphora inside the caller's transaction, as
/// upstream's `set_status_for_failover` then `failover_amphora`: when the
/// amphora belongs to a load balancer, that row is locked and must be in
/// one of `allowed` (the API allows ACTIVE, the health manager ACTIVE and
/// ERROR); it goes PENDING_UPDATE in the same transaction as the job.
pub async fn queue_amphora_failover(
    tx: &mut WriteTx<'_>,
    db: &crate::db::Db,
    amphora_id: &str,
    lb_id: Option<&str>,
    allowed: &[&str],
) -> Result<FailoverQueued, sqlx::Error> {
    use sqlx::Row;
    if let Some(lb_id) = lb_id {
        let sql = format!("SELECT provisioning_status FROM load_balancer WHERE id = $1{}", db.for_update());
        let status: Option<String> =
            sqlx::query(&sql).bind(lb_id).fetch_optional(&mut *tx.tx).await?.map(|r| r.try_get(0)).transpose()?;
        if !status.as_deref().is_some_and(|s| allowed.contains(&s)) {
            return Ok(FailoverQueued::LbImmutable { lb_id: lb_id.to_owned(), status });
        }
        sqlx::query("UPDATE load_balancer SET provisioning_status = $1, updated_at = $2 WHERE id = $3")
            .bind(crate::model::provisioning::PENDING_UPDATE)
            .bind(now_text())
            .bind(lb_id)
            .execute(&mut *tx.tx)
            .await?;
    }
    let id = enqueue(tx, JobKind::FailoverAmphora, amphora_id, Value::Object(Default::default())).await?;
    Ok(FailoverQueued::Queued(id))
}
