//! Health heartbeats to the controllers' health managers.
//!
//! Every `heartbeat_interval` seconds: read each running haproxy's `show
//! stat`, build the version 3 message (listener counters as deltas since the
//! previous message, pool and member statuses), sign it and send it as one
//! UDP datagram to the next controller of `controller_ip_port_list` (round
//! robin, as upstream). UDP and SCTP listeners report IPVS's counters and
//! the members keepalived keeps in it. Counters are persisted in upstream's
//! `stats_counters.json`, so an agent restart neither repeats nor loses
//! traffic. Interval, key and controllers follow configuration updates.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use amphora_proto::heartbeat::{
    self, BackendStatus, Heartbeat, ListenerHealth, ListenerStats, MAX_DATAGRAM, PoolHealth, ServerStatus,
};
use tokio::net::UdpSocket;
use tokio::sync::watch;

use crate::config::Config;
use crate::fsutil;
use crate::haproxy::cli;
use crate::haproxy::stats::{self, Service, StatRow};
use crate::layout::Layout;
use crate::lb::LbService;
use crate::lvs::{ListenerReport, LvsService};

/// Counters reported as deltas, by their `show stat` names.
const DELTA_METRICS: [&str; 4] = ["bin", "bout", "ereq", "stot"];

/// The last absolute counter values per listener, as upstream persists them:
/// `{"<listener>": {"bin": 1, "bout": 2, "ereq": 0, "stot": 3}}`.
#[derive(Debug, Default)]
pub struct Counters {
    path: PathBuf,
    last: BTreeMap<String, BTreeMap<String, u64>>,
}

impl Counters {
    /// Loads `stats_counters.json`; a missing or damaged file starts afresh.
    pub fn load(path: PathBuf) -> Self {
        let last = match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes).unwrap_or_else(|e| {
                tracing::warn!(path = %path.display(), error = %e, "ignoring damaged statistics counters");
                BTreeMap::new()
            }),
            Err(_) => BTreeMap::new(),
        };
        Self { path, last }
    }

    /// Records absolute values and returns what accumulated since the last
    /// record. A counter that went backwards (haproxy restarted) counts
    /// from zero, as upstream.
    pub fn delta(&mut self, listener: &str, current: &BTreeMap<&str, u64>) -> BTreeMap<&'static str, u64> {
        let last = self.last.entry(listener.to_owned()).or_default();
        DELTA_METRICS
            .iter()
            .map(|metric| {
                let now = current.get(metric).copied().unwrap_or(0);
                let before = last.insert((*metric).to_owned(), now).unwrap_or(0);
                (*metric, if now >= before { now - before } else { now })
            })
            .collect()
    }

    /// Writes the values durably, blocking the calling thread (the
    /// benchmark times it as part of building a heartbeat).
    pub fn persist_blocking(&self) -> std::io::Result<()> {
        let bytes = serde_json::to_vec(&self.last).map_err(std::io::Error::other)?;
        fsutil::write_atomic(&self.path, &bytes, 0o640)
    }

    /// Writes the values durably, off the runtime (every heartbeat does).
    pub async fn persist(&self) -> std::io::Result<()> {
        let bytes = serde_json::to_vec(&self.last).map_err(std::io::Error::other)?;
        fsutil::write_atomic_async(&self.path, &bytes, 0o640).await
    }
}

/// Adds one haproxy's listeners and pools to a heartbeat, as upstream's
/// `build_stats_message` and `get_pool_status` compute them.
pub fn add_haproxy_stats(message: &mut Heartbeat, rows: &[StatRow], counters: &mut Counters) {
    for row in rows.iter().filter(|r| r.service == Service::Frontend) {
        let current = BTreeMap::from([("bin", row.bin), ("bout", row.bout), ("ereq", row.ereq), ("stot", row.stot)]);
        let delta = counters.delta(&row.proxy, &current);
        message.listeners.insert(
            row.proxy.clone(),
            ListenerHealth {
                status: row.frontend_status(),
                stats: ListenerStats {
                    tx: delta["bout"],
                    rx: delta["bin"],
                    conns: row.scur,
                    totconns: delta["stot"],
                    ereq: delta["ereq"],
                },
            },
        );
    }
    for row in rows.iter().filter(|r| r.service != Service::Frontend) {
        let pool = message
            .pools
            .entry(row.proxy.clone())
            .or_insert_with(|| PoolHealth { status: "".into(), members: BTreeMap::new() });
        match &row.service {
            Service::Backend => pool.status = row.backend_status(),
            Service::Server(name) => {
                pool.members.insert(name.clone(), row.server_status());
            }
            Service::Frontend => {}
        }
    }
}

/// Adds the UDP and SCTP listeners (IPVS) to a heartbeat, as upstream's
/// `build_stats_message` does from `get_lvs_listeners_stats` and
/// `get_lvs_listener_pool_status`.
pub fn add_lvs_stats(message: &mut Heartbeat, reports: &[ListenerReport], counters: &mut Counters) {
    for report in reports {
        let current: BTreeMap<&str, u64> =
            [("bin", report.bytes_in), ("bout", report.bytes_out), ("ereq", 0), ("stot", report.total_connections)]
                .into_iter()
                .collect();
        let delta = counters.delta(report.id.as_str(), &current);
        message.listeners.insert(
            report.id.to_string(),
            ListenerHealth {
                status: "OPEN".into(),
                stats: ListenerStats {
                    tx: delta["bout"],
                    rx: delta["bin"],
                    conns: report.current_connections,
                    totconns: delta["stot"],
                    ereq: delta["ereq"],
                },
            },
        );
        if let Some(pool) = &report.pool {
            let members = pool.members.iter().map(|(id, status)| (id.clone(), ServerStatus::from(*status))).collect();
            message.pools.insert(pool.id.clone(), PoolHealth { status: BackendStatus::from(pool.status), members });
        }
    }
}

/// What had to be left out of a heartbeat to fit one datagram.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Trimmed {
    pub members_left_out: usize,
    pub pools_affected: usize,
    /// Each pool kept at most this many members.
    pub members_per_pool: usize,
}

/// Encodes a heartbeat into one datagram. When the full message is too
/// large, member lists are cut to the largest size that fits (the same
/// members each time, so statuses do not flap); every listener stays, since
/// upstream refreshes an amphora only when all its listeners report.
pub fn encode_fitting(message: &Heartbeat, key: &str) -> Result<(Vec<u8>, Option<Trimmed>), heartbeat::EnvelopeError> {
    let full = heartbeat::encode(message, key)?;
    if full.len() <= MAX_DATAGRAM {
        return Ok((full, None));
    }
    let largest = message.pools.values().map(|p| p.members.len()).max().unwrap_or(0);
    let trim = |cap: usize| {
        let mut trimmed = message.clone();
        for pool in trimmed.pools.values_mut() {
            pool.members = std::mem::take(&mut pool.members).into_iter().take(cap).collect();
        }
        trimmed
    };
    // Binary search for the largest cap that fits.
    let (mut fits, mut too_big) = (0usize, largest);
    let mut best = heartbeat::encode(&trim(0), key)?;
    while fits + 1 < too_big {
        let cap = (fits + too_big) / 2;
        let envelope = heartbeat::encode(&trim(cap), key)?;
        if envelope.len() <= MAX_DATAGRAM {
            fits = cap;
            best = envelope;
        } else {
            too_big = cap;
        }
    }
    let affected: Vec<usize> = message.pools.values().map(|p| p.members.len().saturating_sub(fits)).collect();
    Ok((
        best,
        Some(Trimmed {
            members_left_out: affected.iter().sum(),
            pools_affected: affected.iter().filter(|n| **n > 0).count(),
            members_per_pool: fits,
        }),
    ))
}

/// Why no heartbeat is sent this time, when keepalived should run but
/// does not (upstream: so the controller fails this amphora over).
pub fn keepalived_down(layout: &Layout) -> Option<String> {
    let files = layout.keepalived_files();
    if !files.config.is_file() {
        return None;
    }
    let pid_file = files.pid;
    let pid = match std::fs::read_to_string(&pid_file) {
        Ok(text) => text.trim().parse::<i32>().ok(),
        Err(_) => return Some(format!("keepalived is configured but has no pid file {}", pid_file.display())),
    };
    match pid {
        Some(pid) if nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None).is_ok() => None,
        _ => Some("keepalived is configured but not running".into()),
    }
}

/// The heartbeat loop.
#[derive(Debug)]
pub struct HeartbeatSender {
    amphora_id: String,
    lbs: Arc<LbService>,
    lvs: Option<Arc<LvsService>>,
    config: watch::Receiver<Arc<Config>>,
    counters: Counters,
    seq: u64,
    next: usize,
}

impl HeartbeatSender {
    pub fn new(
        amphora_id: String,
        lbs: Arc<LbService>,
        lvs: Option<Arc<LvsService>>,
        config: watch::Receiver<Arc<Config>>,
    ) -> Self {
        let counters = Counters::load(lbs.layout().stats_counters());
        Self { amphora_id, lbs, lvs, config, counters, seq: 0, next: 0 }
    }

    /// The current message; counters advance.
    pub async fn build(&mut self) -> Heartbeat {
        let mut message = Heartbeat {
            id: self.amphora_id.clone(),
            seq: self.seq,
            listeners: BTreeMap::new(),
            pools: BTreeMap::new(),
            ver: heartbeat::MESSAGE_VERSION,
        };
        self.seq += 1;
        for socket in self.lbs.running_stats_sockets() {
            match cli::query(&socket, "show stat").await {
                Ok(text) => add_haproxy_stats(&mut message, &stats::parse(&text), &mut self.counters),
                Err(e) => tracing::warn!(socket = %socket.display(), error = %e, "cannot read haproxy statistics"),
            }
        }
        if let Some(lvs) = &self.lvs {
            add_lvs_stats(&mut message, &lvs.reports().await, &mut self.counters);
        }
        message
    }

    /// Sends heartbeats until the agent stops.
    pub async fn run(mut self) {
        let sockets = Sockets::default();
        loop {
            let config = self.config.borrow_and_update().clone();
            let health = &config.health_manager;
            if let Some(reason) = keepalived_down(self.lbs.layout()) {
                tracing::error!("{reason}: skipping the health heartbeat");
            } else if health.controller_ip_port_list.is_empty() {
                tracing::debug!("no controller to send heartbeats to");
            } else {
                self.beat(&sockets, &health.controller_ip_port_list, health.heartbeat_key.as_deref().unwrap_or(""))
                    .await;
            }
            let interval = Duration::from_secs(health.heartbeat_interval);
            // A configuration change (interval, key, controllers) starts a
            // new round at once.
            tokio::select! {
                () = tokio::time::sleep(interval) => {}
                changed = self.config.changed() => {
                    if changed.is_err() {
                        return;
                    }
                    self.next = 0;
                }
            }
        }
    }

    async fn beat(&mut self, sockets: &Sockets, controllers: &[String], key: &str) {
        let message = self.build().await;
        let (envelope, trimmed) = match encode_fitting(&message, key) {
            Ok(encoded) => encoded,
            Err(e) => {
                tracing::error!(error = %e, "cannot encode the heartbeat");
                return;
            }
        };
        if let Some(trimmed) = trimmed {
            tracing::error!(
                members_left_out = trimmed.members_left_out,
                pools = trimmed.pools_affected,
                members_per_pool = trimmed.members_per_pool,
                "heartbeat too large for one datagram: member statuses left out (every listener is still reported)"
            );
        }
        let controller = &controllers[self.next % controllers.len()];
        self.next = (self.next + 1) % controllers.len();
        match parse_controller(controller) {
            Some(addr) => {
                if let Err(e) = sockets.send(&envelope, addr).await {
                    // The network may still be coming up; the next beat retries.
                    tracing::warn!(%addr, error = %e, "cannot send the heartbeat");
                }
            }
            None => tracing::error!(controller, "invalid controller address"),
        }
        if let Err(e) = self.counters.persist().await {
            tracing::warn!(error = %e, "cannot persist statistics counters");
        }
    }
}

fn parse_controller(value: &str) -> Option<SocketAddr> {
    let (host, port) = value.rsplit_once(':')?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    Some(SocketAddr::new(host.parse().ok()?, port.parse().ok()?))
}

/// One UDP socket per address family, opened on first use.
#[derive(Debug, Default)]
struct Sockets {
    v4: tokio::sync::OnceCell<UdpSocket>,
    v6: tokio::sync::OnceCell<UdpSocket>,
}

impl Sockets {
    async fn send(&self, datagram: &[u8], to: SocketAddr) -> std::io::Result<()> {
        let (cell, bind) = if to.is_ipv4() { (&self.v4, "0.0.0.0:0") } else { (&self.v6, "[::]:0") };
        let socket = cell.get_or_try_init(|| UdpSocket::bind(bind)).await?;
        socket.send_to(datagram, to).await.map(|_| ())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SHOW_STAT: &str = "\
# pxname,svname,qcur,qmax,scur,smax,slim,stot,bin,bout,dreq,dresp,ereq,econ,eresp,wretr,wredis,status,weight,act,bck
listener-1,FRONTEND,,,2,5,1000,10,1000,5000,0,0,1,,,,,OPEN,,,
pool-1:listener-1,member-a,0,0,0,1,,5,500,2500,,0,,0,0,0,0,UP,1,1,0
pool-1:listener-1,member-b,0,0,0,1,,5,500,2500,,0,,0,0,0,0,UP,0,1,0
pool-1:listener-1,member-c,0,0,0,0,,0,0,0,,0,,0,0,0,0,DOWN 1/2,1,1,0
pool-1:listener-1,member-d,0,0,0,0,,0,0,0,,0,,0,0,0,0,no check,1,1,0
pool-1:listener-1,member-e,0,0,0,0,,0,0,0,,0,,0,0,0,0,MAINT,1,1,0
pool-1:listener-1,BACKEND,0,0,0,1,100,10,1000,5000,0,0,,0,0,0,0,UP,1,1,0
prometheus-exporter-internal-endpoint,FRONTEND,,,0,0,100,0,0,0,0,0,0,,,,,OPEN,,,
";

    fn empty_message() -> Heartbeat {
        Heartbeat { id: "amp".into(), seq: 0, listeners: BTreeMap::new(), pools: BTreeMap::new(), ver: 3 }
    }

    #[test]
    fn listeners_pools_and_members_as_upstream_reports_them() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut counters = Counters::load(dir.path().join("stats_counters.json"));
        let mut message = empty_message();
        add_haproxy_stats(&mut message, &stats::parse(SHOW_STAT), &mut counters);
        assert_eq!(
            message.listeners,
            BTreeMap::from([(
                "listener-1".to_owned(),
                ListenerHealth {
                    status: "OPEN".into(),
                    stats: ListenerStats { tx: 5000, rx: 1000, conns: 2, totconns: 10, ereq: 1 }
                }
            )])
        );
        let members = |pairs: &[(&str, &str)]| pairs.iter().map(|(k, v)| (k.to_string(), (*v).into())).collect();
        assert_eq!(
            message.pools,
            BTreeMap::from([(
                "pool-1:listener-1".to_owned(),
                PoolHealth {
                    status: "UP".into(),
                    members: members(&[
                        ("member-a", "UP"),
                        ("member-b", "DRAIN"),
                        ("member-c", "DOWN 1/2"),
                        ("member-d", "no check"),
                        ("member-e", "MAINT"),
                    ])
                }
            )])
        );
    }

    #[tokio::test]
    async fn deltas_survive_a_restart_and_reset_when_haproxy_does() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("stats_counters.json");
        let mut counters = Counters::load(path.clone());
        let values = |bin: u64| BTreeMap::from([("bin", bin), ("bout", 0), ("ereq", 0), ("stot", 0)]);
        assert_eq!(counters.delta("l", &values(100))["bin"], 100);
        assert_eq!(counters.delta("l", &values(150))["bin"], 50);
        counters.persist().await.expect("persist");
        // Upstream's file format.
        let saved: serde_json::Value = serde_json::from_slice(&std::fs::read(&path).expect("read")).expect("json");
        assert_eq!(saved, serde_json::json!({"l": {"bin": 150, "bout": 0, "ereq": 0, "stot": 0}}));

        let mut restarted = Counters::load(path);
        assert_eq!(restarted.delta("l", &values(170))["bin"], 20, "no double counting after an agent restart");
        assert_eq!(restarted.delta("l", &values(30))["bin"], 30, "haproxy restarted: count from zero");
    }

    /// A heartbeat with `listeners` listeners of `members` members each, with
    /// random-looking ids as Octavia's UUIDs are.
    pub fn large_message(listeners: usize, members: usize) -> Heartbeat {
        let uuid = |a: usize, b: usize| {
            let digest = crate::etag::md5_hex(format!("{a}-{b}").as_bytes());
            format!("{}-{}-{}-{}-{}", &digest[..8], &digest[8..12], &digest[12..16], &digest[16..20], &digest[20..32])
        };
        let mut message = empty_message();
        for l in 0..listeners {
            let listener = uuid(l, 0);
            message.listeners.insert(
                listener.clone(),
                ListenerHealth {
                    status: "OPEN".into(),
                    stats: ListenerStats { tx: 123_456, rx: 654_321, conns: 12, totconns: 345, ereq: 0 },
                },
            );
            let members =
                (0..members).map(|m| (uuid(l, m + 1), if m % 7 == 0 { "DOWN" } else { "UP" }.into())).collect();
            message
                .pools
                .insert(format!("{}:{listener}", uuid(l, usize::MAX)), PoolHealth { status: "UP".into(), members });
        }
        message
    }

    #[test]
    fn a_message_that_fits_is_sent_whole() {
        let message = large_message(50, 20);
        let (envelope, trimmed) = encode_fitting(&message, "k").expect("encode");
        assert_eq!(trimmed, None);
        assert!(envelope.len() <= MAX_DATAGRAM);
        let decoded: Heartbeat = heartbeat::decode(&envelope, "k", 1 << 24).expect("decode");
        assert_eq!(decoded, message);
    }

    #[test]
    fn an_oversized_message_keeps_every_listener_and_as_many_members_as_fit() {
        let message = large_message(40, 200);
        assert!(heartbeat::encode(&message, "k").expect("encode").len() > MAX_DATAGRAM);
        let (envelope, trimmed) = encode_fitting(&message, "k").expect("encode");
        assert!(envelope.len() <= MAX_DATAGRAM);
        let trimmed = trimmed.expect("trimmed");
        let decoded: Heartbeat = heartbeat::decode(&envelope, "k", 1 << 24).expect("decode");
        assert_eq!(decoded.listeners, message.listeners);
        assert!(decoded.pools.values().all(|p| p.members.len() == trimmed.members_per_pool));
        assert_eq!(trimmed.members_left_out, 40 * (200 - trimmed.members_per_pool));
        // As little as possible: one more member per pool would not fit.
        let mut one_more = message.clone();
        for pool in one_more.pools.values_mut() {
            pool.members = std::mem::take(&mut pool.members).into_iter().take(trimmed.members_per_pool + 1).collect();
        }
        assert!(heartbeat::encode(&one_more, "k").expect("encode").len() > MAX_DATAGRAM);
    }

    #[test]
    fn controller_addresses() {
        assert_eq!(parse_controller("192.0.2.1:5555"), Some("192.0.2.1:5555".parse().expect("addr")));
        assert_eq!(parse_controller("[fd00::1]:5555"), Some("[fd00::1]:5555".parse().expect("addr")));
        assert_eq!(parse_controller("nonsense"), None);
    }
}
