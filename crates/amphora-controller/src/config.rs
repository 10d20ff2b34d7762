//! Controller configuration, read from upstream's `octavia.conf`.
//!
//! Option names and defaults are upstream's where an option exists; the few
//! of our own are marked as such. Reading and error reporting are the
//! workspace's oslo.config machinery (`oslo-ini`), shared with the agent.

use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use oslo_ini::{ConfigError, ConfigWarning, Layers, parse_list};

/// Where upstream keeps its configuration.
pub const DEFAULT_CONFIG_FILE: &str = "/etc/octavia/octavia.conf";

#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    pub debug: bool,
    /// Our option `[DEFAULT] release_memory_after_idle`: after this long
    /// without work the process hands its unused memory back
    /// (`crate::memory`); zero: never.
    pub release_memory_after_idle: Duration,
    pub api: ApiSettings,
    pub database: Database,
    pub worker: ControllerWorker,
    pub health: HealthManager,
    pub housekeeping: HouseKeeping,
    pub keystone: Option<KeystoneAuthtoken>,
    pub noop: NoopDrivers,
    pub certificates: Certificates,
    pub amphora_connection: AmphoraConnection,
    pub haproxy_amphora: HaproxyAmphora,
    pub keepalived_vrrp: KeepalivedVrrp,
    pub amphora_agent: AmphoraAgent,
    /// Our extension: the local drivers' networks (`crate::local`).
    pub local_network: crate::local::LocalNetworkSettings,
    /// Our extension: the local compute driver (`crate::local`).
    pub local_compute: crate::local::LocalComputeSettings,
}

/// The key type of the certificates the controller's CA issues.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CertKeyAlgorithm {
    EcdsaP256,
    Rsa2048,
}

/// `[certificates]` and the certificate paths of `[haproxy_amphora]` and
/// `[controller_worker]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Certificates {
    pub ca_certificate: PathBuf,
    pub ca_private_key: PathBuf,
    /// Lifetime of issued certificates (`cert_validity_time`, seconds).
    pub cert_validity_time: Duration,
    /// Our option `key_algorithm`: `ecdsa_p256` (default) or `rsa2048`.
    pub key_algorithm: CertKeyAlgorithm,
    /// The controller's client certificate and key (`[haproxy_amphora]
    /// client_cert`), issued by the CA when missing.
    pub client_cert: PathBuf,
    /// The CA that signs amphora server certificates (`[haproxy_amphora]
    /// server_ca`); our CA when unset.
    pub server_ca: PathBuf,
    /// The CA the agents trust for the controller's client certificate
    /// (`[controller_worker] client_ca`); our CA when unset.
    pub client_ca: PathBuf,
}

/// How the controller reaches agents (`[haproxy_amphora]`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AmphoraConnection {
    pub connection_max_retries: u32,
    pub connection_retry_interval: Duration,
    /// Retries towards amphorae that already answered once.
    pub active_connection_max_retries: u32,
    pub active_connection_retry_interval: Duration,
    pub rest_request_conn_timeout: Duration,
    pub rest_request_read_timeout: Duration,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthStrategy {
    /// Every caller is an administrator (upstream's `noauth`).
    Noauth,
    /// Tokens are validated by Keystone.
    Keystone,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ApiSettings {
    pub bind_host: IpAddr,
    pub bind_port: u16,
    pub auth_strategy: AuthStrategy,
    /// Base of the links in list answers; `None` uses the request's host.
    pub api_base_uri: Option<String>,
    pub pagination_max_limit: u64,
    pub allow_pagination: bool,
    pub allow_sorting: bool,
    pub allow_filtering: bool,
    pub allow_field_selection: bool,
    /// Our extension: the largest request body accepted, in bytes.
    pub max_request_body_size: usize,
    /// Cipher suites only TLSv1.3 knows (haproxy takes them apart from the
    /// others).
    pub tls1_3_supported_ciphers: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Database {
    /// `sqlite:///path/file.db` (upstream's SQLAlchemy spelling),
    /// `sqlite:/path` or `postgresql://...` / `postgres://...`.
    pub connection: String,
    /// `max_pool_size` (oslo.db's name): connections one process opens at
    /// most; unset: 8 on SQLite, 16 on PostgreSQL.
    pub max_pool_size: Option<u32>,
    /// `connection_recycle_time` (oslo.db's name and default, 3600 s): a
    /// connection this old is replaced; zero: never.
    pub connection_recycle_time: Duration,
    /// Our option `pool_idle_timeout` (60 s): a connection unused this
    /// long is closed; zero: never.
    pub pool_idle_timeout: Duration,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Topology {
    Single,
    ActiveStandby,
}

impl Topology {
    pub fn as_str(self) -> &'static str {
        match self {
            Topology::Single => "SINGLE",
            Topology::ActiveStandby => "ACTIVE_STANDBY",
        }
    }

    pub fn parse(value: &str) -> Option<Self> {
        match value {
            "SINGLE" => Some(Topology::Single),
            "ACTIVE_STANDBY" => Some(Topology::ActiveStandby),
            _ => None,
        }
    }

    /// Amphorae per load balancer.
    pub fn amphora_count(self) -> usize {
        match self {
            Topology::Single => 1,
            Topology::ActiveStandby => 2,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ControllerWorker {
    pub loadbalancer_topology: Topology,
    pub amphora_driver: String,
    pub compute_driver: String,
    pub network_driver: String,
    pub amp_image_id: Option<String>,
    pub amp_flavor_id: Option<String>,
    /// Flows run at once by one worker process.
    pub workers: usize,
    /// Our extension: seconds after which another worker may take over a job
    /// whose worker stopped renewing its lease.
    pub job_lease: Duration,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthManager {
    pub bind_ip: IpAddr,
    pub bind_port: u16,
    pub heartbeat_interval: u64,
    pub heartbeat_timeout: u64,
    pub health_check_interval: u64,
    pub failover_threshold: Option<u64>,
    pub heartbeat_key: Option<String>,
    pub controller_ip_port_list: Vec<String>,
    /// Heartbeat batches applied at once on PostgreSQL (each amphora's
    /// always by the same updater); `None`: one per CPU, as upstream's
    /// default. SQLite has one writer, so one there.
    pub health_update_threads: Option<usize>,
    /// `sock_rlimit` (upstream's option): the heartbeat socket's receive
    /// buffer, bytes. Upstream's 0 leaves the kernel's default (about 200
    /// KiB, a few milliseconds of a large fleet's heartbeats); ours then
    /// asks for [`DEFAULT_HEARTBEAT_RCVBUF`], which the kernel caps at
    /// `net.core.rmem_max`.
    pub sock_rlimit: usize,
}

/// The heartbeat socket's receive buffer asked for when `sock_rlimit` is 0.
pub const DEFAULT_HEARTBEAT_RCVBUF: usize = 4 << 20;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HouseKeeping {
    pub cleanup_interval: u64,
    pub amphora_expiry_age: u64,
    pub load_balancer_expiry_age: u64,
    /// Seconds between certificate rotation passes.
    pub cert_interval: u64,
    /// Amphora certificates expiring within this many seconds are rotated.
    pub cert_expiry_buffer: u64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeystoneAuthtoken {
    pub www_authenticate_uri: Option<String>,
    pub auth_url: String,
    pub username: String,
    pub password: String,
    pub project_name: String,
    pub user_domain_name: String,
    pub project_domain_name: String,
}

/// Our extension: how long each step of the noop drivers takes, so clients
/// can see PENDING states as they do with upstream's noop drivers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NoopDrivers {
    pub step_delay: Duration,
}

/// `[haproxy_amphora]`: what the controller renders into haproxy's file and
/// the agent's configuration (upstream's options and defaults).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HaproxyAmphora {
    pub base_path: String,
    pub base_cert_dir: String,
    pub connection_logging: bool,
    pub haproxy_stick_size: String,
    pub user_log_format: String,
    pub bind_host: IpAddr,
    pub bind_port: u16,
    pub haproxy_cmd: String,
    pub timeout_client_data: i64,
    pub timeout_member_connect: i64,
    pub timeout_member_data: i64,
    pub timeout_tcp_inspect: i64,
    pub default_connection_limit: i64,
}

/// `[keepalived_vrrp]`, upstream's options and defaults.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeepalivedVrrp {
    pub vrrp_advert_int: u64,
    pub vrrp_check_interval: u64,
    pub vrrp_fail_count: u64,
    pub vrrp_success_count: u64,
    pub vrrp_garp_refresh_interval: u64,
    pub vrrp_garp_refresh_count: u64,
}

/// `[amphora_agent]`: the options the controller writes into each agent's
/// configuration (upstream's defaults).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AmphoraAgent {
    pub agent_server_ca: String,
    pub agent_server_cert: String,
    pub agent_server_network_dir: Option<String>,
    pub agent_request_read_timeout: u64,
    pub agent_tls_protocol: String,
    pub amphora_udp_driver: String,
    pub user_log_facility: u8,
    pub administrative_log_facility: u8,
}

/// Upstream's `user_log_format` default.
pub const DEFAULT_USER_LOG_FORMAT: &str =
    "{{ project_id }} {{ lb_id }} %f %ci %cp %t %{+Q}r %ST %B %U %[ssl_c_verify] %{+Q}[ssl_c_s_dn] %b %s %Tt %tsc";

/// Upstream's `[api_settings] tls1_3_supported_ciphers` default.
pub const DEFAULT_TLS1_3_SUPPORTED_CIPHERS: &str = "TLS_AES_128_GCM_SHA256:TLS_AES_256_GCM_SHA384:TLS_CHACHA20_POLY1305_SHA256:TLS_AES_128_CCM_SHA256:TLS_AES_128_CCM_8_SHA256";

const KNOWN_OPTIONS: &oslo_ini::KnownOptions = &[
    (
        "DEFAULT",
        &[
            "debug",
            "host",
            "log_file",
            "log_dir",
            "use_stderr",
            "use_syslog",
            "transport_url",
            "verbose",
            "bind_host",
            "bind_port",
            "release_memory_after_idle",
        ],
    ),
    (
        "api_settings",
        &[
            "bind_host",
            "bind_port",
            "auth_strategy",
            "api_base_uri",
            "pagination_max_limit",
            "allow_pagination",
            "allow_sorting",
            "allow_filtering",
            "allow_field_selection",
            "max_request_body_size",
            "api_handler",
            "enabled_provider_drivers",
            "default_provider_driver",
            "healthcheck_enabled",
            "tls1_3_supported_ciphers",
        ],
    ),
    (
        "database",
        &[
            "connection",
            "max_retries",
            "pool_timeout",
            "max_pool_size",
            "max_overflow",
            "connection_recycle_time",
            "pool_idle_timeout",
        ],
    ),
    (
        "controller_worker",
        &[
            "loadbalancer_topology",
            "amphora_driver",
            "compute_driver",
            "network_driver",
            "amp_image_id",
            "amp_image_tag",
            "amp_flavor_id",
            "amp_boot_network_list",
            "amp_secgroup_list",
            "amp_ssh_key_name",
            "client_ca",
            "workers",
            "job_lease",
        ],
    ),
    (
        "health_manager",
        &[
            "bind_ip",
            "bind_port",
            "heartbeat_interval",
            "heartbeat_timeout",
            "health_check_interval",
            "failover_threshold",
            "heartbeat_key",
            "controller_ip_port_list",
            "health_update_threads",
            "stats_update_threads",
            "sock_rlimit",
            "failover_threads",
        ],
    ),
    (
        "house_keeping",
        &[
            "cleanup_interval",
            "amphora_expiry_age",
            "load_balancer_expiry_age",
            "cert_interval",
            "cert_expiry_buffer",
            "cert_rotate_threads",
        ],
    ),
    (
        "keystone_authtoken",
        &[
            "www_authenticate_uri",
            "auth_uri",
            "auth_url",
            "auth_type",
            "username",
            "password",
            "project_name",
            "user_domain_name",
            "project_domain_name",
            "memcached_servers",
            "service_token_roles_required",
        ],
    ),
    (
        "service_auth",
        &["auth_url", "auth_type", "username", "password", "project_name", "user_domain_name", "project_domain_name"],
    ),
    (
        "haproxy_amphora",
        &[
            "connection_max_retries",
            "connection_retry_interval",
            "active_connection_max_retries",
            "active_connection_retry_interval",
            "rest_request_conn_timeout",
            "rest_request_read_timeout",
            "client_cert",
            "server_ca",
            "base_path",
            "base_cert_dir",
            "haproxy_template",
            "connection_logging",
            "haproxy_stick_size",
            "user_log_format",
            "bind_host",
            "bind_port",
            "haproxy_cmd",
            "timeout_client_data",
            "timeout_member_connect",
            "timeout_member_data",
            "timeout_tcp_inspect",
            "default_connection_limit",
        ],
    ),
    (
        "keepalived_vrrp",
        &[
            "vrrp_advert_int",
            "vrrp_check_interval",
            "vrrp_fail_count",
            "vrrp_success_count",
            "vrrp_garp_refresh_interval",
            "vrrp_garp_refresh_count",
        ],
    ),
    (
        "amphora_agent",
        &[
            "agent_server_ca",
            "agent_server_cert",
            "agent_server_network_dir",
            "agent_request_read_timeout",
            "agent_tls_protocol",
            "amphora_udp_driver",
            "user_log_facility",
            "administrative_log_facility",
        ],
    ),
    (
        "certificates",
        &[
            "ca_certificate",
            "ca_private_key",
            "ca_private_key_passphrase",
            "server_certs_key_passphrase",
            "cert_generator",
            "cert_validity_time",
            "key_algorithm",
        ],
    ),
    ("oslo_messaging", &["topic"]),
    ("task_flow", &["jobboard_enabled"]),
    ("noop_drivers", &["step_delay"]),
    ("local_network", crate::local::NETWORK_OPTIONS),
    ("local_compute", crate::local::COMPUTE_OPTIONS),
];

/// A parsed configuration and what the operator should be told about it.
#[derive(Debug)]
pub struct Loaded {
    pub config: Config,
    pub warnings: Vec<ConfigWarning>,
}

pub fn load(paths: &[PathBuf]) -> Result<Loaded, ConfigError> {
    from_layers(Layers::load(KNOWN_OPTIONS, paths)?)
}

/// Parses configuration texts (tests, and `--config-file` given inline).
pub fn parse<'a>(sources: impl IntoIterator<Item = (&'a std::path::Path, &'a str)>) -> Result<Loaded, ConfigError> {
    let mut layers = Layers::new(KNOWN_OPTIONS);
    for (path, text) in sources {
        layers.add(path, text)?;
    }
    from_layers(layers)
}

fn ip(v: &str) -> Result<IpAddr, String> {
    v.parse().map_err(|_| "expected an IP address".to_owned())
}

fn port(v: &str) -> Result<u16, String> {
    oslo_ini::parse_int(v, 0, 65535).map(|n| n as u16)
}

fn path(v: &str) -> Result<PathBuf, String> {
    if v.is_empty() { Err("expected a path".into()) } else { Ok(PathBuf::from(v)) }
}

fn seconds(v: &str) -> Result<Duration, String> {
    let s: f64 = v.parse().map_err(|_| "expected a number of seconds".to_owned())?;
    if !(0.0..=86_400.0).contains(&s) {
        return Err("expected a number of seconds from 0 to 86400".into());
    }
    Ok(Duration::from_secs_f64(s))
}

fn signed(v: &str) -> Result<i64, String> {
    v.trim().parse().map_err(|_| "expected an integer".to_owned())
}

fn from_layers(mut layers: Layers) -> Result<Loaded, ConfigError> {
    let warnings = layers.take_warnings();
    let l = &layers;
    let api = ApiSettings {
        bind_host: l.get("api_settings", "bind_host", IpAddr::from([127, 0, 0, 1]), ip)?,
        bind_port: l.get("api_settings", "bind_port", 9876, port)?,
        auth_strategy: l.get("api_settings", "auth_strategy", AuthStrategy::Keystone, |v| match v {
            "noauth" => Ok(AuthStrategy::Noauth),
            "keystone" => Ok(AuthStrategy::Keystone),
            _ => Err("expected noauth or keystone".into()),
        })?,
        api_base_uri: l.optional_string("api_settings", "api_base_uri")?.map(|s| s.trim_end_matches('/').to_owned()),
        pagination_max_limit: l.get("api_settings", "pagination_max_limit", 1000, |v| {
            if v == "infinite" { Ok(u64::MAX) } else { oslo_ini::parse_int(v, 1, u64::MAX) }
        })?,
        allow_pagination: l.bool("api_settings", "allow_pagination", true)?,
        allow_sorting: l.bool("api_settings", "allow_sorting", true)?,
        allow_filtering: l.bool("api_settings", "allow_filtering", true)?,
        allow_field_selection: l.bool("api_settings", "allow_field_selection", true)?,
        max_request_body_size: l.int("api_settings", "max_request_body_size", 1024 * 1024, 1024, 1 << 30)? as usize,
        tls1_3_supported_ciphers: l.string(
            "api_settings",
            "tls1_3_supported_ciphers",
            DEFAULT_TLS1_3_SUPPORTED_CIPHERS,
        )?,
    };
    let database = Database {
        connection: l.string("database", "connection", "sqlite:///var/lib/octavia/octavia.db")?,
        max_pool_size: l.get("database", "max_pool_size", None, |v| {
            if v.is_empty() { Ok(None) } else { oslo_ini::parse_int(v, 1, 10_000).map(|n| Some(n as u32)) }
        })?,
        connection_recycle_time: Duration::from_secs(l.int(
            "database",
            "connection_recycle_time",
            3600,
            0,
            86_400 * 365,
        )?),
        pool_idle_timeout: l.get("database", "pool_idle_timeout", Duration::from_secs(60), seconds)?,
    };
    let worker = ControllerWorker {
        loadbalancer_topology: l.get("controller_worker", "loadbalancer_topology", Topology::Single, |v| {
            Topology::parse(v).ok_or_else(|| "expected SINGLE or ACTIVE_STANDBY".to_owned())
        })?,
        amphora_driver: l.string("controller_worker", "amphora_driver", "amphora_noop_driver")?,
        compute_driver: l.string("controller_worker", "compute_driver", "compute_noop_driver")?,
        network_driver: l.string("controller_worker", "network_driver", "network_noop_driver")?,
        amp_image_id: l.optional_string("controller_worker", "amp_image_id")?,
        amp_flavor_id: l.optional_string("controller_worker", "amp_flavor_id")?,
        workers: l.int("controller_worker", "workers", 8, 1, 1024)? as usize,
        job_lease: l.get("controller_worker", "job_lease", Duration::from_secs(30), seconds)?,
    };
    let health = HealthManager {
        bind_ip: l.get("health_manager", "bind_ip", IpAddr::from([127, 0, 0, 1]), ip)?,
        bind_port: l.get("health_manager", "bind_port", 5555, port)?,
        heartbeat_interval: l.int("health_manager", "heartbeat_interval", 10, 1, 86_400)?,
        heartbeat_timeout: l.int("health_manager", "heartbeat_timeout", 60, 1, 86_400)?,
        health_check_interval: l.int("health_manager", "health_check_interval", 3, 1, 86_400)?,
        failover_threshold: l.get("health_manager", "failover_threshold", None, |v| {
            if v.is_empty() { Ok(None) } else { oslo_ini::parse_int(v, 1, u64::MAX).map(Some) }
        })?,
        heartbeat_key: l.optional_string("health_manager", "heartbeat_key")?,
        controller_ip_port_list: l
            .get("health_manager", "controller_ip_port_list", Vec::new(), |v| Ok(parse_list(v)))?,
        health_update_threads: l.get("health_manager", "health_update_threads", None, |v| {
            if v.is_empty() { Ok(None) } else { oslo_ini::parse_int(v, 1, 64).map(|n| Some(n as usize)) }
        })?,
        sock_rlimit: l.int("health_manager", "sock_rlimit", 0, 0, i32::MAX as u64)? as usize,
    };
    let housekeeping = HouseKeeping {
        cleanup_interval: l.int("house_keeping", "cleanup_interval", 30, 1, 86_400)?,
        amphora_expiry_age: l.int("house_keeping", "amphora_expiry_age", 604_800, 0, u64::MAX)?,
        load_balancer_expiry_age: l.int("house_keeping", "load_balancer_expiry_age", 604_800, 0, u64::MAX)?,
        cert_interval: l.int("house_keeping", "cert_interval", 3600, 1, 86_400 * 365)?,
        cert_expiry_buffer: l.int("house_keeping", "cert_expiry_buffer", 1_209_600, 0, 86_400 * 3650)?,
    };
    let keystone = if api.auth_strategy == AuthStrategy::Keystone {
        Some(KeystoneAuthtoken {
            www_authenticate_uri: l.optional_string("keystone_authtoken", "www_authenticate_uri")?,
            auth_url: l.required("keystone_authtoken", "auth_url")?.trim_end_matches('/').to_owned(),
            username: l.required("keystone_authtoken", "username")?,
            password: l.required("keystone_authtoken", "password")?,
            project_name: l.required("keystone_authtoken", "project_name")?,
            user_domain_name: l.string("keystone_authtoken", "user_domain_name", "Default")?,
            project_domain_name: l.string("keystone_authtoken", "project_domain_name", "Default")?,
        })
    } else {
        None
    };
    let noop = NoopDrivers { step_delay: l.get("noop_drivers", "step_delay", Duration::from_millis(50), seconds)? };
    l.get("certificates", "ca_private_key_passphrase", (), |v| {
        if v.is_empty() {
            Ok(())
        } else {
            Err("encrypted CA keys are not supported: store the key unencrypted with mode 0600".into())
        }
    })?;
    let ca_certificate = l.path("certificates", "ca_certificate", "/etc/octavia/certs/ca_01.pem")?;
    let certificates = Certificates {
        ca_private_key: l.path("certificates", "ca_private_key", "/etc/octavia/certs/private/cakey.pem")?,
        cert_validity_time: Duration::from_secs(l.int(
            "certificates",
            "cert_validity_time",
            63_072_000,
            60,
            3_153_600_000,
        )?),
        key_algorithm: l.get("certificates", "key_algorithm", CertKeyAlgorithm::EcdsaP256, |v| match v {
            "ecdsa_p256" => Ok(CertKeyAlgorithm::EcdsaP256),
            "rsa2048" => Ok(CertKeyAlgorithm::Rsa2048),
            _ => Err("expected ecdsa_p256 or rsa2048".into()),
        })?,
        client_cert: l.path("haproxy_amphora", "client_cert", "/etc/octavia/certs/client.pem")?,
        server_ca: l.get("haproxy_amphora", "server_ca", ca_certificate.clone(), path)?,
        client_ca: l.get("controller_worker", "client_ca", ca_certificate.clone(), path)?,
        ca_certificate,
    };
    let amphora_connection = AmphoraConnection {
        connection_max_retries: l.int("haproxy_amphora", "connection_max_retries", 120, 1, 1_000_000)? as u32,
        connection_retry_interval: l.get(
            "haproxy_amphora",
            "connection_retry_interval",
            Duration::from_secs(5),
            seconds,
        )?,
        active_connection_max_retries: l.int("haproxy_amphora", "active_connection_max_retries", 15, 1, 1_000_000)?
            as u32,
        active_connection_retry_interval: l.get(
            "haproxy_amphora",
            "active_connection_retry_interval",
            Duration::from_secs(2),
            seconds,
        )?,
        rest_request_conn_timeout: l.get(
            "haproxy_amphora",
            "rest_request_conn_timeout",
            Duration::from_secs(10),
            seconds,
        )?,
        rest_request_read_timeout: l.get(
            "haproxy_amphora",
            "rest_request_read_timeout",
            Duration::from_secs(60),
            seconds,
        )?,
    };
    let h = "haproxy_amphora";
    let haproxy_amphora = HaproxyAmphora {
        base_path: l.string(h, "base_path", "/var/lib/octavia")?,
        base_cert_dir: l.string(h, "base_cert_dir", "/var/lib/octavia/certs")?,
        connection_logging: l.bool(h, "connection_logging", true)?,
        haproxy_stick_size: l.get(h, "haproxy_stick_size", "10k".to_owned(), |v| {
            let digits = v.trim_end_matches(['k', 'm', 'g']);
            if !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()) {
                Ok(v.to_owned())
            } else {
                Err("expected a size: digits with an optional k, m or g suffix".into())
            }
        })?,
        user_log_format: l.string(h, "user_log_format", DEFAULT_USER_LOG_FORMAT)?,
        bind_host: l.get(h, "bind_host", IpAddr::from([0u16; 8]), ip)?,
        bind_port: l.get(h, "bind_port", 9443, port)?,
        haproxy_cmd: l.string(h, "haproxy_cmd", "/usr/sbin/haproxy")?,
        timeout_client_data: l.get(h, "timeout_client_data", 50_000, signed)?,
        timeout_member_connect: l.get(h, "timeout_member_connect", 5_000, signed)?,
        timeout_member_data: l.get(h, "timeout_member_data", 50_000, signed)?,
        timeout_tcp_inspect: l.get(h, "timeout_tcp_inspect", 0, signed)?,
        default_connection_limit: l.get(h, "default_connection_limit", 50_000, signed)?,
    };
    let k = "keepalived_vrrp";
    let keepalived_vrrp = KeepalivedVrrp {
        vrrp_advert_int: l.int(k, "vrrp_advert_int", 1, 1, 255)?,
        vrrp_check_interval: l.int(k, "vrrp_check_interval", 5, 1, 86_400)?,
        vrrp_fail_count: l.int(k, "vrrp_fail_count", 2, 1, 1_000)?,
        vrrp_success_count: l.int(k, "vrrp_success_count", 2, 1, 1_000)?,
        vrrp_garp_refresh_interval: l.int(k, "vrrp_garp_refresh_interval", 5, 0, 86_400)?,
        vrrp_garp_refresh_count: l.int(k, "vrrp_garp_refresh_count", 2, 0, 1_000)?,
    };
    let a = "amphora_agent";
    let amphora_agent = AmphoraAgent {
        agent_server_ca: l.string(a, "agent_server_ca", "/etc/octavia/certs/client_ca.pem")?,
        agent_server_cert: l.string(a, "agent_server_cert", "/etc/octavia/certs/server.pem")?,
        agent_server_network_dir: l.optional_string(a, "agent_server_network_dir")?,
        agent_request_read_timeout: l.int(a, "agent_request_read_timeout", 180, 1, 86_400)?,
        agent_tls_protocol: l.get(a, "agent_tls_protocol", "TLSv1.2".to_owned(), |v| {
            if ["SSLv3", "TLSv1", "TLSv1.1", "TLSv1.2", "TLSv1.3"].contains(&v) {
                Ok(v.to_owned())
            } else {
                Err("expected one of SSLv3, TLSv1, TLSv1.1, TLSv1.2, TLSv1.3".into())
            }
        })?,
        amphora_udp_driver: l.string(a, "amphora_udp_driver", "keepalived_lvs")?,
        user_log_facility: l.int(a, "user_log_facility", 0, 0, 7)? as u8,
        administrative_log_facility: l.int(a, "administrative_log_facility", 1, 0, 7)? as u8,
    };
    let mut config = Config {
        debug: l.bool("DEFAULT", "debug", false)?,
        release_memory_after_idle: l.get("DEFAULT", "release_memory_after_idle", Duration::from_secs(1), seconds)?,
        api,
        database,
        worker,
        health,
        housekeeping,
        keystone,
        noop,
        certificates,
        haproxy_amphora,
        keepalived_vrrp,
        amphora_connection,
        amphora_agent,
        local_network: crate::local::LocalNetworkSettings::from_layers(l)?,
        local_compute: crate::local::LocalComputeSettings::from_layers(l)?,
    };
    if config.worker.network_driver == "local" {
        // The controller's address on the local management network is
        // where amphorae send heartbeats, unless told otherwise.
        let controller = config.local_network.controller_ip();
        if l.optional_string("health_manager", "bind_ip")?.is_none() {
            config.health.bind_ip = controller;
        }
        if config.health.controller_ip_port_list.is_empty() {
            let addr = std::net::SocketAddr::new(controller, config.health.bind_port);
            config.health.controller_ip_port_list.push(addr.to_string());
        }
    }
    Ok(Loaded { config, warnings })
}

impl Config {
    /// The defaults with noauth and the given database: for tests and the
    /// development script.
    pub fn for_tests(connection: &str) -> Config {
        let text = format!(
            "[api_settings]\nauth_strategy = noauth\n[database]\nconnection = {connection}\n[noop_drivers]\nstep_delay = 0\n"
        );
        parse([(std::path::Path::new("<tests>"), text.as_str())]).expect("valid test configuration").config
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    #[test]
    fn defaults_are_upstreams() {
        let c = parse([(Path::new("/o.conf"), "[api_settings]\nauth_strategy = noauth\n")]).expect("valid").config;
        assert_eq!(c.api.bind_port, 9876);
        assert_eq!(c.api.pagination_max_limit, 1000);
        assert_eq!(c.health.heartbeat_timeout, 60);
        assert_eq!(c.health.health_check_interval, 3);
        assert_eq!(c.health.bind_port, 5555);
        assert_eq!(c.health.sock_rlimit, 0);
        assert_eq!(c.worker.loadbalancer_topology, Topology::Single);
        assert!(c.keystone.is_none());
    }

    #[test]
    fn rendering_options_default_to_upstreams() {
        let c = parse([(Path::new("/o.conf"), "[api_settings]\nauth_strategy = noauth\n")]).expect("valid").config;
        let h = &c.haproxy_amphora;
        assert_eq!((h.base_path.as_str(), h.base_cert_dir.as_str()), ("/var/lib/octavia", "/var/lib/octavia/certs"));
        assert_eq!((h.haproxy_stick_size.as_str(), h.default_connection_limit), ("10k", 50_000));
        assert_eq!(
            (h.timeout_client_data, h.timeout_member_connect, h.timeout_member_data, h.timeout_tcp_inspect),
            (50_000, 5_000, 50_000, 0)
        );
        assert!(h.connection_logging);
        assert_eq!((h.bind_host.to_string().as_str(), h.bind_port), ("::", 9443));
        let k = &c.keepalived_vrrp;
        assert_eq!((k.vrrp_advert_int, k.vrrp_check_interval, k.vrrp_fail_count, k.vrrp_success_count), (1, 5, 2, 2));
        assert_eq!((k.vrrp_garp_refresh_interval, k.vrrp_garp_refresh_count), (5, 2));
        let a = &c.amphora_agent;
        assert_eq!((a.user_log_facility, a.administrative_log_facility), (0, 1));
        assert_eq!((a.agent_tls_protocol.as_str(), a.agent_request_read_timeout), ("TLSv1.2", 180));
        assert!(c.api.tls1_3_supported_ciphers.starts_with("TLS_AES_128_GCM_SHA256:"));
    }

    #[test]
    fn bad_rendering_options_name_the_option() {
        for (text, option) in [
            ("[haproxy_amphora]\nhaproxy_stick_size = lots\n", "[haproxy_amphora] haproxy_stick_size"),
            ("[haproxy_amphora]\ntimeout_client_data = soon\n", "[haproxy_amphora] timeout_client_data"),
            ("[amphora_agent]\nuser_log_facility = 8\n", "[amphora_agent] user_log_facility"),
            ("[amphora_agent]\nagent_tls_protocol = TLSv9\n", "[amphora_agent] agent_tls_protocol"),
        ] {
            let text = format!("[api_settings]\nauth_strategy = noauth\n{text}");
            let err = parse([(Path::new("/o.conf"), text.as_str())]).expect_err("invalid").to_string();
            assert!(err.contains(option), "{err}");
        }
    }

    #[test]
    fn keystone_needs_its_credentials() {
        let err = parse([(Path::new("/o.conf"), "[api_settings]\nauth_strategy = keystone\n")]).expect_err("missing");
        assert!(err.to_string().contains("[keystone_authtoken] auth_url"), "{err}");
    }

    #[test]
    fn bad_values_name_the_option() {
        let err = parse([(Path::new("/o.conf"), "[controller_worker]\nloadbalancer_topology = ACTIVE\n")])
            .expect_err("invalid")
            .to_string();
        assert!(err.contains("[controller_worker] loadbalancer_topology"), "{err}");
    }
}
