//! The Octavia amphora agent: a REST API over mutual TLS that stores
//! haproxy configurations and runs one haproxy per load balancer inside the
//! amphora network namespace.
//!
//! `run` wires the parts together; the domain services (`lb`, `info`) know
//! nothing of HTTP, and `http` knows nothing of haproxy.

// The configuration files are the one interface besides the API: the
// binary reads them. Everything else is the agent's own; clients use
// amphora-proto and amphora-client, never these modules.
pub mod config;
pub mod syslog;

pub(crate) mod certs;
pub(crate) mod check_scripts;
pub(crate) mod daemon;
pub(crate) mod etag;
pub(crate) mod fsutil;
pub(crate) mod haproxy;
pub(crate) mod health;
pub(crate) mod http;
pub(crate) mod ids;
pub(crate) mod info;
pub(crate) mod keepalived;
pub(crate) mod layout;
pub(crate) mod lb;
pub(crate) mod lvs;
pub(crate) mod net;
pub(crate) mod netns;
pub(crate) mod settings;
pub(crate) mod system;
pub(crate) mod tls;
pub(crate) mod topology;
pub(crate) mod vrrp;

pub use settings::LogControl;

/// What the benchmark measures of the heartbeat (building and signing one
/// message from `show stat`): not an interface of the agent.
#[doc(hidden)]
pub mod bench_support {
    pub use crate::haproxy::stats::parse as parse_show_stat;
    pub use crate::health::{Counters, add_haproxy_stats, encode_fitting};
}

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio::net::TcpListener;

use crate::config::Loaded;
use crate::haproxy::Haproxy;
use crate::info::InfoService;
use crate::lb::{Layout, LbService};
use crate::lvs::LvsService;
use crate::net::NetService;
use crate::netns::Netns;
use crate::settings::LiveConfig;
use crate::system::packages::{Packages, Sources};
use crate::system::sampler::Sampler;
use crate::tls::{TlsFiles, TlsState};
use crate::topology::TopologyService;
use crate::vrrp::Vrrp;

/// Run-time options that are not part of the configuration files.
#[derive(Debug, Default)]
pub struct Options {
    /// Written with the bound address once the agent serves requests.
    pub ready_file: Option<PathBuf>,
    /// Lets a configuration update switch debug logging.
    pub log: Option<LogControl>,
}

/// Starts the agent and serves until SIGTERM or SIGINT. Running haproxy
/// processes are never stopped by the agent's own exit.
pub async fn run(loaded: Loaded, options: Options) -> anyhow::Result<()> {
    let config = loaded.config;
    let tls = TlsState::load(TlsFiles {
        server_ca: config.amphora_agent.agent_server_ca.clone(),
        server_cert: config.amphora_agent.agent_server_cert.clone(),
        min_protocol: config.amphora_agent.agent_tls_protocol,
    })?;

    let haproxy_conf = &config.haproxy_amphora;
    for dir in [&haproxy_conf.base_path, &haproxy_conf.base_cert_dir] {
        fsutil::create_dir_all(dir, 0o755).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    let netns = match &config.amphora_agent.network_namespace {
        Some(name) => Some(Arc::new(Netns::ensure(name).await?)),
        None => None,
    };
    let layout = Layout::new(haproxy_conf.base_path.clone(), haproxy_conf.base_cert_dir.clone());
    lb::ensure_user_group_config(&layout.user_group_config(), haproxy_conf.user_group.as_deref())
        .with_context(|| format!("cannot write {}", layout.user_group_config().display()))?;
    let user_group_config = layout.user_group_config();
    let settings = Arc::new(LiveConfig::new(config.clone(), loaded.files, options.log));
    // Interfaces come back before haproxy, which binds their addresses.
    let net = Arc::new(NetService::new(netns.clone(), layout.interfaces_dir(), settings.clone())?);
    net.restore().await;
    let haproxy = Haproxy::new(haproxy_conf.haproxy_cmd.clone(), user_group_config, netns.clone());
    let checker = std::env::current_exe()
        .map(|exe| exe.with_file_name("amphora-vrrp-check"))
        .unwrap_or_else(|_| PathBuf::from("amphora-vrrp-check"));
    let vrrp = Vrrp::new(&layout, PathBuf::from("keepalived"), checker, netns.clone());
    let lbs = LbService::new(
        layout,
        haproxy,
        &config.amphora_agent.amphora_id,
        haproxy_conf.user_group.clone(),
        Some(net.clone()),
        Some(vrrp.clone()),
    );
    lbs.restore().await;
    let health_checker = std::env::current_exe()
        .map(|exe| exe.with_file_name("amphora-health-checker"))
        .unwrap_or_else(|_| PathBuf::from("amphora-health-checker"));
    let lvs = LvsService::new(
        lbs.layout(),
        PathBuf::from("keepalived"),
        health_checker,
        netns.clone(),
        Some(net.clone()),
        Some(vrrp.clone()),
    );
    lvs.restore().await;
    vrrp.restore(|| lbs.wanted_stats_sockets()).await;

    let topology = Arc::new(TopologyService::new(lbs.layout().topology_record(), lbs.clone()));
    let sampler = Sampler::start(netns).await.context("cannot start the statistics sampler")?;
    let info = Arc::new(InfoService::new(
        config.amphora_agent.amphora_id.clone(),
        settings.clone(),
        Packages::new(Sources::system(haproxy_conf.haproxy_cmd.clone())),
        sampler,
        info::Sources {
            lbs: lbs.clone(),
            net: net.clone(),
            vrrp: vrrp.clone(),
            topology: topology.clone(),
            lvs: lvs.clone(),
        },
    ));
    let heartbeats = health::HeartbeatSender::new(
        config.amphora_agent.amphora_id.clone(),
        lbs.clone(),
        Some(lvs.clone()),
        settings.subscribe(),
    );
    tokio::spawn(heartbeats.run());
    let tls = Arc::new(tls);
    let versions = Arc::new(
        config.amphora_agent.api_versions.iter().map(|v| amphora_proto::ApiVersion::from(v.as_str())).collect(),
    );
    let state =
        http::AppState { lbs, info: info.clone(), tls: tls.clone(), settings, net, vrrp, lvs, topology, versions };
    let app = http::app(state, config.amphora_agent.max_request_body_size);

    let bind = SocketAddr::new(haproxy_conf.bind_host, haproxy_conf.bind_port);
    let listener = TcpListener::bind(bind).await.with_context(|| format!("cannot listen on {bind}"))?;
    let local = listener.local_addr()?;
    if let Some(path) = &options.ready_file {
        fsutil::write_atomic_async(path, format!("{local}\n").as_bytes(), 0o644)
            .await
            .with_context(|| format!("cannot write {}", path.display()))?;
    }
    tracing::info!(address = %local, "amphora agent ready");
    tokio::spawn(async move { info.warm_up().await });

    let limits = http::Limits {
        handshake: Duration::from_secs(10),
        read: Duration::from_secs(config.amphora_agent.agent_request_read_timeout),
        max_connections: max_connections(),
        max_body: config.amphora_agent.max_request_body_size,
    };
    let operations = http::Operations::new();
    http::serve(listener, tls, app, limits, operations.clone(), shutdown_signal()).await;
    // An operation whose client left must still not be cut by the exit.
    if operations.drain(SHUTDOWN_GRACE).await.is_none() {
        tracing::warn!(grace = ?SHUTDOWN_GRACE, "exiting with operations still in flight");
    }
    tracing::info!("amphora agent stopping; haproxy processes keep running");
    Ok(())
}

/// How long the agent waits at exit for operations in flight: haproxy's
/// start and check are the longest, and their own limit is two minutes, but
/// an init system's patience (systemd: 90 s) is shorter.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(60);

/// Client connections served at once: a quarter of the open-file limit
/// (each takes a descriptor; files, haproxy's sockets, netlink and process
/// watches need the rest), at most 1024.
fn max_connections() -> usize {
    let soft = nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE)
        .map(|(soft, _)| soft)
        .unwrap_or(1024);
    usize::try_from(soft / 4).unwrap_or(usize::MAX).clamp(4, 1024)
}

async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int)) = (signal(SignalKind::terminate()), signal(SignalKind::interrupt())) else {
        return std::future::pending().await;
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
}
