//! The load-balancer API (`/v2/lbaas/...`): load balancers, listeners,
//! pools, members and health monitors, as upstream serves them.
//!
//! What every resource shares lives here: list scoping by project, the
//! answer envelopes, and the one state rule of a change to a load balancer
//! or its children (`lock_lb`): the load balancer must be ACTIVE; it goes
//! PENDING_UPDATE, the child is marked, and an `UpdateLoadBalancer` job is
//! queued in the same transaction (`queue`). The API only marks; the worker
//! settles statuses and removes what is PENDING_DELETE.
//!
//! Not served yet (each answers upstream's 400 ValidationException rather
//! than half-working): a listener's inline `default_pool` and a pool's
//! inline members and monitor outside a fully populated load balancer
//! (`graph.rs`), L7 policies, and anything that needs a certificate store
//! (TERMINATED_HTTPS listeners, TLS container refs).

pub mod graph;
pub mod healthmonitor;
pub mod listener;
pub mod loadbalancer;
pub mod member;
pub mod pool;
pub mod validate;

use axum::Json;
use axum::Router;
use serde_json::{Map, Value, json};
use sqlx::Row;

use super::AppState;
use super::error::{ApiError, ApiResult};
use super::listing::{self, ListQuery, Param, Resource, Scope};
use crate::auth::Context;
use crate::db::{Db, WriteTx, is_uuid, now_text};
use crate::jobs::{self, JobKind};
use crate::model::provisioning;

pub fn routes() -> Router<AppState> {
    Router::new()
        .merge(loadbalancer::routes())
        .merge(listener::routes())
        .merge(pool::routes())
        .merge(member::routes())
        .merge(healthmonitor::routes())
}

/// A value written to a column.
#[derive(Debug, Clone)]
pub enum Val {
    Text(Option<String>),
    Int(Option<i64>),
    Bool(bool),
}

impl Val {
    pub fn text(s: impl Into<String>) -> Val {
        Val::Text(Some(s.into()))
    }

    pub fn json(v: &impl serde::Serialize) -> Val {
        Val::Text(Some(serde_json::to_string(v).unwrap_or_else(|_| "null".into())))
    }
}

fn bind_vals<'q>(
    mut q: sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments<'q>>,
    vals: &'q [Val],
) -> sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments<'q>> {
    for v in vals {
        q = match v {
            Val::Text(s) => q.bind(s.clone()),
            Val::Int(n) => q.bind(*n),
            Val::Bool(b) => q.bind(*b),
        };
    }
    q
}

/// Adds each default whose column the row does not set yet.
pub fn fill_defaults<'a>(row: &mut Vec<(&'a str, Val)>, defaults: impl IntoIterator<Item = (&'a str, Val)>) {
    for (col, val) in defaults {
        if !row.iter().any(|(c, _)| *c == col) {
            row.push((col, val));
        }
    }
}

/// `INSERT INTO table (cols) VALUES ($1, ...)`.
pub async fn insert(tx: &mut WriteTx<'_>, table: &str, cols: &[(&str, Val)]) -> ApiResult<()> {
    let names = cols.iter().map(|(c, _)| *c).collect::<Vec<_>>().join(", ");
    let marks = (1..=cols.len()).map(|i| format!("${i}")).collect::<Vec<_>>().join(", ");
    let vals: Vec<Val> = cols.iter().map(|(_, v)| v.clone()).collect();
    let sql = format!("INSERT INTO {table} ({names}) VALUES ({marks})");
    bind_vals(sqlx::query(&sql), &vals).execute(&mut *tx.tx).await?;
    Ok(())
}

/// `UPDATE table SET cols..., updated_at = now WHERE id = $N`.
pub async fn update(tx: &mut WriteTx<'_>, table: &str, id: &str, cols: &[(&str, Val)]) -> ApiResult<()> {
    let mut vals: Vec<Val> = cols.iter().map(|(_, v)| v.clone()).collect();
    vals.push(Val::text(now_text()));
    vals.push(Val::text(id));
    let mut sets: Vec<String> = cols.iter().enumerate().map(|(i, (c, _))| format!("{c} = ${}", i + 1)).collect();
    sets.push(format!("updated_at = ${}", cols.len() + 1));
    let sql = format!("UPDATE {table} SET {} WHERE id = ${}", sets.join(", "), cols.len() + 2);
    bind_vals(sqlx::query(&sql), &vals).execute(&mut *tx.tx).await?;
    Ok(())
}

/// Sets a row's provisioning status.
pub async fn mark(tx: &mut WriteTx<'_>, table: &str, id: &str, status: &str) -> ApiResult<()> {
    update(tx, table, id, &[("provisioning_status", Val::text(status))]).await
}

/// 404 for what cannot be an id (upstream looks it up and finds nothing).
pub fn check_id(id: &str, resource: &str) -> ApiResult<()> {
    if is_uuid(id) { Ok(()) } else { Err(ApiError::not_found(resource, id)) }
}

/// Which statuses of a load balancer allow a change.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LbChange {
    /// A change to it or its children: ACTIVE only (`MUTABLE_STATUSES`);
    /// refused with ImmutableObject.
    Child,
    /// An update of the load balancer itself: ACTIVE only, refused with
    /// LBPendingStateError.
    Update,
    /// A delete: ACTIVE or ERROR (`DELETABLE_STATUSES`).
    Delete,
    /// A failover: ACTIVE or ERROR (`FAILOVERABLE_STATUSES`).
    Failover,
}

/// Locks the load balancer row (FOR UPDATE on PostgreSQL; the writer lock
/// on SQLite), checks its status allows `change`, and sets it to
/// PENDING_UPDATE (PENDING_DELETE for a delete).
pub async fn lock_lb(tx: &mut WriteTx<'_>, db: &Db, lb_id: &str, change: LbChange) -> ApiResult<()> {
    let sql = format!("SELECT provisioning_status FROM load_balancer WHERE id = $1{}", db.for_update());
    let status: String = sqlx::query(&sql)
        .bind(lb_id)
        .fetch_optional(&mut *tx.tx)
        .await?
        .ok_or_else(|| ApiError::not_found("Load Balancer", lb_id))?
        .try_get(0)?;
    let ok = match change {
        LbChange::Child | LbChange::Update => status == provisioning::ACTIVE,
        LbChange::Delete | LbChange::Failover => status == provisioning::ACTIVE || status == provisioning::ERROR,
    };
    if !ok {
        return Err(match change {
            LbChange::Child => ApiError::immutable("Load Balancer", lb_id),
            _ => ApiError::Conflict(format!("Invalid state {status} of loadbalancer resource {lb_id}")),
        });
    }
    let next = if change == LbChange::Delete { provisioning::PENDING_DELETE } else { provisioning::PENDING_UPDATE };
    mark(tx, "load_balancer", lb_id, next).await
}

/// Queues `kind` for the load balancer, commits, and wakes the worker.
pub async fn queue(state: &AppState, mut tx: WriteTx<'_>, kind: JobKind, lb_id: &str, payload: Value) -> ApiResult<()> {
    jobs::enqueue(&mut tx, kind, lb_id, payload).await?;
    tx.commit().await?;
    state.jobs_queued.notify_one();
    Ok(())
}

/// The load balancer of a child: its project (for policy) and id.
#[derive(Debug, Clone)]
pub struct Parent {
    pub lb_id: String,
    pub project_id: String,
}

/// The project and existence of a load balancer that is not DELETED.
pub async fn parent_lb(db: &Db, lb_id: &str) -> ApiResult<Parent> {
    let row = sqlx::query("SELECT project_id FROM load_balancer WHERE id = $1 AND provisioning_status <> $2")
        .bind(lb_id)
        .bind(provisioning::DELETED)
        .fetch_optional(&db.pool)
        .await?
        .ok_or_else(|| ApiError::not_found("Load Balancer", lb_id))?;
    Ok(Parent { lb_id: lb_id.to_owned(), project_id: row.try_get(0)? })
}

/// The list scope of the caller: every project for global readers, else
/// the asked-for `project_id` or the caller's own, which they must be
/// allowed to read (upstream's `_auth_get_all`).
pub fn list_scope(ctx: &Context, pairs: &[(String, String)]) -> ApiResult<Scope> {
    if ctx.can_read_global() {
        return Ok(Scope::default());
    }
    let asked = pairs.iter().rev().find(|(k, _)| k == "project_id" || k == "tenant_id").map(|(_, v)| v.clone());
    let project = asked.or_else(|| ctx.project_id.clone()).ok_or(ApiError::Forbidden)?;
    if !ctx.can_read(&project) {
        return Err(ApiError::Forbidden);
    }
    Ok(Scope::default().with("project_id = $?", vec![Param::Text(project)]))
}

/// Parses a list request's query for `resource` and scopes it.
pub fn list_request(
    state: &AppState,
    ctx: &Context,
    resource: &'static Resource,
    query: Option<&str>,
) -> ApiResult<(ListQuery, Scope)> {
    let pairs = listing::parse_pairs(query)?;
    let scope = list_scope(ctx, &pairs)?;
    let q = ListQuery::parse(resource, pairs, &state.list_settings())?;
    Ok((q, scope))
}

/// `{"<plural>": [...], "<plural>_links": [...]}` with `fields=` applied.
pub fn list_body(plural: &str, rows: Vec<Map<String, Value>>, links: Vec<Value>, q: &ListQuery) -> Json<Value> {
    let rows: Vec<Value> =
        rows.into_iter().map(|r| Value::Object(listing::select_fields(r, q.fields.as_deref()))).collect();
    let mut out = Map::new();
    out.insert(plural.to_owned(), Value::Array(rows));
    out.insert(format!("{plural}_links"), Value::Array(links));
    Json(Value::Object(out))
}

/// `{"<key>": {...}}` with the show request's `fields=` applied.
pub fn show_body(key: &str, row: Map<String, Value>, query: Option<&str>) -> ApiResult<Json<Value>> {
    let pairs = listing::parse_pairs(query)?;
    let fields = listing::fields_of(&pairs);
    Ok(Json(json!({ key: listing::select_fields(row, fields.as_deref()) })))
}

/// What every rendering does: a null `name`/`description` is `""`
/// (upstream's `from_db_obj`), hidden fields go.
pub fn finish(resource: &Resource, mut row: Map<String, Value>) -> Map<String, Value> {
    for key in ["name", "description"] {
        if let Some(v) = row.get_mut(key)
            && v.is_null()
        {
            *v = Value::String(String::new());
        }
    }
    resource.strip_hidden(row)
}

/// `{"id": ...}` of a field of the row, as a one-element list.
pub fn id_list(row: &Map<String, Value>, field: &str) -> Value {
    match row.get(field) {
        Some(Value::String(id)) => json!([{ "id": id }]),
        _ => json!([]),
    }
}

/// The statistics of a set of listeners, summed.
pub async fn stats_of(db: &Db, condition: &str, id: &str) -> ApiResult<Value> {
    let sum = |c: &str| format!("CAST(COALESCE(SUM({c}), 0) AS BIGINT)");
    let sql = format!(
        "SELECT {}, {}, {}, {}, {} FROM listener_statistics WHERE {condition}",
        sum("bytes_in"),
        sum("bytes_out"),
        sum("active_connections"),
        sum("total_connections"),
        sum("request_errors")
    );
    let row = sqlx::query(&sql).bind(id).fetch_one(&db.pool).await?;
    let get = |i: usize| -> ApiResult<i64> { Ok(row.try_get::<i64, _>(i)?) };
    Ok(json!({
        "bytes_in": get(0)?,
        "bytes_out": get(1)?,
        "active_connections": get(2)?,
        "total_connections": get(3)?,
        "request_errors": get(4)?,
    }))
}
