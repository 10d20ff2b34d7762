//! What a rendering needs of a load balancer, read from the database in one
//! go: plain data, so the renderers are pure functions and tests build these
//! by hand.
//!
//! Field names follow upstream's data models where ours differ from the API
//! (a health monitor's `max_retries` is upstream's `rise_threshold`,
//! `max_retries_down` its `fall_threshold`).

use std::collections::BTreeMap;

use anyhow::Context;
use serde::{Deserialize, Serialize};
use sqlx::Row;
use sqlx::any::AnyRow;

use crate::config::Topology;
use crate::db::{Db, opt_text};

/// Provisioning states of objects on their way out: not rendered.
pub const GONE: [&str; 2] = ["PENDING_DELETE", "DELETED"];

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LoadBalancer {
    pub id: String,
    pub project_id: String,
    pub enabled: bool,
    pub provisioning_status: String,
    pub topology: Topology,
    pub vip: Vip,
    /// The VIP's subnet as the network driver knows it (keepalived routes
    /// need it). Not in the database: `load` leaves it `None`, the caller
    /// fills it from its network driver.
    pub vip_subnet: Option<Subnet>,
    /// keepalived's VRRP settings (ACTIVE_STANDBY; `vrrp_group` table).
    pub vrrp_group: Option<VrrpGroup>,
    pub listeners: Vec<Listener>,
    /// Every pool of the load balancer; listeners refer to them by id.
    pub pools: Vec<Pool>,
    /// The load balancer's amphorae that are not DELETED.
    pub amphorae: Vec<AmphoraView>,
}

impl LoadBalancer {
    pub fn pool(&self, id: &str) -> Option<&Pool> {
        self.pools.iter().find(|p| p.id == id)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Vip {
    pub address: String,
    pub subnet_id: Option<String>,
    pub network_id: Option<String>,
    pub port_id: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Subnet {
    /// The subnet's CIDR, e.g. `10.0.0.0/24`.
    pub cidr: String,
    pub gateway_ip: Option<String>,
    pub host_routes: Vec<HostRoute>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostRoute {
    pub destination: String,
    pub nexthop: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VrrpGroup {
    pub name: String,
    pub auth_type: String,
    pub auth_pass: String,
    pub advert_int: u64,
}

impl VrrpGroup {
    /// A new group as upstream's worker makes one: named after the load
    /// balancer without dashes, PASS authentication with 7 random hex
    /// characters.
    pub fn new(lb_id: &str, advert_int: u64) -> VrrpGroup {
        let pass = uuid::Uuid::new_v4().simple().to_string();
        VrrpGroup {
            name: lb_id.replace('-', ""),
            auth_type: "PASS".into(),
            auth_pass: pass[..7].to_owned(),
            advert_int,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Listener {
    pub id: String,
    pub protocol: String,
    pub protocol_port: u16,
    /// -1 (or 0) means the configured default.
    pub connection_limit: i64,
    pub enabled: bool,
    pub provisioning_status: String,
    pub default_pool_id: Option<String>,
    pub timeout_client_data: Option<i64>,
    pub timeout_member_connect: Option<i64>,
    pub timeout_member_data: Option<i64>,
    pub timeout_tcp_inspect: Option<i64>,
    pub insert_headers: BTreeMap<String, String>,
    pub default_tls_container_ref: Option<String>,
    pub tls_ciphers: Option<String>,
    pub tls_versions: Option<Vec<String>>,
    pub alpn_protocols: Option<Vec<String>>,
    pub hsts_max_age: Option<i64>,
    pub hsts_include_subdomains: bool,
    pub hsts_preload: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionPersistence {
    /// SOURCE_IP, HTTP_COOKIE or APP_COOKIE.
    #[serde(rename = "type")]
    pub kind: String,
    pub cookie_name: Option<String>,
    /// UDP and SCTP pools (LVS): seconds a client sticks to its member.
    #[serde(default)]
    pub persistence_timeout: Option<i64>,
    /// UDP and SCTP pools (LVS): the netmask grouping clients.
    #[serde(default)]
    pub persistence_granularity: Option<String>,
}

impl SessionPersistence {
    pub fn new(kind: &str) -> SessionPersistence {
        SessionPersistence {
            kind: kind.into(),
            cookie_name: None,
            persistence_timeout: None,
            persistence_granularity: None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pool {
    pub id: String,
    pub protocol: String,
    pub lb_algorithm: String,
    pub session_persistence: Option<SessionPersistence>,
    pub enabled: bool,
    pub provisioning_status: String,
    pub operating_status: String,
    pub tls_enabled: bool,
    pub tls_ciphers: Option<String>,
    pub tls_versions: Option<Vec<String>>,
    pub alpn_protocols: Option<Vec<String>>,
    pub members: Vec<Member>,
    pub health_monitor: Option<HealthMonitor>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Member {
    pub id: String,
    pub address: String,
    pub protocol_port: u16,
    pub weight: i64,
    pub backup: bool,
    pub enabled: bool,
    pub subnet_id: Option<String>,
    pub monitor_address: Option<String>,
    pub monitor_port: Option<u16>,
    pub provisioning_status: String,
    pub operating_status: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HealthMonitor {
    pub id: String,
    /// HTTP, HTTPS, TCP, PING, TLS-HELLO, UDP-CONNECT, SCTP.
    #[serde(rename = "type")]
    pub kind: String,
    pub delay: i64,
    pub timeout: i64,
    /// The API's `max_retries`.
    pub rise_threshold: i64,
    /// The API's `max_retries_down`.
    pub fall_threshold: i64,
    pub http_method: Option<String>,
    pub url_path: Option<String>,
    pub expected_codes: Option<String>,
    /// "1.0" or "1.1".
    pub http_version: Option<String>,
    pub domain_name: Option<String>,
    pub enabled: bool,
    pub provisioning_status: String,
}

/// An amphora as the renderers see it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AmphoraView {
    pub id: String,
    /// MASTER, BACKUP or STANDALONE.
    pub role: Option<String>,
    pub status: String,
    pub lb_network_ip: Option<String>,
    pub vrrp_ip: Option<String>,
    pub ha_ip: Option<String>,
    pub vrrp_port_id: Option<String>,
    pub ha_port_id: Option<String>,
    pub vrrp_interface: Option<String>,
    pub vrrp_id: Option<i64>,
    pub vrrp_priority: Option<i64>,
    /// The haproxy version the amphora reports (`GET /info`), e.g. "2.6.12";
    /// `None` renders for a current haproxy (2.2 or later). Not in the
    /// database.
    #[serde(default)]
    pub haproxy_version: Option<String>,
}

fn boolean(row: &AnyRow, column: &str) -> Result<bool, sqlx::Error> {
    Ok(row.try_get::<i64, _>(column)? != 0)
}

fn json_or<T: serde::de::DeserializeOwned>(
    row: &AnyRow,
    column: &str,
    what: &str,
    id: &str,
) -> anyhow::Result<Option<T>> {
    match opt_text(row, column)? {
        None => Ok(None),
        Some(text) if text == "null" => Ok(None),
        Some(text) => {
            serde_json::from_str(&text).map(Some).with_context(|| format!("{what} {id}: bad {column} {text:?}"))
        }
    }
}

fn port(value: i64, what: &str, id: &str) -> anyhow::Result<u16> {
    u16::try_from(value).with_context(|| format!("{what} {id}: port {value} out of range"))
}

fn bools(columns: &[&str]) -> String {
    columns.iter().map(|c| format!(", CAST(CAST({c} AS INTEGER) AS BIGINT) AS {c}")).collect()
}

/// Reads a load balancer and everything under it that a rendering needs.
/// `None` when there is no such load balancer or it is DELETED. Listeners,
/// pools, members and health monitors being deleted (PENDING_DELETE) or
/// DELETED are left out; disabled ones stay (the renderers render them
/// disabled, or leave them out, as upstream's templates do).
pub async fn load(db: &Db, lb_id: &str) -> anyhow::Result<Option<LoadBalancer>> {
    let mut conn = db.pool.acquire().await?;
    let sql = format!(
        "SELECT id, project_id, provisioning_status, topology, vip_address, vip_subnet_id, vip_network_id, \
         vip_port_id{} FROM load_balancer WHERE id = $1",
        bools(&["enabled"])
    );
    let Some(row) = sqlx::query(&sql).bind(lb_id).fetch_optional(&mut *conn).await? else { return Ok(None) };
    let provisioning_status: String = row.try_get("provisioning_status")?;
    if provisioning_status == "DELETED" {
        return Ok(None);
    }
    let topology_text = opt_text(&row, "topology")?.unwrap_or_else(|| "SINGLE".into());
    let topology = Topology::parse(&topology_text)
        .with_context(|| format!("load balancer {lb_id}: unknown topology {topology_text:?}"))?;
    let vip = Vip {
        address: opt_text(&row, "vip_address")?.with_context(|| format!("load balancer {lb_id} has no VIP address"))?,
        subnet_id: opt_text(&row, "vip_subnet_id")?,
        network_id: opt_text(&row, "vip_network_id")?,
        port_id: opt_text(&row, "vip_port_id")?,
    };
    let enabled = boolean(&row, "enabled")?;
    let project_id: String = row.try_get("project_id")?;

    let vrrp_group = sqlx::query(
        "SELECT vrrp_group_name, vrrp_auth_type, vrrp_auth_pass, advert_int FROM vrrp_group WHERE load_balancer_id = $1",
    )
    .bind(lb_id)
    .fetch_optional(&mut *conn)
    .await?
    .map(|r| -> anyhow::Result<VrrpGroup> {
        Ok(VrrpGroup {
            name: r.try_get("vrrp_group_name")?,
            auth_type: r.try_get("vrrp_auth_type")?,
            auth_pass: r.try_get("vrrp_auth_pass")?,
            advert_int: u64::try_from(r.try_get::<i64, _>("advert_int")?)
                .with_context(|| format!("load balancer {lb_id}: negative advert_int"))?,
        })
    })
    .transpose()?;

    let sql = format!(
        "SELECT id, protocol, protocol_port, connection_limit, provisioning_status, default_pool_id, \
         timeout_client_data, timeout_member_connect, timeout_member_data, timeout_tcp_inspect, insert_headers, \
         default_tls_container_ref, tls_ciphers, tls_versions, alpn_protocols, hsts_max_age{} \
         FROM listener WHERE load_balancer_id = $1 AND provisioning_status NOT IN ('PENDING_DELETE', 'DELETED') \
         ORDER BY created_at, id",
        bools(&["enabled", "hsts_include_subdomains", "hsts_preload"])
    );
    let mut listeners = Vec::new();
    for r in sqlx::query(&sql).bind(lb_id).fetch_all(&mut *conn).await? {
        let id: String = r.try_get("id")?;
        listeners.push(Listener {
            protocol: r.try_get("protocol")?,
            protocol_port: port(r.try_get("protocol_port")?, "listener", &id)?,
            connection_limit: r.try_get("connection_limit")?,
            enabled: boolean(&r, "enabled")?,
            provisioning_status: r.try_get("provisioning_status")?,
            default_pool_id: opt_text(&r, "default_pool_id")?,
            timeout_client_data: r.try_get("timeout_client_data")?,
            timeout_member_connect: r.try_get("timeout_member_connect")?,
            timeout_member_data: r.try_get("timeout_member_data")?,
            timeout_tcp_inspect: r.try_get("timeout_tcp_inspect")?,
            insert_headers: json_or(&r, "insert_headers", "listener", &id)?.unwrap_or_default(),
            default_tls_container_ref: opt_text(&r, "default_tls_container_ref")?,
            tls_ciphers: opt_text(&r, "tls_ciphers")?,
            tls_versions: json_or(&r, "tls_versions", "listener", &id)?,
            alpn_protocols: json_or(&r, "alpn_protocols", "listener", &id)?,
            hsts_max_age: r.try_get("hsts_max_age")?,
            hsts_include_subdomains: boolean(&r, "hsts_include_subdomains")?,
            hsts_preload: boolean(&r, "hsts_preload")?,
            id,
        });
    }

    let sql = format!(
        "SELECT id, protocol, lb_algorithm, session_persistence, provisioning_status, operating_status, \
         tls_ciphers, tls_versions, alpn_protocols{} FROM pool \
         WHERE load_balancer_id = $1 AND provisioning_status NOT IN ('PENDING_DELETE', 'DELETED') \
         ORDER BY created_at, id",
        bools(&["enabled", "tls_enabled"])
    );
    let mut pools = Vec::new();
    for r in sqlx::query(&sql).bind(lb_id).fetch_all(&mut *conn).await? {
        let id: String = r.try_get("id")?;
        pools.push(Pool {
            protocol: r.try_get("protocol")?,
            lb_algorithm: r.try_get("lb_algorithm")?,
            session_persistence: json_or(&r, "session_persistence", "pool", &id)?,
            enabled: boolean(&r, "enabled")?,
            provisioning_status: r.try_get("provisioning_status")?,
            operating_status: r.try_get("operating_status")?,
            tls_enabled: boolean(&r, "tls_enabled")?,
            tls_ciphers: opt_text(&r, "tls_ciphers")?,
            tls_versions: json_or(&r, "tls_versions", "pool", &id)?,
            alpn_protocols: json_or(&r, "alpn_protocols", "pool", &id)?,
            members: Vec::new(),
            health_monitor: None,
            id,
        });
    }

    let sql = "SELECT m.id, m.pool_id, m.address, m.protocol_port, m.weight, m.subnet_id, m.monitor_address, \
         m.monitor_port, m.provisioning_status, m.operating_status, \
         CAST(CAST(m.backup AS INTEGER) AS BIGINT) AS backup, CAST(CAST(m.enabled AS INTEGER) AS BIGINT) AS enabled \
         FROM member m JOIN pool p ON p.id = m.pool_id WHERE p.load_balancer_id = $1 \
         AND m.provisioning_status NOT IN ('PENDING_DELETE', 'DELETED') ORDER BY m.created_at, m.id";
    for r in sqlx::query(sql).bind(lb_id).fetch_all(&mut *conn).await? {
        let id: String = r.try_get("id")?;
        let pool_id: String = r.try_get("pool_id")?;
        let Some(pool) = pools.iter_mut().find(|p| p.id == pool_id) else { continue };
        pool.members.push(Member {
            address: r.try_get("address")?,
            protocol_port: port(r.try_get("protocol_port")?, "member", &id)?,
            weight: r.try_get("weight")?,
            backup: boolean(&r, "backup")?,
            enabled: boolean(&r, "enabled")?,
            subnet_id: opt_text(&r, "subnet_id")?,
            monitor_address: opt_text(&r, "monitor_address")?,
            monitor_port: r.try_get::<Option<i64>, _>("monitor_port")?.map(|p| port(p, "member", &id)).transpose()?,
            provisioning_status: r.try_get("provisioning_status")?,
            operating_status: r.try_get("operating_status")?,
            id,
        });
    }

    let sql = "SELECT h.id, h.pool_id, h.type, h.delay, h.timeout, h.max_retries, h.max_retries_down, \
               h.http_method, h.url_path, h.expected_codes, h.http_version, h.domain_name, h.provisioning_status, \
               CAST(CAST(h.enabled AS INTEGER) AS BIGINT) AS enabled \
               FROM health_monitor h JOIN pool p ON p.id = h.pool_id WHERE p.load_balancer_id = $1 \
               AND h.provisioning_status NOT IN ('PENDING_DELETE', 'DELETED')";
    for r in sqlx::query(sql).bind(lb_id).fetch_all(&mut *conn).await? {
        let pool_id: String = r.try_get("pool_id")?;
        let Some(pool) = pools.iter_mut().find(|p| p.id == pool_id) else { continue };
        pool.health_monitor = Some(HealthMonitor {
            id: r.try_get("id")?,
            kind: r.try_get("type")?,
            delay: r.try_get("delay")?,
            timeout: r.try_get("timeout")?,
            rise_threshold: r.try_get("max_retries")?,
            fall_threshold: r.try_get("max_retries_down")?,
            http_method: opt_text(&r, "http_method")?,
            url_path: opt_text(&r, "url_path")?,
            expected_codes: opt_text(&r, "expected_codes")?,
            http_version: opt_text(&r, "http_version")?,
            domain_name: opt_text(&r, "domain_name")?,
            enabled: boolean(&r, "enabled")?,
            provisioning_status: r.try_get("provisioning_status")?,
        });
    }

    let sql = "SELECT id, role, status, lb_network_ip, vrrp_ip, ha_ip, vrrp_port_id, ha_port_id, vrrp_interface, \
               vrrp_id, vrrp_priority FROM amphora WHERE load_balancer_id = $1 AND status <> 'DELETED' \
               ORDER BY created_at, id";
    let mut amphorae = Vec::new();
    for r in sqlx::query(sql).bind(lb_id).fetch_all(&mut *conn).await? {
        amphorae.push(AmphoraView {
            id: r.try_get("id")?,
            role: opt_text(&r, "role")?,
            status: r.try_get("status")?,
            lb_network_ip: opt_text(&r, "lb_network_ip")?,
            vrrp_ip: opt_text(&r, "vrrp_ip")?,
            ha_ip: opt_text(&r, "ha_ip")?,
            vrrp_port_id: opt_text(&r, "vrrp_port_id")?,
            ha_port_id: opt_text(&r, "ha_port_id")?,
            vrrp_interface: opt_text(&r, "vrrp_interface")?,
            vrrp_id: r.try_get("vrrp_id")?,
            vrrp_priority: r.try_get("vrrp_priority")?,
            haproxy_version: None,
        });
    }

    Ok(Some(LoadBalancer {
        id: lb_id.to_owned(),
        project_id,
        enabled,
        provisioning_status,
        topology,
        vip,
        vip_subnet: None,
        vrrp_group,
        listeners,
        pools,
        amphorae,
    }))
}

/// Stores (or replaces) a load balancer's VRRP group, atomically.
pub async fn save_vrrp_group(db: &Db, lb_id: &str, group: &VrrpGroup) -> anyhow::Result<()> {
    let advert_int = i64::try_from(group.advert_int).context("advert_int out of range")?;
    let mut tx = db.write().await?;
    sqlx::query("DELETE FROM vrrp_group WHERE load_balancer_id = $1").bind(lb_id).execute(&mut **tx).await?;
    sqlx::query(
        "INSERT INTO vrrp_group (load_balancer_id, vrrp_group_name, vrrp_auth_type, vrrp_auth_pass, advert_int) \
         VALUES ($1, $2, $3, $4, $5)",
    )
    .bind(lb_id)
    .bind(&group.name)
    .bind(&group.auth_type)
    .bind(&group.auth_pass)
    .bind(advert_int)
    .execute(&mut **tx)
    .await?;
    tx.commit().await?;
    Ok(())
}

/// Constructors with the API's defaults, for building models by hand
/// (tests, and callers that render objects not yet stored).
impl Listener {
    pub fn new(id: &str, protocol: &str, protocol_port: u16) -> Listener {
        Listener {
            id: id.into(),
            protocol: protocol.into(),
            protocol_port,
            connection_limit: -1,
            enabled: true,
            provisioning_status: "ACTIVE".into(),
            default_pool_id: None,
            timeout_client_data: None,
            timeout_member_connect: None,
            timeout_member_data: None,
            timeout_tcp_inspect: None,
            insert_headers: BTreeMap::new(),
            default_tls_container_ref: None,
            tls_ciphers: None,
            tls_versions: None,
            alpn_protocols: None,
            hsts_max_age: None,
            hsts_include_subdomains: false,
            hsts_preload: false,
        }
    }
}

impl Pool {
    pub fn new(id: &str, protocol: &str, lb_algorithm: &str) -> Pool {
        Pool {
            id: id.into(),
            protocol: protocol.into(),
            lb_algorithm: lb_algorithm.into(),
            session_persistence: None,
            enabled: true,
            provisioning_status: "ACTIVE".into(),
            operating_status: "ONLINE".into(),
            tls_enabled: false,
            tls_ciphers: None,
            tls_versions: None,
            alpn_protocols: None,
            members: Vec::new(),
            health_monitor: None,
        }
    }
}

impl Member {
    pub fn new(id: &str, address: &str, protocol_port: u16) -> Member {
        Member {
            id: id.into(),
            address: address.into(),
            protocol_port,
            weight: 1,
            backup: false,
            enabled: true,
            subnet_id: None,
            monitor_address: None,
            monitor_port: None,
            provisioning_status: "ACTIVE".into(),
            operating_status: "ONLINE".into(),
        }
    }
}

impl HealthMonitor {
    /// An enabled monitor; HTTP and HTTPS ones get the API's GET / 200.
    pub fn new(id: &str, kind: &str, delay: i64, timeout: i64, rise: i64, fall: i64) -> HealthMonitor {
        let http = matches!(kind, "HTTP" | "HTTPS");
        HealthMonitor {
            id: id.into(),
            kind: kind.into(),
            delay,
            timeout,
            rise_threshold: rise,
            fall_threshold: fall,
            http_method: http.then(|| "GET".into()),
            url_path: http.then(|| "/".into()),
            expected_codes: http.then(|| "200".into()),
            http_version: None,
            domain_name: None,
            enabled: true,
            provisioning_status: "ACTIVE".into(),
        }
    }
}

impl AmphoraView {
    pub fn new(id: &str, role: Option<&str>) -> AmphoraView {
        AmphoraView {
            id: id.into(),
            role: role.map(Into::into),
            status: "ALLOCATED".into(),
            lb_network_ip: None,
            vrrp_ip: None,
            ha_ip: None,
            vrrp_port_id: None,
            ha_port_id: None,
            vrrp_interface: None,
            vrrp_id: None,
            vrrp_priority: None,
            haproxy_version: None,
        }
    }
}

impl LoadBalancer {
    /// An enabled, ACTIVE load balancer with nothing under it.
    pub fn new(id: &str, project_id: &str, topology: Topology, vip_address: &str) -> LoadBalancer {
        LoadBalancer {
            id: id.into(),
            project_id: project_id.into(),
            enabled: true,
            provisioning_status: "ACTIVE".into(),
            topology,
            vip: Vip { address: vip_address.into(), subnet_id: None, network_id: None, port_id: None },
            vip_subnet: None,
            vrrp_group: None,
            listeners: Vec::new(),
            pools: Vec::new(),
            amphorae: Vec::new(),
        }
    }
}
