//! Applying heartbeats to the database: a batch of messages in one write
//! transaction (health rows, operating statuses that changed, listener
//! statistics); a batch that fails is replayed one message per transaction
//! so one bad message cannot hold the others back.

use std::time::{Duration, Instant};

use sqlx::Row;

use super::status::{self, LbRows, ListenerRow, Message, PoolRow};
use super::{Counters, Limiter};
use crate::db::{Db, WriteTx, now_millis, now_text};
use crate::model::{amphora_status, provisioning};

/// One verified heartbeat and when its datagram arrived.
#[derive(Debug, Clone)]
pub struct Received {
    pub message: Message,
    pub at: Instant,
    pub from: std::net::SocketAddr,
}

/// What became of one heartbeat.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Health refreshed (and statuses and statistics written).
    Applied,
    /// No such amphora (or it is DELETED): nothing written.
    UnknownAmphora,
    /// The listener count did not match: statuses and statistics written,
    /// the health row not refreshed.
    ListenerCountMismatch,
    /// Older than `heartbeat_interval` when its turn came: only statistics
    /// written (upstream's overload guard).
    TooSlow,
}

fn flag(column: &str) -> String {
    format!("CAST(CAST({column} AS INTEGER) AS BIGINT)")
}

/// The amphora's status and its load balancer's rows (None: unknown
/// amphora; Some((status, None)): an amphora without a load balancer).
async fn load(tx: &mut WriteTx<'_>, amphora_id: &str) -> Result<Option<(String, Option<LbRows>)>, sqlx::Error> {
    let sql = format!(
        "SELECT a.status, l.id, {}, l.provisioning_status, l.operating_status FROM amphora a \
         LEFT JOIN load_balancer l ON l.id = a.load_balancer_id AND l.provisioning_status <> $2 \
         WHERE a.id = $1 AND a.status <> $3",
        flag("l.enabled")
    );
    let Some(row) = sqlx::query(&sql)
        .bind(amphora_id)
        .bind(provisioning::DELETED)
        .bind(amphora_status::DELETED)
        .fetch_optional(&mut *tx.tx)
        .await?
    else {
        return Ok(None);
    };
    let amp_status: String = row.try_get(0)?;
    let Some(lb_id) = row.try_get::<Option<String>, _>(1)? else {
        return Ok(Some((amp_status, None)));
    };
    let mut lb = LbRows {
        id: lb_id,
        enabled: row.try_get::<Option<i64>, _>(2)?.unwrap_or(0) != 0,
        provisioning_status: row.try_get(3)?,
        operating_status: row.try_get(4)?,
        ..LbRows::default()
    };
    let sql = format!(
        "SELECT id, {}, operating_status FROM listener WHERE load_balancer_id = $1 ORDER BY id",
        flag("enabled")
    );
    for r in sqlx::query(&sql).bind(lb.id.as_str()).fetch_all(&mut *tx.tx).await? {
        lb.listeners.push(ListenerRow {
            id: r.try_get(0)?,
            enabled: r.try_get::<i64, _>(1)? != 0,
            operating_status: r.try_get(2)?,
        });
    }
    let rows = sqlx::query(
        "SELECT p.id, p.operating_status, m.id, m.operating_status FROM pool p \
         LEFT JOIN member m ON m.pool_id = p.id WHERE p.load_balancer_id = $1 ORDER BY p.id, m.id",
    )
    .bind(lb.id.as_str())
    .fetch_all(&mut *tx.tx)
    .await?;
    for r in rows {
        let pool_id: String = r.try_get(0)?;
        if lb.pools.last().is_none_or(|p| p.id != pool_id) {
            lb.pools.push(PoolRow { id: pool_id, operating_status: r.try_get(1)?, members: Vec::new() });
        }
        if let (Some(member), Some(pool)) = (r.try_get::<Option<String>, _>(2)?, lb.pools.last_mut()) {
            pool.members.push((member, r.try_get::<Option<String>, _>(3)?.unwrap_or_default()));
        }
    }
    Ok(Some((amp_status, Some(lb))))
}

/// Counters go into BIGINT columns.
fn big(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

async fn write_stats(tx: &mut WriteTx<'_>, lb: &LbRows, message: &Message) -> Result<(), sqlx::Error> {
    // Deltas add up (saturating below BIGINT's limit rather than failing
    // the batch); `active_connections` is always the current count.
    let add = |c: &str| {
        format!(
            "{c} = CASE WHEN listener_statistics.{c} > {max} - excluded.{c} THEN {max} ELSE listener_statistics.{c} + excluded.{c} END",
            max = i64::MAX
        )
    };
    let on_conflict = if message.stats_are_deltas() {
        format!(
            "{}, {}, {}, {}, active_connections = excluded.active_connections",
            add("bytes_in"),
            add("bytes_out"),
            add("total_connections"),
            add("request_errors")
        )
    } else {
        "bytes_in = excluded.bytes_in, bytes_out = excluded.bytes_out, total_connections = excluded.total_connections, \
         request_errors = excluded.request_errors, active_connections = excluded.active_connections"
            .to_owned()
    };
    let sql = format!(
        "INSERT INTO listener_statistics (listener_id, amphora_id, bytes_in, bytes_out, active_connections, \
         total_connections, request_errors) VALUES ($1, $2, $3, $4, $5, $6, $7) \
         ON CONFLICT (listener_id, amphora_id) DO UPDATE SET {on_conflict}"
    );
    for (listener_id, report) in &message.listeners {
        // Only the load balancer's own listeners: an amphora's word counts
        // for what it serves.
        let Some(stats) = report.stats else { continue };
        if !lb.listeners.iter().any(|l| &l.id == listener_id) {
            continue;
        }
        sqlx::query(&sql)
            .bind(listener_id.as_str())
            .bind(message.id.as_str())
            .bind(big(stats.rx))
            .bind(big(stats.tx))
            .bind(big(stats.conns))
            .bind(big(stats.totconns))
            .bind(big(stats.ereq))
            .execute(&mut *tx.tx)
            .await?;
    }
    Ok(())
}

async fn refresh_health(tx: &mut WriteTx<'_>, amphora_id: &str, amp_status: &str) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO amphora_health (amphora_id, last_update, busy) VALUES ($1, $2, $3) \
         ON CONFLICT (amphora_id) DO UPDATE SET last_update = excluded.last_update, busy = excluded.busy",
    )
    .bind(amphora_id)
    .bind(now_millis())
    .bind(false)
    .execute(&mut *tx.tx)
    .await?;
    if amp_status == amphora_status::FAILOVER_STOPPED {
        // Upstream's update_failover_stopped: it checks in again.
        sqlx::query("UPDATE amphora SET status = $1, updated_at = $2 WHERE id = $3 AND status = $4")
            .bind(amphora_status::ALLOCATED)
            .bind(now_text())
            .bind(amphora_id)
            .bind(amphora_status::FAILOVER_STOPPED)
            .execute(&mut *tx.tx)
            .await?;
        tracing::info!(amphora = amphora_id, "amphora heartbeats again: FAILOVER_STOPPED -> ALLOCATED");
    }
    Ok(())
}

async fn write_status(tx: &mut WriteTx<'_>, table: &str, id: &str, status: &str) -> Result<(), sqlx::Error> {
    sqlx::query(&format!("UPDATE {table} SET operating_status = $1, updated_at = $2 WHERE id = $3"))
        .bind(status)
        .bind(now_text())
        .bind(id)
        .execute(&mut *tx.tx)
        .await?;
    Ok(())
}

/// Applies one heartbeat inside `tx`.
pub async fn apply(
    tx: &mut WriteTx<'_>,
    received: &Received,
    heartbeat_interval: Duration,
) -> Result<Outcome, sqlx::Error> {
    let message = &received.message;
    let Some((amp_status, lb)) = load(tx, &message.id).await? else {
        return Ok(Outcome::UnknownAmphora);
    };
    if let Some(lb) = &lb {
        write_stats(tx, lb, message).await?;
    }
    let expected = match &lb {
        Some(lb) => lb.expected_listeners(),
        // An amphora without a load balancer serves nothing.
        None => Some(0),
    };
    let mut outcome = Outcome::Applied;
    if expected.is_none_or(|n| n == message.listeners.len()) {
        let delay = received.at.elapsed();
        if delay >= heartbeat_interval {
            tracing::warn!(
                amphora = %message.id,
                delay = ?delay,
                "heartbeat processed too slowly: ignored, the amphora's health not refreshed; \
                 the health manager is overloaded. THIS IS NOT GOOD."
            );
            return Ok(Outcome::TooSlow);
        }
        refresh_health(tx, &message.id, &amp_status).await?;
    } else {
        tracing::warn!(
            amphora = %message.id,
            found = message.listeners.len(),
            expected = expected.unwrap_or_default(),
            "heartbeat reports a different number of listeners than enabled: health not refreshed"
        );
        outcome = Outcome::ListenerCountMismatch;
    }
    let Some(lb) = lb else { return Ok(outcome) };
    let changes = status::evaluate(&lb, message);
    for note in &changes.unknown {
        tracing::warn!(amphora = %message.id, "{note}");
    }
    for (id, s) in &changes.listeners {
        write_status(tx, "listener", id, s).await?;
    }
    for (id, s) in &changes.members {
        write_status(tx, "member", id, s).await?;
    }
    for (id, s) in &changes.pools {
        write_status(tx, "pool", id, s).await?;
    }
    if let Some(s) = changes.load_balancer {
        write_status(tx, "load_balancer", &lb.id, s).await?;
    }
    Ok(outcome)
}

/// Applies a batch in one transaction; returns each message's outcome.
pub async fn apply_batch(
    db: &Db,
    batch: &[Received],
    heartbeat_interval: Duration,
) -> Result<Vec<Outcome>, sqlx::Error> {
    let mut tx = db.write().await?;
    let mut outcomes = Vec::with_capacity(batch.len());
    for received in batch {
        outcomes.push(apply(&mut tx, received, heartbeat_interval).await?);
    }
    tx.commit().await?;
    Ok(outcomes)
}

/// Applies a batch; when its transaction fails, each message again in its
/// own transaction. Counts the outcomes.
pub async fn apply_and_count(
    db: &Db,
    batch: &[Received],
    heartbeat_interval: Duration,
    counters: &Counters,
    unknown_log: &mut Limiter,
) {
    let mut count = |received: &Received, outcome: Outcome| {
        counters.count(outcome);
        if outcome == Outcome::UnknownAmphora
            && let Some(held) = unknown_log.allow()
        {
            tracing::warn!(
                amphora = %received.message.id,
                from = %received.from,
                similar_before = held,
                "heartbeat from an amphora the database does not know (or DELETED): dropped"
            );
        }
    };
    match apply_batch(db, batch, heartbeat_interval).await {
        Ok(outcomes) => {
            counters.batches.inc();
            batch.iter().zip(outcomes).for_each(|(r, o)| count(r, o));
        }
        Err(e) => {
            tracing::warn!(error = %e, messages = batch.len(), "heartbeat batch failed: applying them one by one");
            for received in batch {
                match apply_batch(db, std::slice::from_ref(received), heartbeat_interval).await {
                    Ok(outcomes) => outcomes.into_iter().for_each(|o| count(received, o)),
                    Err(e) => {
                        counters.failed.inc();
                        tracing::warn!(amphora = %received.message.id, error = %e, "heartbeat not applied");
                    }
                }
            }
        }
    }
}
