//! A fully populated load balancer: `POST /loadbalancers` with
//! `listeners` (each with an optional `default_pool`) and `pools` (each
//! with `members` and a `healthmonitor`), created in the load balancer's
//! own transaction, all PENDING_CREATE; the worker's create flow settles
//! them. Pools are named so listeners can refer to them, as upstream's
//! `_graph_create` requires, and the answer shows the children in full.

use std::collections::{HashMap, HashSet};

use serde_json::{Map, Value};

use super::healthmonitor::{self, NewMonitor};
use super::listener::{self, NewListener};
use super::member::{self, NewMember};
use super::pool::{self, NewPool};
use super::validate::{Body, validation};
use crate::api::error::{ApiError, ApiResult};
use crate::api::listing::Param;
use crate::db::{Db, WriteTx};

#[derive(Debug)]
struct PoolSpec {
    name: Option<String>,
    pool: NewPool,
    members: Vec<NewMember>,
    monitor: Option<NewMonitor>,
}

#[derive(Debug)]
struct ListenerSpec {
    listener: NewListener,
    default_pool: Option<String>,
}

/// The children of a load balancer create, checked.
#[derive(Debug, Default)]
pub struct Graph {
    pools: Vec<PoolSpec>,
    listeners: Vec<ListenerSpec>,
}

impl Graph {
    pub fn is_empty(&self) -> bool {
        self.pools.is_empty() && self.listeners.is_empty()
    }

    /// The `subnet_id` of every member, for the network driver to check.
    pub fn member_subnets(&self) -> impl Iterator<Item = &str> {
        self.pools.iter().flat_map(|p| &p.members).filter_map(|m| m.subnet_id.as_deref())
    }
}

fn items(b: &Body, key: &str) -> ApiResult<Vec<Value>> {
    match b.object(key) {
        None | Some(None) => Ok(Vec::new()),
        Some(Some(Value::Array(a))) => Ok(a.clone()),
        Some(Some(other)) => Err(ApiError::BadRequest(format!(
            "Invalid input for field/attribute {key}. Value: '{other}'. Wrong type. Expected a list."
        ))),
    }
}

fn with(base: &[&'static str], extra: &[&'static str]) -> Vec<&'static str> {
    base.iter().chain(extra).copied().collect()
}

fn parse_pool(value: Value) -> ApiResult<PoolSpec> {
    let b = Body::from_value(value, "pools", &with(pool::COMMON_FIELDS, &["protocol", "healthmonitor", "members"]))?;
    let name = b.text("name", 255)?.flatten();
    for attr in ["protocol", "lb_algorithm"] {
        if !b.has(attr) {
            return Err(validation(format!(
                "Pool definition for '{}' missing required attribute: {attr}",
                name.as_deref().unwrap_or("None")
            )));
        }
    }
    let new = pool::new_pool(&b)?;
    let member_fields = with(member::PUT_FIELDS, &["address", "protocol_port", "subnet_id", "request_sriov"]);
    let mut members = Vec::new();
    let mut seen = HashSet::new();
    for m in items(&b, "members")? {
        let m = member::new_member(&Body::from_value(m, "members", &member_fields)?)?;
        if !seen.insert((m.address.clone(), m.port)) {
            return Err(ApiError::Conflict(format!(
                "Another member on this pool is already using ip {} on protocol_port {}",
                m.address, m.port
            )));
        }
        members.push(m);
    }
    let monitor = match b.object("healthmonitor") {
        Some(Some(hm)) => {
            let hb = Body::from_value(hm.clone(), "healthmonitor", &with(healthmonitor::PUT_FIELDS, &["type"]))?;
            let m = healthmonitor::new_monitor(&hb)?;
            healthmonitor::check_monitor_for_pool(&m.kind, &new.protocol)?;
            Some(m)
        }
        _ => None,
    };
    Ok(PoolSpec { name, pool: new, members, monitor })
}

/// Checks the `listeners` and `pools` of a load balancer create body.
pub fn parse(b: &Body) -> ApiResult<Graph> {
    let mut g = Graph::default();
    for p in items(b, "pools")? {
        g.pools.push(parse_pool(p)?);
    }
    let mut referenced = Vec::new();
    let listener_fields = with(listener::COMMON_FIELDS, &["protocol", "protocol_port", "default_pool", "l7policies"]);
    for l in items(b, "listeners")? {
        let lb = Body::from_value(l, "listeners", &listener_fields)?;
        let new = listener::new_listener(&lb)?;
        let default_pool = match lb.object("default_pool") {
            Some(Some(Value::Object(dp))) => {
                let Some(name) = dp.get("name").and_then(Value::as_str).map(str::to_owned) else {
                    return Err(validation("Pools must be named when creating a fully populated loadbalancer."));
                };
                if dp.keys().any(|k| k != "name") {
                    g.pools.push(parse_pool(Value::Object(dp.clone()))?);
                } else {
                    referenced.push(name.clone());
                }
                Some(name)
            }
            Some(Some(other)) => {
                return Err(ApiError::BadRequest(format!(
                    "Invalid input for field/attribute default_pool. Value: '{other}'. Expected an object."
                )));
            }
            _ => None,
        };
        g.listeners.push(ListenerSpec { listener: new, default_pool });
    }
    let names: Vec<Option<&str>> = g.pools.iter().map(|p| p.name.as_deref()).collect();
    if names.iter().collect::<HashSet<_>>().len() != names.len() {
        return Err(validation("Pool names must be unique when creating a fully populated loadbalancer."));
    }
    for name in &referenced {
        if !names.contains(&Some(name.as_str())) {
            return Err(validation(format!("Pool '{name}' was referenced but no full definition was found.")));
        }
    }
    Ok(g)
}

/// Inserts the graph under a load balancer being created (same
/// transaction): pools with their members and monitor first, then the
/// listeners pointing at them.
pub async fn insert(tx: &mut WriteTx<'_>, lb_id: &str, project: &str, g: Graph) -> ApiResult<()> {
    let mut ids: HashMap<String, String> = HashMap::new();
    for p in g.pools {
        let id = pool::insert_pool(tx, lb_id, project, p.pool).await?;
        for m in p.members {
            member::insert_member(tx, &id, project, m).await?;
        }
        if let Some(m) = p.monitor {
            healthmonitor::insert_monitor(tx, &id, project, m).await?;
        }
        if let Some(name) = p.name {
            ids.insert(name, id);
        }
    }
    for l in g.listeners {
        let mut new = l.listener;
        if let Some(name) = l.default_pool {
            let id = ids
                .get(&name)
                .ok_or_else(|| ApiError::BadRequest(format!("Missing details for Pool object: {name}")))?;
            new.default_pool_id = Some(id.clone());
        }
        listener::insert_listener(tx, lb_id, project, new).await?;
    }
    Ok(())
}

/// The load balancer's listeners and pools as upstream's full response
/// shows them: listeners without `loadbalancers`; pools with their members
/// and monitor in full instead of ids.
pub async fn full_children(db: &Db, lb_id: &str) -> ApiResult<(Vec<Value>, Vec<Value>)> {
    let by_lb = [Param::Text(lb_id.to_owned())];
    let listeners = listener::render(listener::LISTENER.fetch_all(db, "load_balancer_id = $1", &by_lb).await?)
        .into_iter()
        .map(|mut l| {
            l.remove("loadbalancers");
            Value::Object(l)
        })
        .collect();
    let mut pools = Vec::new();
    for mut p in pool::render(db, pool::POOL.fetch_all(db, "load_balancer_id = $1", &by_lb).await?).await? {
        let id = p.get("id").and_then(Value::as_str).unwrap_or_default().to_owned();
        let by_pool = [Param::Text(id)];
        p.remove("loadbalancers");
        p.remove("healthmonitor_id");
        let members = member::render(member::MEMBER.fetch_all(db, "pool_id = $1", &by_pool).await?);
        p.insert("members".into(), Value::Array(members.into_iter().map(Value::Object).collect()));
        let monitors =
            healthmonitor::render(healthmonitor::HEALTH_MONITOR.fetch_all(db, "pool_id = $1", &by_pool).await?);
        if let Some(mut hm) = monitors.into_iter().next() {
            hm.remove("pools");
            p.insert("healthmonitor".into(), Value::Object(hm));
        }
        pools.push(Value::Object(p));
    }
    Ok((listeners, pools))
}

/// Replaces the id lists of a rendered load balancer with the full
/// children.
pub async fn fill(db: &Db, lb: &mut Map<String, Value>) -> ApiResult<()> {
    let id = lb.get("id").and_then(Value::as_str).unwrap_or_default().to_owned();
    let (listeners, pools) = full_children(db, &id).await?;
    lb.insert("listeners".into(), Value::Array(listeners));
    lb.insert("pools".into(), Value::Array(pools));
    Ok(())
}
