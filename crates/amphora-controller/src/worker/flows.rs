//! The flows, in upstream's order (`controller/worker/v2/flows/`), as
//! lists of steps over the job's payload.
//!
//! A flow's shape is decided once, when the job first starts (`plan`): the
//! topology and the amphorae involved go into the payload, and `build` makes
//! the same steps from it on every resume. The payload:
//!
//! ```json
//! {"planned": true, "lb_id": "…" | null, "topology": "SINGLE",
//!  "amps": [{"id": "new amphora" | null, "old": "amphora replaced or deleted" | null,
//!            "role": "MASTER", "vrrp_priority": 100, "vrrp_id": 1, "committed": false}],
//!  "vip": {"port_id": "…", "address": "…", "network_id": "…", "allocated": true}}
//! ```

use std::collections::BTreeSet;

use anyhow::{Context as _, anyhow, bail};
use serde_json::{Map, Value, json};
use sqlx::Row;

use super::drivers::{AmphoraTarget, Port, VipRequest};
use super::flow::{Cx, StepResult};
use crate::config::Topology;
use crate::db::{Db, WriteTx, format_time, now_millis, now_text};
use crate::jobs::JobKind;
use crate::model::{amphora_status, operating, provisioning, role};

/// Which amphora of a slot a step acts on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Amp {
    /// The amphora the flow builds (`amps[i].id`).
    New(usize),
    /// The amphora the flow replaces or deletes (`amps[i].old`).
    Old(usize),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    // Building an amphora (upstream's get_amphora_for_lb_subflow).
    CreateAmphoraInDb(usize),
    ComputeCreate(usize),
    ComputeWait(usize),
    ConnectivityWait(usize),
    MarkAllocated(usize),
    // Networking.
    AllocateVip,
    AllocateVrrpPort(usize),
    PlugVip(usize),
    /// Every member subnet the load balancer's members use gets a port
    /// on each of its amphorae (upstream's CalculateDelta +
    /// HandleNetworkDelta + AmphoraePostNetworkPlug).
    PlugMemberNetworks,
    /// Member ports of subnets no member of the load balancer uses any
    /// more are detached from their amphora and deleted (upstream's
    /// CalculateDelta delete_nics + HandleNetworkDelta: Nova interface
    /// detach, then the Neutron port delete).
    UnplugMemberNetworks,
    // The load balancer's amphorae together.
    UploadConfigAll,
    UpdateVrrpAll,
    EnableHealthMonitoring,
    MarkLbActive,
    // Deleting an amphora (upstream's get_delete_amphora_flow).
    MarkPendingDelete(Amp),
    ComputeDelete(Amp),
    DeleteVrrpPort(Amp),
    MarkAmphoraDeleted(Amp),
    RemoveHealth(Amp),
    // Deleting a load balancer.
    DeallocateVip,
    DeleteLbInDb,
    // The agent's own configuration.
    UpdateAgentConfig(Amp),
    RotateCertificate(Amp),
}

// ---------------------------------------------------------------------------
// Planning and building.

fn topology_of(payload: &Map<String, Value>) -> Topology {
    payload.get("topology").and_then(Value::as_str).and_then(Topology::parse).unwrap_or(Topology::Single)
}

fn slots(payload: &Map<String, Value>) -> &[Value] {
    payload.get("amps").and_then(Value::as_array).map(Vec::as_slice).unwrap_or(&[])
}

fn slot_has(payload: &Map<String, Value>, i: usize, key: &str) -> bool {
    slots(payload).get(i).and_then(|s| s.get(key)).is_some_and(|v| !v.is_null())
}

/// Role, priority and VRRP id of the amphora at `index` of a topology
/// (upstream's MarkAmphoraMaster/Backup/StandAloneInDB).
fn role_slot(topology: Topology, index: usize) -> Value {
    match (topology, index) {
        (Topology::Single, _) => json!({"role": role::STANDALONE, "vrrp_priority": null, "vrrp_id": null}),
        (Topology::ActiveStandby, 0) => json!({"role": role::MASTER, "vrrp_priority": 100, "vrrp_id": 1}),
        (Topology::ActiveStandby, _) => json!({"role": role::BACKUP, "vrrp_priority": 90, "vrrp_id": 1}),
    }
}

#[derive(Debug)]
struct LbRow {
    topology: Option<String>,
    vip_address: Option<String>,
    vip_port_id: Option<String>,
    vip_subnet_id: Option<String>,
    vip_network_id: Option<String>,
}

async fn load_lb(db: &Db, id: &str) -> anyhow::Result<Option<LbRow>> {
    let row = sqlx::query(
        "SELECT topology, vip_address, vip_port_id, vip_subnet_id, vip_network_id FROM load_balancer \
         WHERE id = $1 AND provisioning_status <> $2",
    )
    .bind(id)
    .bind(provisioning::DELETED)
    .fetch_optional(&db.pool)
    .await?;
    let Some(r) = row else { return Ok(None) };
    Ok(Some(LbRow {
        topology: r.try_get(0)?,
        vip_address: r.try_get(1)?,
        vip_port_id: r.try_get(2)?,
        vip_subnet_id: r.try_get(3)?,
        vip_network_id: r.try_get(4)?,
    }))
}

fn lb_topology(lb: &LbRow, cx: &Cx) -> Topology {
    lb.topology.as_deref().and_then(Topology::parse).unwrap_or(cx.config.worker.loadbalancer_topology)
}

/// The amphorae of a load balancer that are not DELETED, standby first
/// (upstream fails over the standby first).
async fn lb_amphorae(db: &Db, lb_id: &str) -> anyhow::Result<Vec<(String, Option<String>)>> {
    let rows = sqlx::query(
        "SELECT id, role FROM amphora WHERE load_balancer_id = $1 AND status <> $2 ORDER BY created_at, id",
    )
    .bind(lb_id)
    .bind(amphora_status::DELETED)
    .fetch_all(&db.pool)
    .await?;
    let mut out = Vec::new();
    for r in rows {
        out.push((r.try_get::<String, _>(0)?, r.try_get::<Option<String>, _>(1)?));
    }
    out.sort_by_key(|(_, role)| if role.as_deref() == Some(role::BACKUP) { 0 } else { 1 });
    Ok(out)
}

/// Decides the flow's shape and records it in the payload (saved by the
/// runner before the first step).
pub async fn plan(cx: &mut Cx) -> anyhow::Result<()> {
    if cx.payload.get("planned").and_then(Value::as_bool) == Some(true) {
        return Ok(());
    }
    let target = cx.target_id.clone();
    let mut amps: Vec<Value> = Vec::new();
    let mut lb_id: Option<String> = None;
    let mut topology = cx.config.worker.loadbalancer_topology;
    match cx.kind {
        JobKind::CreateLoadBalancer => {
            let lb = load_lb(&cx.db, &target).await?.ok_or_else(|| anyhow!("load balancer {target} not found"))?;
            topology = lb_topology(&lb, cx);
            if lb.topology.is_none() {
                let db = cx.db.clone();
                let mut tx = db.write().await?;
                sqlx::query("UPDATE load_balancer SET topology = $1 WHERE id = $2 AND topology IS NULL")
                    .bind(topology.as_str())
                    .bind(target.as_str())
                    .execute(&mut **tx)
                    .await?;
                tx.commit().await?;
            }
            amps = (0..topology.amphora_count()).map(|i| role_slot(topology, i)).collect();
            lb_id = Some(target);
        }
        JobKind::UpdateLoadBalancer => {
            lb_id = Some(target);
        }
        JobKind::DeleteLoadBalancer => {
            amps = lb_amphorae(&cx.db, &target).await?.into_iter().map(|(id, _)| json!({"old": id})).collect();
            lb_id = Some(target);
        }
        JobKind::FailoverAmphora => {
            let row =
                sqlx::query("SELECT load_balancer_id, status, role, vrrp_priority, vrrp_id FROM amphora WHERE id = $1")
                    .bind(target.as_str())
                    .fetch_optional(&cx.db.pool)
                    .await?
                    .ok_or_else(|| anyhow!("amphora {target} not found"))?;
            let status: String = row.try_get(1)?;
            if status == amphora_status::DELETED {
                cx.payload.insert("deleted".into(), Value::Bool(true));
                amps.push(json!({"old": target}));
            } else {
                lb_id = row.try_get(0)?;
                if let Some(lb) = &lb_id
                    && let Some(lb) = load_lb(&cx.db, lb).await?
                {
                    topology = lb_topology(&lb, cx);
                }
                amps.push(json!({
                    "old": target,
                    "role": row.try_get::<Option<String>, _>(2)?,
                    "vrrp_priority": row.try_get::<Option<i64>, _>(3)?,
                    "vrrp_id": row.try_get::<Option<i64>, _>(4)?,
                }));
            }
        }
        JobKind::FailoverLoadBalancer => {
            let lb = load_lb(&cx.db, &target).await?.ok_or_else(|| anyhow!("load balancer {target} not found"))?;
            topology = lb_topology(&lb, cx);
            let current = lb_amphorae(&cx.db, &target).await?;
            let mut taken: Vec<String> = Vec::new();
            for (id, r) in &current {
                let row = sqlx::query("SELECT vrrp_priority, vrrp_id FROM amphora WHERE id = $1")
                    .bind(id.as_str())
                    .fetch_one(&cx.db.pool)
                    .await?;
                let r = r.clone().unwrap_or_else(|| role_slot(topology, 0)["role"].as_str().unwrap_or("").to_owned());
                taken.push(r.clone());
                amps.push(json!({
                    "old": id,
                    "role": r,
                    "vrrp_priority": row.try_get::<Option<i64>, _>(0)?,
                    "vrrp_id": row.try_get::<Option<i64>, _>(1)?,
                }));
            }
            // Amphorae the load balancer lost are rebuilt too.
            for i in 0..topology.amphora_count() {
                let slot = role_slot(topology, i);
                let r = slot["role"].as_str().unwrap_or_default().to_owned();
                if let Some(pos) = taken.iter().position(|t| *t == r) {
                    taken.remove(pos);
                } else if amps.len() < topology.amphora_count() {
                    amps.push(slot);
                }
            }
            lb_id = Some(target);
        }
        JobKind::DeleteAmphora | JobKind::ConfigureAmphora | JobKind::RotateCertificate => {
            amps.push(json!({"old": target}));
        }
    }
    cx.payload.insert("planned".into(), Value::Bool(true));
    cx.payload.insert("topology".into(), Value::String(topology.as_str().into()));
    cx.payload.insert("lb_id".into(), lb_id.map(Value::String).unwrap_or(Value::Null));
    cx.payload.insert("amps".into(), Value::Array(amps));
    Ok(())
}

fn build_amphora(steps: &mut Vec<Step>, i: usize) {
    steps.extend([
        Step::CreateAmphoraInDb(i),
        Step::ComputeCreate(i),
        Step::ComputeWait(i),
        Step::ConnectivityWait(i),
        Step::MarkAllocated(i),
    ]);
}

fn delete_amphora(steps: &mut Vec<Step>, a: Amp) {
    steps.extend([Step::ComputeDelete(a), Step::DeleteVrrpPort(a), Step::MarkAmphoraDeleted(a)]);
}

/// The steps of a planned job.
pub fn build(kind: JobKind, payload: &Map<String, Value>) -> Vec<Step> {
    let n = slots(payload).len();
    let active_standby = topology_of(payload) == Topology::ActiveStandby;
    let has_lb = payload.get("lb_id").is_some_and(|v| !v.is_null());
    let mut s = Vec::new();
    match kind {
        JobKind::CreateLoadBalancer => {
            s.push(Step::AllocateVip);
            for i in 0..n {
                build_amphora(&mut s, i);
                s.push(Step::AllocateVrrpPort(i));
            }
            for i in 0..n {
                s.push(Step::PlugVip(i));
            }
            s.extend([Step::PlugMemberNetworks, Step::UploadConfigAll]);
            if active_standby {
                s.push(Step::UpdateVrrpAll);
            }
            s.extend([Step::EnableHealthMonitoring, Step::MarkLbActive]);
        }
        // Ports of subnets the change left unused go after haproxy stopped
        // using them, before the change is settled.
        JobKind::UpdateLoadBalancer => {
            s.extend([Step::PlugMemberNetworks, Step::UploadConfigAll, Step::UnplugMemberNetworks, Step::MarkLbActive])
        }
        JobKind::DeleteLoadBalancer => {
            for i in 0..n {
                s.push(Step::MarkPendingDelete(Amp::Old(i)));
            }
            s.push(Step::DeallocateVip);
            for i in 0..n {
                delete_amphora(&mut s, Amp::Old(i));
            }
            s.push(Step::DeleteLbInDb);
        }
        JobKind::FailoverAmphora | JobKind::FailoverLoadBalancer => {
            if payload.get("deleted").and_then(Value::as_bool) == Some(true) {
                s.push(Step::RemoveHealth(Amp::Old(0)));
                return s;
            }
            if kind == JobKind::FailoverLoadBalancer {
                s.push(Step::AllocateVip);
            }
            for i in 0..n {
                let old = slot_has(payload, i, "old");
                if old {
                    s.push(Step::MarkPendingDelete(Amp::Old(i)));
                }
                // Upstream builds the replacement before deleting the failed
                // amphora; a spare (no load balancer) is only deleted.
                if has_lb {
                    build_amphora(&mut s, i);
                    s.extend([Step::AllocateVrrpPort(i), Step::PlugVip(i)]);
                }
                if old {
                    delete_amphora(&mut s, Amp::Old(i));
                }
            }
            if has_lb {
                s.extend([Step::PlugMemberNetworks, Step::UploadConfigAll]);
                if active_standby {
                    s.push(Step::UpdateVrrpAll);
                }
                s.extend([Step::EnableHealthMonitoring, Step::MarkLbActive]);
            }
        }
        JobKind::DeleteAmphora => {
            s.push(Step::MarkPendingDelete(Amp::Old(0)));
            delete_amphora(&mut s, Amp::Old(0));
        }
        JobKind::ConfigureAmphora => s.push(Step::UpdateAgentConfig(Amp::Old(0))),
        JobKind::RotateCertificate => s.push(Step::RotateCertificate(Amp::Old(0))),
    }
    s
}

// ---------------------------------------------------------------------------
// Payload helpers.

fn port_json(port: &Port) -> Value {
    json!({"id": port.id, "address": port.address, "network_id": port.network_id,
           "mac_address": port.mac_address, "subnet_id": port.subnet_id})
}

fn port_of_json(v: &Value) -> Option<Port> {
    let text = |k: &str| v.get(k).and_then(Value::as_str).map(str::to_owned);
    Some(Port {
        id: text("id")?,
        address: text("address")?,
        network_id: text("network_id").unwrap_or_default(),
        mac_address: text("mac_address").unwrap_or_default(),
        subnet_id: text("subnet_id").unwrap_or_default(),
    })
}

fn slot_str(cx: &Cx, i: usize, key: &str) -> Option<String> {
    slots(&cx.payload).get(i).and_then(|s| s.get(key)).and_then(Value::as_str).map(str::to_owned)
}

fn slot_i64(cx: &Cx, i: usize, key: &str) -> Option<i64> {
    slots(&cx.payload).get(i).and_then(|s| s.get(key)).and_then(Value::as_i64)
}

fn slot_bool(cx: &Cx, i: usize, key: &str) -> bool {
    slots(&cx.payload).get(i).and_then(|s| s.get(key)).and_then(Value::as_bool).unwrap_or(false)
}

fn set_slot(cx: &mut Cx, i: usize, key: &str, value: Value) -> anyhow::Result<()> {
    let slot = cx
        .payload
        .get_mut("amps")
        .and_then(Value::as_array_mut)
        .and_then(|a| a.get_mut(i))
        .and_then(Value::as_object_mut)
        .ok_or_else(|| anyhow!("payload has no amphora slot {i}"))?;
    slot.insert(key.into(), value);
    Ok(())
}

fn amp_id(cx: &Cx, a: Amp) -> Option<String> {
    match a {
        Amp::New(i) => slot_str(cx, i, "id"),
        Amp::Old(i) => slot_str(cx, i, "old"),
    }
}

fn need_amp(cx: &Cx, a: Amp) -> anyhow::Result<String> {
    amp_id(cx, a).ok_or_else(|| anyhow!("no amphora for {a:?} in the job's payload"))
}

fn lb_id(cx: &Cx) -> Option<String> {
    if let Some(id) = cx.payload.get("lb_id").and_then(Value::as_str) {
        return Some(id.to_owned());
    }
    // Not planned (yet): a load balancer job's target is its load balancer.
    match cx.kind {
        JobKind::CreateLoadBalancer
        | JobKind::UpdateLoadBalancer
        | JobKind::DeleteLoadBalancer
        | JobKind::FailoverLoadBalancer => Some(cx.target_id.clone()),
        JobKind::FailoverAmphora | JobKind::DeleteAmphora | JobKind::ConfigureAmphora | JobKind::RotateCertificate => {
            None
        }
    }
}

fn need_lb(cx: &Cx) -> anyhow::Result<String> {
    lb_id(cx).ok_or_else(|| anyhow!("the job has no load balancer"))
}

#[derive(Debug)]
struct AmpRow {
    target: AmphoraTarget,
    status: String,
    vrrp_port_id: Option<String>,
}

async fn load_amp(db: &Db, id: &str) -> anyhow::Result<Option<AmpRow>> {
    let row = sqlx::query(
        "SELECT id, load_balancer_id, compute_id, lb_network_ip, vrrp_ip, ha_ip, role, status, vrrp_port_id \
         FROM amphora WHERE id = $1",
    )
    .bind(id)
    .fetch_optional(&db.pool)
    .await?;
    let Some(r) = row else { return Ok(None) };
    Ok(Some(AmpRow {
        target: AmphoraTarget {
            id: r.try_get(0)?,
            load_balancer_id: r.try_get(1)?,
            compute_id: r.try_get(2)?,
            lb_network_ip: r.try_get(3)?,
            vrrp_ip: r.try_get(4)?,
            ha_ip: r.try_get(5)?,
            role: r.try_get(6)?,
        },
        status: r.try_get(7)?,
        vrrp_port_id: r.try_get(8)?,
    }))
}

async fn need_amp_row(cx: &Cx, a: Amp) -> anyhow::Result<AmpRow> {
    let id = need_amp(cx, a)?;
    load_amp(&cx.db, &id).await?.ok_or_else(|| anyhow!("amphora {id} not found"))
}

/// The ALLOCATED amphorae of the job's load balancer.
async fn allocated_amphorae(cx: &Cx) -> anyhow::Result<Vec<AmphoraTarget>> {
    let lb = need_lb(cx)?;
    let ids: Vec<String> = sqlx::query_scalar(
        "SELECT id FROM amphora WHERE load_balancer_id = $1 AND status = $2 ORDER BY created_at, id",
    )
    .bind(lb.as_str())
    .bind(amphora_status::ALLOCATED)
    .fetch_all(&cx.db.pool)
    .await?;
    let mut out = Vec::new();
    for id in ids {
        if let Some(a) = load_amp(&cx.db, &id).await? {
            out.push(a.target);
        }
    }
    Ok(out)
}

async fn lb_vip(cx: &Cx) -> anyhow::Result<Port> {
    let lb_id = need_lb(cx)?;
    let lb = load_lb(&cx.db, &lb_id).await?.ok_or_else(|| anyhow!("load balancer {lb_id} not found"))?;
    match (lb.vip_port_id, lb.vip_address) {
        (Some(id), Some(address)) => Ok(Port {
            id,
            address,
            network_id: lb.vip_network_id.unwrap_or_default(),
            mac_address: String::new(),
            subnet_id: lb.vip_subnet_id.unwrap_or_default(),
        }),
        _ => bail!("load balancer {lb_id} has no VIP port"),
    }
}

async fn set_amp_status(tx: &mut WriteTx<'_>, id: &str, status: &str) -> anyhow::Result<()> {
    sqlx::query("UPDATE amphora SET status = $1, updated_at = $2 WHERE id = $3")
        .bind(status)
        .bind(now_text())
        .bind(id)
        .execute(&mut ***tx)
        .await?;
    Ok(())
}

/// Logs a failure of a step upstream marks "passive": it must not stop the
/// flow (e.g. deleting a VM that is already gone).
fn passive(what: &str, id: &str, r: anyhow::Result<()>) {
    if let Err(e) = r {
        tracing::warn!("{what} {id} failed (ignored): {e:#}");
    }
}

/// The owner of the port an amphora has on a member subnet.
pub fn member_port_owner(amphora_id: &str, subnet_id: &str) -> String {
    format!("{}{subnet_id}", member_owner_prefix(amphora_id))
}

/// What the owners of an amphora's member ports start with.
pub fn member_owner_prefix(amphora_id: &str) -> String {
    format!("member:{amphora_id}:")
}

/// The subnets the members of a load balancer need a port on: those of
/// members that stay (not being deleted, nor in a pool being deleted),
/// other than the VIP's subnet (reached through the VRRP port).
async fn member_subnets(db: &Db, lb_id: &str) -> anyhow::Result<Vec<String>> {
    let vip_subnet = load_lb(db, lb_id).await?.and_then(|l| l.vip_subnet_id).unwrap_or_default();
    let subnets = sqlx::query_scalar(
        "SELECT DISTINCT m.subnet_id FROM member m JOIN pool p ON p.id = m.pool_id \
         WHERE p.load_balancer_id = $1 AND m.subnet_id IS NOT NULL AND m.subnet_id <> $2 \
         AND m.provisioning_status NOT IN ('PENDING_DELETE', 'DELETED') \
         AND p.provisioning_status NOT IN ('PENDING_DELETE', 'DELETED') ORDER BY m.subnet_id",
    )
    .bind(lb_id)
    .bind(vip_subnet)
    .fetch_all(&db.pool)
    .await?;
    Ok(subnets)
}

/// Upstream's CalculateAmphoraDelta, the ports to remove: of the member
/// ports an amphora owns (`(owner, port)`, as `owned_ports` lists them),
/// those whose subnet is not `wanted` any more. A port of another owner is
/// never one.
pub fn unused_member_ports(amphora_id: &str, wanted: &BTreeSet<String>, owned: &[(String, Port)]) -> Vec<Port> {
    let prefix = member_owner_prefix(amphora_id);
    owned
        .iter()
        .filter_map(|(owner, port)| {
            let subnet = owner.strip_prefix(&prefix)?;
            (!wanted.contains(subnet)).then(|| port.clone())
        })
        .collect()
}

// ---------------------------------------------------------------------------
// Execute.

pub async fn execute(step: &Step, cx: &mut Cx) -> StepResult {
    let db = cx.db.clone();
    match *step {
        Step::CreateAmphoraInDb(i) => {
            if slot_has(&cx.payload, i, "id") {
                return Ok(());
            }
            let id = crate::db::new_id();
            let now = time::OffsetDateTime::now_utc();
            // The noop certificate generator's validity: two years.
            let expiration = format_time(now + time::Duration::days(730));
            let mut tx = db.write().await?;
            sqlx::query(
                "INSERT INTO amphora (id, load_balancer_id, status, cert_expiration, cert_busy, created_at, updated_at) \
                 VALUES ($1, $2, $3, $4, $5, $6, $6)",
            )
            .bind(id.as_str())
            .bind(lb_id(cx))
            .bind(amphora_status::PENDING_CREATE)
            .bind(expiration)
            .bind(false)
            .bind(format_time(now))
            .execute(&mut **tx)
            .await?;
            set_slot(cx, i, "id", Value::String(id))?;
            cx.save(&mut tx).await?;
            tx.commit().await?;
        }
        Step::ComputeCreate(i) => {
            let id = need_amp(cx, Amp::New(i))?;
            // Upstream's GenerateServerPEMTask, then CertComputeCreate.
            let boot = cx.drivers.amphora.boot_files(&id, topology_of(&cx.payload)).await.context("boot files")?;
            let compute_id = cx.drivers.compute.create(&id, &boot).await.context("compute create")?;
            let mut tx = db.write().await?;
            sqlx::query(
                "UPDATE amphora SET compute_id = $1, status = $2, updated_at = $3, \
                 cert_expiration = COALESCE($4, cert_expiration) WHERE id = $5",
            )
            .bind(compute_id.as_str())
            .bind(amphora_status::BOOTING)
            .bind(now_text())
            .bind(boot.cert_expiration.map(format_time))
            .bind(id.as_str())
            .execute(&mut **tx)
            .await?;
            cx.save(&mut tx).await?;
            tx.commit().await?;
        }
        Step::ComputeWait(i) => {
            let amp = need_amp_row(cx, Amp::New(i)).await?;
            let compute_id =
                amp.target.compute_id.ok_or_else(|| anyhow!("amphora {} has no compute id", amp.target.id))?;
            let info = cx.drivers.compute.wait_active(&compute_id).await.context("compute wait")?;
            let mut tx = db.write().await?;
            sqlx::query(
                "UPDATE amphora SET lb_network_ip = $1, cached_zone = $2, image_id = $3, compute_flavor = $4, \
                 updated_at = $5 WHERE id = $6",
            )
            .bind(info.lb_network_ip)
            .bind(info.cached_zone)
            .bind(info.image_id)
            .bind(info.compute_flavor)
            .bind(now_text())
            .bind(amp.target.id.as_str())
            .execute(&mut **tx)
            .await?;
            cx.save(&mut tx).await?;
            tx.commit().await?;
        }
        Step::ConnectivityWait(i) => {
            let amp = need_amp_row(cx, Amp::New(i)).await?;
            cx.drivers.amphora.get_info(&amp.target).await.context("amphora connectivity")?;
        }
        Step::MarkAllocated(i) => {
            let amp = need_amp_row(cx, Amp::New(i)).await?;
            cx.drivers.amphora.finalize(&amp.target).await.context("amphora finalize")?;
            let mut tx = db.write().await?;
            sqlx::query(
                "UPDATE amphora SET status = $1, role = $2, vrrp_priority = $3, vrrp_id = $4, load_balancer_id = $5, \
                 updated_at = $6 WHERE id = $7",
            )
            .bind(amphora_status::ALLOCATED)
            .bind(slot_str(cx, i, "role"))
            .bind(slot_i64(cx, i, "vrrp_priority"))
            .bind(slot_i64(cx, i, "vrrp_id"))
            .bind(lb_id(cx))
            .bind(now_text())
            .bind(amp.target.id.as_str())
            .execute(&mut **tx)
            .await?;
            cx.save(&mut tx).await?;
            tx.commit().await?;
        }
        Step::AllocateVip => {
            let lb_id = need_lb(cx)?;
            let lb = load_lb(&db, &lb_id).await?.ok_or_else(|| anyhow!("load balancer {lb_id} not found"))?;
            let request = VipRequest {
                load_balancer_id: lb_id.clone(),
                address: lb.vip_address.clone(),
                port_id: lb.vip_port_id.clone(),
                subnet_id: lb.vip_subnet_id.clone(),
                network_id: lb.vip_network_id.clone(),
            };
            let port = cx.drivers.network.allocate_vip(&request).await.context("allocate VIP")?;
            let mut tx = db.write().await?;
            sqlx::query(
                "UPDATE load_balancer SET vip_address = COALESCE(vip_address, $1), vip_port_id = COALESCE(vip_port_id, $2), \
                 vip_network_id = COALESCE(vip_network_id, $3), updated_at = $4 WHERE id = $5",
            )
            .bind(port.address.as_str())
            .bind(port.id.as_str())
            .bind(port.network_id.as_str())
            .bind(now_text())
            .bind(lb_id.as_str())
            .execute(&mut **tx)
            .await?;
            cx.payload.insert(
                "vip".into(),
                json!({"port_id": port.id, "address": port.address, "network_id": port.network_id,
                       "allocated": lb.vip_port_id.is_none()}),
            );
            cx.save(&mut tx).await?;
            tx.commit().await?;
        }
        Step::AllocateVrrpPort(i) => {
            let id = need_amp(cx, Amp::New(i))?;
            let vip = lb_vip(cx).await?;
            let port = cx.drivers.network.allocate_vrrp_port(&id, &vip).await.context("allocate VRRP port")?;
            set_slot(cx, i, "vrrp_port", port_json(&port))?;
            let mut tx = db.write().await?;
            sqlx::query(
                "UPDATE amphora SET vrrp_ip = $1, vrrp_port_id = $2, ha_ip = $3, ha_port_id = $4, updated_at = $5 \
                 WHERE id = $6",
            )
            .bind(port.address.as_str())
            .bind(port.id.as_str())
            .bind(vip.address.as_str())
            .bind(vip.id.as_str())
            .bind(now_text())
            .bind(id.as_str())
            .execute(&mut **tx)
            .await?;
            cx.save(&mut tx).await?;
            tx.commit().await?;
        }
        Step::PlugVip(i) => {
            let amp = need_amp_row(cx, Amp::New(i)).await?;
            let vip = lb_vip(cx).await?;
            let vrrp = slots(&cx.payload)
                .get(i)
                .and_then(|s| s.get("vrrp_port"))
                .and_then(port_of_json)
                .ok_or_else(|| anyhow!("no VRRP port for amphora {} in the job's payload", amp.target.id))?;
            let compute_id =
                amp.target.compute_id.clone().ok_or_else(|| anyhow!("amphora {} has no compute id", amp.target.id))?;
            // Upstream's AttachPort (Nova interface attach), then
            // AmphoraPostVIPPlug.
            cx.drivers.compute.attach_port(&compute_id, &vrrp).await.context("attach VRRP port")?;
            let subnet_id = if vrrp.subnet_id.is_empty() { vip.subnet_id.clone() } else { vrrp.subnet_id.clone() };
            let subnet = cx.drivers.network.get_subnet(&subnet_id).await.context("VIP subnet")?;
            cx.drivers.amphora.plug_vip(&amp.target, &vip, &vrrp, &subnet).await.context("plug VIP")?;
        }
        Step::PlugMemberNetworks => {
            let lb = need_lb(cx)?;
            let subnets = member_subnets(&db, &lb).await?;
            let mut details = Vec::with_capacity(subnets.len());
            for subnet_id in &subnets {
                details.push(cx.drivers.network.get_subnet(subnet_id).await.context("member subnet")?);
            }
            for amp in allocated_amphorae(cx).await? {
                let Some(compute_id) = amp.compute_id.clone() else { continue };
                for (subnet_id, subnet) in subnets.iter().zip(&details) {
                    // One port per amphora and subnet, found again when the
                    // step repeats; it goes with the amphora.
                    let owner = member_port_owner(&amp.id, subnet_id);
                    let port = cx.drivers.network.allocate_port(subnet_id, &owner).await.context("member port")?;
                    cx.drivers.compute.attach_port(&compute_id, &port).await.context("attach member port")?;
                    cx.drivers.amphora.plug_network(&amp, &port, subnet).await.context("plug network")?;
                }
            }
        }
        Step::UnplugMemberNetworks => {
            let lb = need_lb(cx)?;
            let wanted: BTreeSet<String> = member_subnets(&db, &lb).await?.into_iter().collect();
            for amp in allocated_amphorae(cx).await? {
                let owned = cx
                    .drivers
                    .network
                    .owned_ports(&member_owner_prefix(&amp.id))
                    .await
                    .context("listing member ports")?;
                for port in unused_member_ports(&amp.id, &wanted, &owned) {
                    // The amphora's agent has no unplug call: the port
                    // leaves the instance (its interface vanishes inside
                    // it), then the port is released. A repeat finds the
                    // port gone, or detached and still listed.
                    if let Some(compute_id) = &amp.compute_id {
                        cx.drivers.compute.detach_port(compute_id, &port).await.context("detach member port")?;
                    }
                    cx.drivers.network.delete_port(&port.id).await.context("delete member port")?;
                    tracing::info!(amphora = %amp.id, port = %port.id, subnet = %port.subnet_id,
                        "member port of an unused subnet removed");
                }
            }
        }
        Step::UploadConfigAll => {
            let lb = need_lb(cx)?;
            let listeners: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM listener WHERE load_balancer_id = $1")
                .bind(lb.as_str())
                .fetch_one(&db.pool)
                .await?;
            // A new load balancer without listeners has nothing to render;
            // an update always pushes (it may have removed the last one).
            if listeners > 0 || cx.kind == JobKind::UpdateLoadBalancer {
                for amp in allocated_amphorae(cx).await? {
                    cx.drivers.amphora.upload_config(&amp, &lb).await.context("upload configuration")?;
                }
            }
        }
        Step::UpdateVrrpAll => {
            let lb = need_lb(cx)?;
            // Upstream's CreateVRRPGroupForLB: once per load balancer, kept
            // across failovers (the peers share its password).
            let has_group: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM vrrp_group WHERE load_balancer_id = $1")
                .bind(lb.as_str())
                .fetch_one(&db.pool)
                .await?;
            if has_group == 0 {
                let group = crate::render::model::VrrpGroup::new(&lb, cx.config.keepalived_vrrp.vrrp_advert_int);
                crate::render::model::save_vrrp_group(&db, &lb, &group).await?;
            }
            let subnet_id = load_lb(&db, &lb).await?.and_then(|l| l.vip_subnet_id).unwrap_or_default();
            let vip_subnet = cx.drivers.network.get_subnet(&subnet_id).await.context("VIP subnet")?;
            let mut interfaces = Vec::new();
            for amp in allocated_amphorae(cx).await? {
                let iface = cx.drivers.amphora.update_vrrp(&amp, &lb, &vip_subnet).await.context("update VRRP")?;
                interfaces.push((amp.id, iface));
            }
            let mut tx = db.write().await?;
            for (id, iface) in interfaces {
                sqlx::query("UPDATE amphora SET vrrp_interface = $1, updated_at = $2 WHERE id = $3")
                    .bind(iface)
                    .bind(now_text())
                    .bind(id)
                    .execute(&mut **tx)
                    .await?;
            }
            cx.save(&mut tx).await?;
            tx.commit().await?;
        }
        Step::EnableHealthMonitoring => {
            let amps = allocated_amphorae(cx).await?;
            let mut tx = db.write().await?;
            for amp in amps {
                sqlx::query(
                    "INSERT INTO amphora_health (amphora_id, last_update, busy) VALUES ($1, $2, $3) \
                     ON CONFLICT (amphora_id) DO UPDATE SET last_update = excluded.last_update, busy = excluded.busy",
                )
                .bind(amp.id)
                .bind(now_millis())
                .bind(false)
                .execute(&mut **tx)
                .await?;
            }
            cx.save(&mut tx).await?;
            tx.commit().await?;
        }
        Step::MarkLbActive => {
            let lb = need_lb(cx)?;
            let mut tx = db.write().await?;
            settle_children(&mut tx, &lb).await?;
            // Without heartbeats (noop drivers) nothing else would bring a
            // new load balancer ONLINE; an update keeps what health reports.
            let sql = if cx.kind == JobKind::UpdateLoadBalancer {
                "UPDATE load_balancer SET provisioning_status = $1, updated_at = $2 WHERE id = $3"
            } else {
                "UPDATE load_balancer SET provisioning_status = $1, updated_at = $2, operating_status = 'ONLINE' WHERE id = $3"
            };
            sqlx::query(sql).bind(provisioning::ACTIVE).bind(now_text()).bind(lb.as_str()).execute(&mut **tx).await?;
            cx.save(&mut tx).await?;
            tx.commit().await?;
        }
        Step::MarkPendingDelete(a) => {
            let id = need_amp(cx, a)?;
            let mut tx = db.write().await?;
            sqlx::query("UPDATE amphora SET status = $1, updated_at = $2 WHERE id = $3 AND status <> $4")
                .bind(amphora_status::PENDING_DELETE)
                .bind(now_text())
                .bind(id.as_str())
                .bind(amphora_status::DELETED)
                .execute(&mut **tx)
                .await?;
            sqlx::query("UPDATE amphora_health SET busy = $1 WHERE amphora_id = $2")
                .bind(true)
                .bind(id.as_str())
                .execute(&mut **tx)
                .await?;
            cx.save(&mut tx).await?;
            tx.commit().await?;
        }
        Step::ComputeDelete(a) => {
            let amp = need_amp_row(cx, a).await?;
            if let Some(compute_id) = &amp.target.compute_id {
                passive("compute delete", compute_id, cx.drivers.compute.delete(compute_id).await);
            }
        }
        Step::DeleteVrrpPort(a) => {
            let amp = need_amp_row(cx, a).await?;
            if let Some(port) = &amp.vrrp_port_id {
                passive("VRRP port delete", port, cx.drivers.network.delete_port(port).await);
            }
        }
        Step::MarkAmphoraDeleted(a) => {
            let id = need_amp(cx, a)?;
            cx.drivers.amphora.forget(&id);
            let mut tx = db.write().await?;
            set_amp_status(&mut tx, &id, amphora_status::DELETED).await?;
            sqlx::query("DELETE FROM amphora_health WHERE amphora_id = $1")
                .bind(id.as_str())
                .execute(&mut **tx)
                .await?;
            if let Amp::Old(i) = a {
                // The failed amphora is gone: from here a failover cannot go
                // back, so reverts keep the replacement.
                set_slot(cx, i, "committed", Value::Bool(true))?;
            }
            cx.save(&mut tx).await?;
            tx.commit().await?;
        }
        Step::RemoveHealth(a) => {
            let id = need_amp(cx, a)?;
            let mut tx = db.write().await?;
            sqlx::query("DELETE FROM amphora_health WHERE amphora_id = $1")
                .bind(id.as_str())
                .execute(&mut **tx)
                .await?;
            cx.save(&mut tx).await?;
            tx.commit().await?;
        }
        Step::DeallocateVip => {
            let lb = need_lb(cx)?;
            if let Some(row) = load_lb(&db, &lb).await?
                && let Some(port) = row.vip_port_id
            {
                passive("VIP deallocate", &port, cx.drivers.network.deallocate_vip(&port).await);
            }
        }
        Step::DeleteLbInDb => {
            let lb = need_lb(cx)?;
            let mut tx = db.write().await?;
            delete_children(&mut tx, &lb).await?;
            sqlx::query(
                "UPDATE load_balancer SET provisioning_status = $1, operating_status = $2, updated_at = $3 WHERE id = $4",
            )
            .bind(provisioning::DELETED)
            .bind(operating::OFFLINE)
            .bind(now_text())
            .bind(lb.as_str())
            .execute(&mut **tx)
            .await?;
            cx.save(&mut tx).await?;
            tx.commit().await?;
        }
        Step::UpdateAgentConfig(a) => {
            let amp = need_amp_row(cx, a).await?;
            cx.drivers.amphora.update_agent_config(&amp.target).await.context("update agent configuration")?;
        }
        Step::RotateCertificate(a) => {
            let amp = need_amp_row(cx, a).await?;
            let expiration = if amp.status == amphora_status::ALLOCATED {
                Some(cx.drivers.amphora.rotate_certificate(&amp.target).await.context("rotate certificate")?)
            } else {
                // Deleted or failed over since the job was queued.
                None
            };
            let mut tx = db.write().await?;
            sqlx::query(
                "UPDATE amphora SET cert_expiration = COALESCE($1, cert_expiration), cert_busy = $2, updated_at = $3 \
                 WHERE id = $4",
            )
            .bind(expiration.map(format_time))
            .bind(false)
            .bind(now_text())
            .bind(amp.target.id.as_str())
            .execute(&mut **tx)
            .await?;
            cx.save(&mut tx).await?;
            tx.commit().await?;
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------
// Revert: each checks what exists, so it may run for a step that never ran
// or ran half-way, and more than once.

pub async fn revert(step: &Step, cx: &mut Cx) -> StepResult {
    let db = cx.db.clone();
    match *step {
        Step::CreateAmphoraInDb(i) => {
            let Some(id) = amp_id(cx, Amp::New(i)) else { return Ok(()) };
            let committed = slot_bool(cx, i, "committed");
            let mut tx = db.write().await?;
            let status: Option<String> = sqlx::query_scalar("SELECT status FROM amphora WHERE id = $1")
                .bind(id.as_str())
                .fetch_optional(&mut **tx)
                .await?;
            // Upstream deletes the row; we keep it (soft-deleted) for the
            // record. An amphora whose VM could not be deleted stays ERROR,
            // and a replacement whose predecessor is already deleted is kept
            // (ERROR) rather than leaving the load balancer without one.
            let new_status = if committed { amphora_status::ERROR } else { amphora_status::DELETED };
            if status.as_deref().is_some_and(|s| s != amphora_status::ERROR && s != amphora_status::DELETED) {
                set_amp_status(&mut tx, &id, new_status).await?;
            }
            if !committed {
                sqlx::query("DELETE FROM amphora_health WHERE amphora_id = $1")
                    .bind(id.as_str())
                    .execute(&mut **tx)
                    .await?;
            }
            cx.save(&mut tx).await?;
            tx.commit().await?;
        }
        Step::ComputeCreate(i) => {
            if slot_bool(cx, i, "committed") {
                return Ok(());
            }
            let Some(id) = amp_id(cx, Amp::New(i)) else { return Ok(()) };
            let Some(amp) = load_amp(&db, &id).await? else { return Ok(()) };
            if let Some(compute_id) = amp.target.compute_id
                && amp.status != amphora_status::DELETED
                && let Err(e) = cx.drivers.compute.delete(&compute_id).await
            {
                let mut tx = db.write().await?;
                set_amp_status(&mut tx, &id, amphora_status::ERROR).await?;
                cx.save(&mut tx).await?;
                tx.commit().await?;
                return Err(e.context(format!("deleting the VM {compute_id} of amphora {id}")));
            }
        }
        Step::AllocateVrrpPort(i) => {
            if slot_bool(cx, i, "committed") {
                return Ok(());
            }
            let Some(id) = amp_id(cx, Amp::New(i)) else { return Ok(()) };
            if let Some(amp) = load_amp(&db, &id).await?
                && let Some(port) = amp.vrrp_port_id
            {
                cx.drivers.network.delete_port(&port).await.context("deleting a VRRP port")?;
            }
        }
        Step::AllocateVip => {
            let allocated = cx.payload.get("vip").and_then(|v| v.get("allocated")).and_then(Value::as_bool);
            if allocated == Some(true)
                && let Some(port) = cx.payload.get("vip").and_then(|v| v.get("port_id")).and_then(Value::as_str)
            {
                let port = port.to_owned();
                cx.drivers.network.deallocate_vip(&port).await.context("deallocating the VIP")?;
            }
        }
        _ => {}
    }
    Ok(())
}

// ---------------------------------------------------------------------------
// Failure statuses (upstream's *ToErrorOnRevertTask), in the transaction
// that marks the job FAILED.

pub async fn on_failure(cx: &Cx, tx: &mut WriteTx<'_>) -> anyhow::Result<()> {
    let now = now_text();
    let lb = lb_id(cx);
    let lb_status = match cx.kind {
        JobKind::CreateLoadBalancer | JobKind::DeleteLoadBalancer => Some(provisioning::ERROR),
        JobKind::FailoverAmphora | JobKind::FailoverLoadBalancer => Some(provisioning::ERROR),
        // Upstream's ListenerToErrorOnRevertTask and friends: the object
        // that failed goes ERROR, the load balancer back to ACTIVE.
        JobKind::UpdateLoadBalancer => Some(provisioning::ACTIVE),
        JobKind::DeleteAmphora | JobKind::ConfigureAmphora | JobKind::RotateCertificate => None,
    };
    if cx.kind == JobKind::RotateCertificate {
        // The next housekeeping pass tries again.
        sqlx::query("UPDATE amphora SET cert_busy = $1, updated_at = $2 WHERE id = $3")
            .bind(false)
            .bind(now.as_str())
            .bind(cx.target_id.as_str())
            .execute(&mut ***tx)
            .await?;
    }
    if matches!(cx.kind, JobKind::CreateLoadBalancer | JobKind::UpdateLoadBalancer)
        && let Some(lb) = &lb
    {
        children_to_error(tx, lb).await?;
    }
    if let Some(status) = lb_status
        && let Some(lb) = &lb
    {
        sqlx::query(
            "UPDATE load_balancer SET provisioning_status = $1, updated_at = $2 WHERE id = $3 \
             AND provisioning_status <> $4",
        )
        .bind(status)
        .bind(now.as_str())
        .bind(lb.as_str())
        .bind(provisioning::DELETED)
        .execute(&mut ***tx)
        .await?;
    }
    // The amphorae the flow failed to replace or delete go ERROR.
    if matches!(cx.kind, JobKind::FailoverAmphora | JobKind::FailoverLoadBalancer | JobKind::DeleteAmphora)
        || (cx.kind == JobKind::DeleteLoadBalancer)
    {
        for i in 0..slots(&cx.payload).len() {
            if let Some(old) = amp_id(cx, Amp::Old(i)) {
                sqlx::query("UPDATE amphora SET status = $1, updated_at = $2 WHERE id = $3 AND status <> $4")
                    .bind(amphora_status::ERROR)
                    .bind(now_text())
                    .bind(old)
                    .bind(amphora_status::DELETED)
                    .execute(&mut ***tx)
                    .await?;
            }
        }
        if cx.payload.get("planned").is_none() && cx.kind != JobKind::ConfigureAmphora {
            // Planning failed: the target itself.
            sqlx::query("UPDATE amphora SET status = $1, updated_at = $2 WHERE id = $3 AND status <> $4")
                .bind(amphora_status::ERROR)
                .bind(now_text())
                .bind(cx.target_id.as_str())
                .bind(amphora_status::DELETED)
                .execute(&mut ***tx)
                .await?;
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------
// Children of a load balancer.

const PENDING: &str = "('PENDING_CREATE', 'PENDING_UPDATE')";

/// Listeners, pools, members and health monitors of `lb` that a change left
/// PENDING: created or updated ones go ACTIVE with their operating status,
/// PENDING_DELETE ones are deleted with what depends on them.
pub async fn settle_children(tx: &mut WriteTx<'_>, lb: &str) -> anyhow::Result<()> {
    let now = now_text();
    let pools_of_lb = "SELECT id FROM pool WHERE load_balancer_id = $1";
    let deleted_pools = "SELECT id FROM pool WHERE load_balancer_id = $1 AND provisioning_status = 'PENDING_DELETE'";
    let statements = [
        // Deletions first, dependents before what they depend on.
        format!(
            "DELETE FROM member WHERE pool_id IN ({pools_of_lb}) AND (provisioning_status = 'PENDING_DELETE' \
             OR pool_id IN ({deleted_pools}))"
        ),
        format!(
            "DELETE FROM health_monitor WHERE pool_id IN ({pools_of_lb}) AND (provisioning_status = 'PENDING_DELETE' \
             OR pool_id IN ({deleted_pools}))"
        ),
        format!(
            "UPDATE listener SET default_pool_id = NULL WHERE load_balancer_id = $1 AND default_pool_id IN ({deleted_pools})"
        ),
        "DELETE FROM pool WHERE load_balancer_id = $1 AND provisioning_status = 'PENDING_DELETE'".to_owned(),
        "DELETE FROM listener_statistics WHERE listener_id IN (SELECT id FROM listener WHERE load_balancer_id = $1 \
         AND provisioning_status = 'PENDING_DELETE')"
            .to_owned(),
        "DELETE FROM listener WHERE load_balancer_id = $1 AND provisioning_status = 'PENDING_DELETE'".to_owned(),
        // Then what was created or changed.
        format!(
            "UPDATE listener SET provisioning_status = 'ACTIVE', \
             operating_status = CASE WHEN enabled THEN 'ONLINE' ELSE 'OFFLINE' END, updated_at = $2 \
             WHERE load_balancer_id = $1 AND provisioning_status IN {PENDING}"
        ),
        format!(
            "UPDATE pool SET provisioning_status = 'ACTIVE', \
             operating_status = CASE WHEN enabled THEN 'ONLINE' ELSE 'OFFLINE' END, updated_at = $2 \
             WHERE load_balancer_id = $1 AND provisioning_status IN {PENDING}"
        ),
        format!(
            "UPDATE health_monitor SET provisioning_status = 'ACTIVE', \
             operating_status = CASE WHEN enabled THEN 'ONLINE' ELSE 'OFFLINE' END, updated_at = $2 \
             WHERE pool_id IN ({pools_of_lb}) AND provisioning_status IN {PENDING}"
        ),
        format!(
            "UPDATE member SET provisioning_status = 'ACTIVE', operating_status = CASE \
             WHEN NOT enabled THEN 'OFFLINE' \
             WHEN EXISTS (SELECT 1 FROM health_monitor h WHERE h.pool_id = member.pool_id) THEN 'ONLINE' \
             ELSE 'NO_MONITOR' END, updated_at = $2 \
             WHERE pool_id IN ({pools_of_lb}) AND provisioning_status IN {PENDING}"
        ),
    ];
    for sql in &statements {
        let q = sqlx::query(sql).bind(lb);
        let q = if sql.contains("$2") { q.bind(now.as_str()) } else { q };
        q.execute(&mut ***tx).await.with_context(|| format!("settling children: {sql}"))?;
    }
    Ok(())
}

/// A change that failed: its PENDING children go ERROR.
async fn children_to_error(tx: &mut WriteTx<'_>, lb: &str) -> anyhow::Result<()> {
    let now = now_text();
    let pools_of_lb = "SELECT id FROM pool WHERE load_balancer_id = $1";
    let statements = [
        "UPDATE listener SET provisioning_status = 'ERROR', updated_at = $2 WHERE load_balancer_id = $1 \
         AND provisioning_status LIKE 'PENDING_%'"
            .to_owned(),
        "UPDATE pool SET provisioning_status = 'ERROR', updated_at = $2 WHERE load_balancer_id = $1 \
         AND provisioning_status LIKE 'PENDING_%'"
            .to_owned(),
        format!(
            "UPDATE member SET provisioning_status = 'ERROR', updated_at = $2 WHERE pool_id IN ({pools_of_lb}) \
             AND provisioning_status LIKE 'PENDING_%'"
        ),
        format!(
            "UPDATE health_monitor SET provisioning_status = 'ERROR', updated_at = $2 WHERE pool_id IN ({pools_of_lb}) \
             AND provisioning_status LIKE 'PENDING_%'"
        ),
    ];
    for sql in &statements {
        sqlx::query(sql).bind(lb).bind(now.as_str()).execute(&mut ***tx).await?;
    }
    Ok(())
}

/// Deletes every child row of a load balancer (its delete flow; the API
/// only accepts a delete with children when `cascade` is asked).
async fn delete_children(tx: &mut WriteTx<'_>, lb: &str) -> anyhow::Result<()> {
    let pools_of_lb = "SELECT id FROM pool WHERE load_balancer_id = $1";
    let statements = [
        format!("DELETE FROM member WHERE pool_id IN ({pools_of_lb})"),
        format!("DELETE FROM health_monitor WHERE pool_id IN ({pools_of_lb})"),
        "DELETE FROM listener_statistics WHERE listener_id IN (SELECT id FROM listener WHERE load_balancer_id = $1)"
            .to_owned(),
        "DELETE FROM listener WHERE load_balancer_id = $1".to_owned(),
        "DELETE FROM pool WHERE load_balancer_id = $1".to_owned(),
    ];
    for sql in &statements {
        sqlx::query(sql).bind(lb).execute(&mut ***tx).await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn planned(topology: Topology, lb: Option<&str>, amps: Value) -> Map<String, Value> {
        let v = json!({"planned": true, "topology": topology.as_str(), "lb_id": lb, "amps": amps});
        v.as_object().cloned().unwrap_or_default()
    }

    #[test]
    fn create_allocates_the_vip_first_and_marks_active_last() {
        let p = planned(Topology::ActiveStandby, Some("lb"), json!([{}, {}]));
        let s = build(JobKind::CreateLoadBalancer, &p);
        assert_eq!(s.first(), Some(&Step::AllocateVip));
        assert_eq!(&s[s.len() - 3..], &[Step::UpdateVrrpAll, Step::EnableHealthMonitoring, Step::MarkLbActive]);
        assert_eq!(s.iter().filter(|x| matches!(x, Step::ComputeCreate(_))).count(), 2);
        let single = build(JobKind::CreateLoadBalancer, &planned(Topology::Single, Some("lb"), json!([{}])));
        assert!(!single.contains(&Step::UpdateVrrpAll));
    }

    #[test]
    fn failover_builds_the_replacement_before_deleting_the_failed_amphora() {
        let p = planned(Topology::Single, Some("lb"), json!([{"old": "a"}]));
        let s = build(JobKind::FailoverAmphora, &p);
        let pos = |step: Step| s.iter().position(|x| *x == step).unwrap_or(usize::MAX);
        assert_eq!(s[0], Step::MarkPendingDelete(Amp::Old(0)));
        assert!(pos(Step::MarkAllocated(0)) < pos(Step::ComputeDelete(Amp::Old(0))));
        assert!(pos(Step::PlugVip(0)) < pos(Step::MarkAmphoraDeleted(Amp::Old(0))));
        assert_eq!(s.last(), Some(&Step::MarkLbActive));
    }

    #[test]
    fn a_spare_is_only_deleted_and_a_deleted_amphora_only_loses_its_health() {
        let spare = build(JobKind::FailoverAmphora, &planned(Topology::Single, None, json!([{"old": "a"}])));
        assert!(!spare.iter().any(|x| matches!(x, Step::CreateAmphoraInDb(_))));
        assert_eq!(spare.last(), Some(&Step::MarkAmphoraDeleted(Amp::Old(0))));
        let mut p = planned(Topology::Single, None, json!([{"old": "a"}]));
        p.insert("deleted".into(), Value::Bool(true));
        assert_eq!(build(JobKind::FailoverAmphora, &p), vec![Step::RemoveHealth(Amp::Old(0))]);
    }

    fn port(id: &str, subnet: &str) -> Port {
        Port {
            id: id.into(),
            address: "198.51.100.7".into(),
            network_id: "net".into(),
            mac_address: "fa:16:3e:00:00:01".into(),
            subnet_id: subnet.into(),
        }
    }

    #[test]
    fn member_ports_of_subnets_no_member_uses_are_the_ones_removed() {
        let owned = vec![
            ("member:amp-1:subnet-a".to_owned(), port("p-a", "subnet-a")),
            ("member:amp-1:subnet-b".to_owned(), port("p-b", "subnet-b")),
            ("member:amp-1:subnet-c".to_owned(), port("p-c", "subnet-c")),
        ];
        let wanted: BTreeSet<String> = ["subnet-b".to_owned()].into();
        let ids: Vec<String> = unused_member_ports("amp-1", &wanted, &owned).into_iter().map(|p| p.id).collect();
        assert_eq!(ids, ["p-a", "p-c"]);
        // Every subnet still used: nothing to remove; none used: all go.
        let all: BTreeSet<String> = ["subnet-a", "subnet-b", "subnet-c"].map(str::to_owned).into();
        assert!(unused_member_ports("amp-1", &all, &owned).is_empty());
        assert_eq!(unused_member_ports("amp-1", &BTreeSet::new(), &owned).len(), 3);
    }

    #[test]
    fn ports_of_other_amphorae_and_other_owners_are_never_removed() {
        let owned = vec![
            // Another amphora whose id starts with this one's.
            ("member:amp-10:subnet-a".to_owned(), port("p-other", "subnet-a")),
            ("vrrp:amp-1".to_owned(), port("p-vrrp", "subnet-v")),
            ("mgmt:amp-1".to_owned(), port("p-mgmt", "subnet-m")),
            ("member:amp-1:subnet-a".to_owned(), port("p-mine", "subnet-a")),
        ];
        let ids: Vec<String> =
            unused_member_ports("amp-1", &BTreeSet::new(), &owned).into_iter().map(|p| p.id).collect();
        assert_eq!(ids, ["p-mine"]);
        assert_eq!(member_port_owner("amp-1", "subnet-a"), "member:amp-1:subnet-a");
    }

    #[test]
    fn an_update_unplugs_unused_member_networks_after_the_new_configuration_and_before_settling() {
        let s = build(JobKind::UpdateLoadBalancer, &planned(Topology::Single, Some("lb"), json!([])));
        assert_eq!(
            s,
            [Step::PlugMemberNetworks, Step::UploadConfigAll, Step::UnplugMemberNetworks, Step::MarkLbActive]
        );
    }

    #[test]
    fn roles_and_priorities_are_upstreams() {
        assert_eq!(role_slot(Topology::Single, 0)["role"], role::STANDALONE);
        assert_eq!(role_slot(Topology::ActiveStandby, 0)["vrrp_priority"], 100);
        assert_eq!(role_slot(Topology::ActiveStandby, 1)["role"], role::BACKUP);
        assert_eq!(role_slot(Topology::ActiveStandby, 1)["vrrp_priority"], 90);
    }
}
