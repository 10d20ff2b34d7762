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
    pub api: ApiSettings,
    pub database: Database,
    pub worker: ControllerWorker,
    pub health: HealthManager,
    pub housekeeping: HouseKeeping,
    pub keystone: Option<KeystoneAuthtoken>,
    pub noop: NoopDrivers,
    /// Our extension: the local drivers' networks (`crate::local`).
    pub local_network: crate::local::LocalNetworkSettings,
    /// Our extension: the local compute driver (`crate::local`).
    pub local_compute: crate::local::LocalComputeSettings,
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
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Database {
    /// `sqlite:///path/file.db` (upstream's SQLAlchemy spelling),
    /// `sqlite:/path` or `postgresql://...` / `postgres://...`.
    pub connection: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
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
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HouseKeeping {
    pub cleanup_interval: u64,
    pub amphora_expiry_age: u64,
    pub load_balancer_expiry_age: u64,
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
        ],
    ),
    (
        "database",
        &["connection", "max_retries", "pool_timeout", "max_pool_size", "max_overflow", "connection_recycle_time"],
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

fn seconds(v: &str) -> Result<Duration, String> {
    let s: f64 = v.parse().map_err(|_| "expected a number of seconds".to_owned())?;
    if !(0.0..=86_400.0).contains(&s) {
        return Err("expected a number of seconds from 0 to 86400".into());
    }
    Ok(Duration::from_secs_f64(s))
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
    };
    let database = Database { connection: l.string("database", "connection", "sqlite:///var/lib/octavia/octavia.db")? };
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
    };
    let housekeeping = HouseKeeping {
        cleanup_interval: l.int("house_keeping", "cleanup_interval", 30, 1, 86_400)?,
        amphora_expiry_age: l.int("house_keeping", "amphora_expiry_age", 604_800, 0, u64::MAX)?,
        load_balancer_expiry_age: l.int("house_keeping", "load_balancer_expiry_age", 604_800, 0, u64::MAX)?,
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
    let config = Config {
        debug: l.bool("DEFAULT", "debug", false)?,
        api,
        database,
        worker,
        health,
        housekeeping,
        keystone,
        noop,
        local_network: crate::local::LocalNetworkSettings::from_layers(l)?,
        local_compute: crate::local::LocalComputeSettings::from_layers(l)?,
    };
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
        assert_eq!(c.worker.loadbalancer_topology, Topology::Single);
        assert!(c.keystone.is_none());
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
