//! Applying heartbeats to the database, a batch at a time in one write
//! transaction: the batch's amphorae and load balancers are read with a
//! few set queries, every message is evaluated in order against those rows
//! (updated in memory as it goes), and the outcome is written with a few
//! set statements (health rows, operating statuses that changed, listener
//! statistics), in id order. A batch that fails is replayed one message
//! per transaction so one bad message cannot hold the others back.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::{Duration, Instant};

use sqlx::Row;
use sqlx::any::AnyArguments;
use sqlx::query::Query;

use super::status::{self, LbRows, ListenerRow, Message, PoolRow, StatsReport};
use super::{Counters, Limiter};
use crate::db::{Backend, Db, WriteTx, now_millis, now_text};
use crate::model::{amphora_status, provisioning};

/// Rows per set statement (bind parameters stay far below both engines'
/// limits).
const CHUNK: usize = 256;

/// Ids per IN list. PostgreSQL's planner prices an index probe per listed
/// id at random-read cost: with a few hundred ids it scans whole tables
/// instead (measured with 20,000 load balancers and 200,000 members: 99 ms
/// for 256 ids, 1 ms for 32).
const IN_LIST: usize = 32;

/// `ids` as IN lists of at most [`IN_LIST`], each padded (with its first id,
/// which changes nothing a SELECT or UPDATE does) to a power of two: a set
/// statement's text depends only on its length, so a handful of texts serve
/// every batch and each connection reuses its prepared statements instead
/// of having PostgreSQL parse and plan a new text for each batch size.
fn in_lists<'a>(ids: &[&'a str]) -> Vec<Vec<&'a str>> {
    ids.chunks(IN_LIST)
        .map(|chunk| {
            let mut list = chunk.to_vec();
            list.resize(chunk.len().next_power_of_two(), chunk[0]);
            list
        })
        .collect()
}

/// `rows` in chunks whose lengths are powers of two (at most [`CHUNK`]):
/// for INSERTs, where a repeated row cannot pad (an upsert may not touch a
/// row twice). Same reason as [`in_lists`].
fn power_chunks<T>(rows: &[T]) -> Vec<&[T]> {
    let mut out = Vec::new();
    let mut rest = rows;
    while !rest.is_empty() {
        let n = rest.len().min(CHUNK);
        let n = 1 << (usize::BITS - 1 - n.leading_zeros());
        let (chunk, tail) = rest.split_at(n);
        out.push(chunk);
        rest = tail;
    }
    out
}

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

/// `$first, $first+1, ...` for `n` values.
fn placeholders(first: usize, n: usize) -> String {
    (first..first + n).map(|i| format!("${i}")).collect::<Vec<_>>().join(", ")
}

fn bind_all<'q>(
    mut q: Query<'q, sqlx::Any, AnyArguments<'q>>,
    values: &'q [&'q str],
) -> Query<'q, sqlx::Any, AnyArguments<'q>> {
    for v in values {
        q = q.bind(*v);
    }
    q
}

/// An amphora of the batch.
#[derive(Debug)]
struct Amphora {
    status: String,
    lb: Option<String>,
}

/// The rows the batch reads.
#[derive(Debug, Default)]
struct Rows {
    amphorae: HashMap<String, Amphora>,
    lbs: HashMap<String, LbRows>,
}

async fn load(tx: &mut WriteTx<'_>, backend: Backend, amphora_ids: &[&str]) -> Result<Rows, sqlx::Error> {
    let mut rows = Rows::default();
    for ids in in_lists(amphora_ids) {
        let sql = format!(
            "SELECT a.id, a.status, l.id, {}, l.provisioning_status, l.operating_status FROM amphora a \
             LEFT JOIN load_balancer l ON l.id = a.load_balancer_id AND l.provisioning_status <> $1 \
             WHERE a.status <> $2 AND a.id IN ({})",
            flag("l.enabled"),
            placeholders(3, ids.len())
        );
        let q = sqlx::query(&sql).bind(provisioning::DELETED).bind(amphora_status::DELETED);
        for r in bind_all(q, &ids).fetch_all(&mut *tx.tx).await? {
            let lb: Option<String> = r.try_get(2)?;
            if let Some(id) = &lb {
                rows.lbs.entry(id.clone()).or_insert(LbRows {
                    id: id.clone(),
                    enabled: r.try_get::<Option<i64>, _>(3)?.unwrap_or(0) != 0,
                    provisioning_status: r.try_get(4)?,
                    operating_status: r.try_get(5)?,
                    ..LbRows::default()
                });
            }
            rows.amphorae.insert(r.try_get(0)?, Amphora { status: r.try_get(1)?, lb });
        }
    }
    let lb_ids: Vec<String> = rows.lbs.keys().cloned().collect();
    let lb_ids: Vec<&str> = lb_ids.iter().map(String::as_str).collect();
    for ids in in_lists(&lb_ids) {
        let sql = format!(
            "SELECT load_balancer_id, id, {}, operating_status FROM listener WHERE load_balancer_id IN ({}) ORDER BY id",
            flag("enabled"),
            placeholders(1, ids.len())
        );
        for r in bind_all(sqlx::query(&sql), &ids).fetch_all(&mut *tx.tx).await? {
            let lb: String = r.try_get(0)?;
            if let Some(lb) = rows.lbs.get_mut(&lb) {
                lb.listeners.push(ListenerRow {
                    id: r.try_get(1)?,
                    enabled: r.try_get::<i64, _>(2)? != 0,
                    operating_status: r.try_get(3)?,
                });
            }
        }
        // One row per pool, its members folded into `id=STATUS,...`: rows
        // cost far more to carry than bytes (a pool of 50 members was 50).
        let sql = format!(
            "SELECT p.load_balancer_id, p.id, p.operating_status, {members} FROM pool p \
             LEFT JOIN member m ON m.pool_id = p.id WHERE p.load_balancer_id IN ({}) \
             GROUP BY p.load_balancer_id, p.id, p.operating_status ORDER BY p.id",
            placeholders(1, ids.len()),
            members = match backend {
                Backend::Postgres => "string_agg(m.id || '=' || m.operating_status, ',')",
                Backend::Sqlite => "group_concat(m.id || '=' || m.operating_status, ',')",
            }
        );
        for r in bind_all(sqlx::query(&sql), &ids).fetch_all(&mut *tx.tx).await? {
            let lb: String = r.try_get(0)?;
            let Some(lb) = rows.lbs.get_mut(&lb) else { continue };
            let folded: Option<String> = r.try_get(3)?;
            lb.pools.push(PoolRow {
                id: r.try_get(1)?,
                operating_status: r.try_get(2)?,
                members: unfold_members(folded.as_deref().unwrap_or_default()),
            });
        }
    }
    Ok(rows)
}

/// `id=STATUS,...` (member ids are UUIDs, statuses words) as (id, status)
/// in id order.
fn unfold_members(folded: &str) -> Vec<(String, String)> {
    let mut members: Vec<(String, String)> = folded
        .split(',')
        .filter_map(|m| m.split_once('='))
        .map(|(id, status)| (id.to_owned(), status.to_owned()))
        .collect();
    members.sort_unstable();
    members
}

/// A listener's statistics to write: added to the stored ones (version 3
/// deltas) or replacing them (older versions), folded over the batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum StatsWrite {
    Add(StatsReport),
    Set(StatsReport),
}

fn plus(a: StatsReport, d: StatsReport) -> StatsReport {
    StatsReport {
        tx: a.tx.saturating_add(d.tx),
        rx: a.rx.saturating_add(d.rx),
        totconns: a.totconns.saturating_add(d.totconns),
        ereq: a.ereq.saturating_add(d.ereq),
        // Always the current count.
        conns: d.conns,
    }
}

impl StatsWrite {
    fn then(self, next: StatsWrite) -> StatsWrite {
        match (self, next) {
            (_, StatsWrite::Set(v)) => StatsWrite::Set(v),
            (StatsWrite::Add(a), StatsWrite::Add(d)) => StatsWrite::Add(plus(a, d)),
            (StatsWrite::Set(s), StatsWrite::Add(d)) => StatsWrite::Set(plus(s, d)),
        }
    }
}

/// What the batch writes.
#[derive(Debug, Default)]
struct Plan {
    health: BTreeSet<String>,
    allocate: BTreeSet<String>,
    /// (table, id) to operating status.
    statuses: BTreeMap<(&'static str, String), &'static str>,
    /// (listener, amphora) to statistics.
    stats: BTreeMap<(String, String), StatsWrite>,
}

impl Plan {
    /// Evaluates one heartbeat against the rows (updating them as the
    /// database will be).
    fn add(&mut self, rows: &mut Rows, received: &Received, heartbeat_interval: Duration) -> Outcome {
        let message = &received.message;
        let Some(amp) = rows.amphorae.get_mut(&message.id) else {
            return Outcome::UnknownAmphora;
        };
        let lb = amp.lb.as_ref().and_then(|id| rows.lbs.get_mut(id));
        if let Some(lb) = lb.as_deref() {
            for (listener_id, report) in &message.listeners {
                // Only the load balancer's own listeners: an amphora's word
                // counts for what it serves.
                let Some(stats) = report.stats else { continue };
                if !lb.listeners.iter().any(|l| &l.id == listener_id) {
                    continue;
                }
                let write = if message.stats_are_deltas() { StatsWrite::Add(stats) } else { StatsWrite::Set(stats) };
                self.stats
                    .entry((listener_id.clone(), message.id.clone()))
                    .and_modify(|w| *w = w.then(write))
                    .or_insert(write);
            }
        }
        // An amphora without a load balancer serves nothing.
        let expected = lb.as_deref().map_or(Some(0), LbRows::expected_listeners);
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
                return Outcome::TooSlow;
            }
            self.health.insert(message.id.clone());
            if amp.status == amphora_status::FAILOVER_STOPPED {
                // Upstream's update_failover_stopped: it checks in again.
                tracing::info!(amphora = %message.id, "amphora heartbeats again: FAILOVER_STOPPED -> ALLOCATED");
                self.allocate.insert(message.id.clone());
                amp.status = amphora_status::ALLOCATED.to_owned();
            }
        } else {
            tracing::warn!(
                amphora = %message.id,
                found = message.listeners.len(),
                expected = expected.unwrap_or_default(),
                "heartbeat reports a different number of listeners than enabled: health not refreshed"
            );
            outcome = Outcome::ListenerCountMismatch;
        }
        let Some(lb) = lb else { return outcome };
        let changes = status::evaluate(lb, message);
        for note in &changes.unknown {
            tracing::warn!(amphora = %message.id, "{note}");
        }
        for (id, s) in &changes.listeners {
            if let Some(l) = lb.listeners.iter_mut().find(|l| &l.id == id) {
                l.operating_status = (*s).to_owned();
            }
            self.statuses.insert(("listener", id.clone()), s);
        }
        for (id, s) in &changes.members {
            for pool in &mut lb.pools {
                if let Some(m) = pool.members.iter_mut().find(|m| &m.0 == id) {
                    m.1 = (*s).to_owned();
                }
            }
            self.statuses.insert(("member", id.clone()), s);
        }
        for (id, s) in &changes.pools {
            if let Some(p) = lb.pools.iter_mut().find(|p| &p.id == id) {
                p.operating_status = (*s).to_owned();
            }
            self.statuses.insert(("pool", id.clone()), s);
        }
        if let Some(s) = changes.load_balancer {
            lb.operating_status = s.to_owned();
            self.statuses.insert(("load_balancer", lb.id.clone()), s);
        }
        outcome
    }

    async fn write(self, tx: &mut WriteTx<'_>) -> Result<(), sqlx::Error> {
        let health: Vec<&str> = self.health.iter().map(String::as_str).collect();
        let now = now_millis();
        for ids in power_chunks(&health) {
            let values = (0..ids.len()).map(|i| format!("(${}, $1, $2)", i + 3)).collect::<Vec<_>>().join(", ");
            let sql = format!(
                "INSERT INTO amphora_health (amphora_id, last_update, busy) VALUES {values} \
                 ON CONFLICT (amphora_id) DO UPDATE SET last_update = excluded.last_update, busy = excluded.busy"
            );
            bind_all(sqlx::query(&sql).bind(now).bind(false), ids).execute(&mut *tx.tx).await?;
        }
        let allocate: Vec<&str> = self.allocate.iter().map(String::as_str).collect();
        for ids in in_lists(&allocate) {
            let sql = format!(
                "UPDATE amphora SET status = $1, updated_at = $2 WHERE status = $3 AND id IN ({})",
                placeholders(4, ids.len())
            );
            let q = sqlx::query(&sql)
                .bind(amphora_status::ALLOCATED)
                .bind(now_text())
                .bind(amphora_status::FAILOVER_STOPPED);
            bind_all(q, &ids).execute(&mut *tx.tx).await?;
        }
        // One statement per table and status.
        let mut grouped: BTreeMap<(&str, &str), Vec<&str>> = BTreeMap::new();
        for ((table, id), s) in &self.statuses {
            grouped.entry((table, s)).or_default().push(id);
        }
        for ((table, s), ids) in &grouped {
            for ids in in_lists(ids) {
                let sql = format!(
                    "UPDATE {table} SET operating_status = $1, updated_at = $2 WHERE id IN ({})",
                    placeholders(3, ids.len())
                );
                bind_all(sqlx::query(&sql).bind(*s).bind(now_text()), &ids).execute(&mut *tx.tx).await?;
            }
        }
        let (add, set): (Vec<_>, Vec<_>) = self.stats.iter().partition(|(_, w)| matches!(w, StatsWrite::Add(_)));
        write_stats(tx, &add, true).await?;
        write_stats(tx, &set, false).await?;
        Ok(())
    }
}

/// Counters go into BIGINT columns.
fn big(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

async fn write_stats(
    tx: &mut WriteTx<'_>,
    rows: &[(&(String, String), &StatsWrite)],
    add: bool,
) -> Result<(), sqlx::Error> {
    // Deltas add up (saturating at BIGINT's limit rather than failing the
    // batch); `active_connections` is always the current count.
    let plus = |c: &str| {
        format!(
            "{c} = CASE WHEN listener_statistics.{c} > {max} - excluded.{c} THEN {max} \
             ELSE listener_statistics.{c} + excluded.{c} END",
            max = i64::MAX
        )
    };
    let on_conflict = if add {
        format!(
            "{}, {}, {}, {}, active_connections = excluded.active_connections",
            plus("bytes_in"),
            plus("bytes_out"),
            plus("total_connections"),
            plus("request_errors")
        )
    } else {
        "bytes_in = excluded.bytes_in, bytes_out = excluded.bytes_out, total_connections = excluded.total_connections, \
         request_errors = excluded.request_errors, active_connections = excluded.active_connections"
            .to_owned()
    };
    for chunk in power_chunks(rows) {
        let values =
            (0..chunk.len()).map(|i| format!("({})", placeholders(i * 7 + 1, 7))).collect::<Vec<_>>().join(", ");
        let sql = format!(
            "INSERT INTO listener_statistics (listener_id, amphora_id, bytes_in, bytes_out, active_connections, \
             total_connections, request_errors) VALUES {values} ON CONFLICT (listener_id, amphora_id) DO UPDATE SET {on_conflict}"
        );
        let mut q = sqlx::query(&sql);
        for ((listener, amphora), write) in chunk {
            let (StatsWrite::Add(s) | StatsWrite::Set(s)) = **write;
            q = q
                .bind(listener.as_str())
                .bind(amphora.as_str())
                .bind(big(s.rx))
                .bind(big(s.tx))
                .bind(big(s.conns))
                .bind(big(s.totconns))
                .bind(big(s.ereq));
        }
        q.execute(&mut *tx.tx).await?;
    }
    Ok(())
}

/// Applies a batch in one transaction; returns each message's outcome.
pub async fn apply_batch(
    db: &Db,
    batch: &[Received],
    heartbeat_interval: Duration,
) -> Result<Vec<Outcome>, sqlx::Error> {
    let ids: BTreeSet<&str> = batch.iter().map(|r| r.message.id.as_str()).collect();
    let ids: Vec<&str> = ids.into_iter().collect();
    let mut tx = db.write().await?;
    let mut rows = load(&mut tx, db.backend, &ids).await?;
    let mut plan = Plan::default();
    let outcomes = batch.iter().map(|r| plan.add(&mut rows, r, heartbeat_interval)).collect();
    plan.write(&mut tx).await?;
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn in_lists_pad_to_powers_of_two_with_ids_of_their_own_chunk() {
        let ids: Vec<String> = (0..70).map(|i| format!("a{i}")).collect();
        let ids: Vec<&str> = ids.iter().map(String::as_str).collect();
        let lists = in_lists(&ids);
        assert_eq!(lists.iter().map(Vec::len).collect::<Vec<_>>(), [32, 32, 8]);
        // The last list: a64..a69, then a64 repeated.
        assert_eq!(lists[2][..6], ids[64..]);
        assert!(lists[2][6..].iter().all(|id| *id == "a64"));
        assert_eq!(lists.concat()[..64], ids[..64]);
        assert_eq!(in_lists(&ids[..5]).iter().map(Vec::len).collect::<Vec<_>>(), [8]);
        assert!(in_lists(&[]).is_empty());
    }

    #[test]
    fn folded_members_unfold_in_id_order() {
        assert_eq!(
            unfold_members("b2=ERROR,a1=ONLINE"),
            [("a1".to_owned(), "ONLINE".to_owned()), ("b2".to_owned(), "ERROR".to_owned())]
        );
        assert!(unfold_members("").is_empty());
    }

    #[test]
    fn power_chunks_cover_every_row_once_in_power_of_two_lengths() {
        let rows: Vec<u32> = (0..300).collect();
        let chunks = power_chunks(&rows);
        assert_eq!(chunks.iter().map(|c| c.len()).collect::<Vec<_>>(), [256, 32, 8, 4]);
        assert_eq!(chunks.concat(), rows);
        assert_eq!(power_chunks(&rows[..1]).len(), 1);
        assert!(power_chunks::<u32>(&[]).is_empty());
    }
}
