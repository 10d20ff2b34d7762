//! Agent configuration, read from upstream Octavia's `amphora-agent.conf`.
//!
//! The files are oslo.config INI files: `[section]` headers, `key = value`
//! lines, `#`/`;` comments, indented continuation lines. Several files may be
//! given; a later file overrides an earlier one key by key. Every option has
//! upstream's default. Errors name the file, section and key so an operator
//! can fix the image without reading code; options we do not know are
//! ignored with a warning, as oslo.config ignores them silently.

use std::net::IpAddr;
use std::path::{Path, PathBuf};

pub use oslo_ini::{ConfigError, ConfigWarning, FileList, parse_bool};
use oslo_ini::{Layers, parse_absolute_path, parse_int, parse_list};

/// Default location of the agent configuration, as upstream's image has it.
pub const DEFAULT_CONFIG_FILE: &str = "/etc/octavia/amphora-agent.conf";

/// The whole agent configuration, typed and validated.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// `[DEFAULT] debug`: log at debug level.
    pub debug: bool,
    pub haproxy_amphora: HaproxyAmphora,
    pub health_manager: HealthManager,
    pub amphora_agent: AmphoraAgent,
    pub controller_worker: ControllerWorker,
}

#[derive(Debug, Clone, PartialEq)]
pub struct HaproxyAmphora {
    /// Directory holding one sub-directory per load balancer.
    pub base_path: PathBuf,
    /// Directory holding one sub-directory of certificates per load balancer.
    pub base_cert_dir: PathBuf,
    pub bind_host: IpAddr,
    pub bind_port: u16,
    pub haproxy_cmd: PathBuf,
    /// Group haproxy drops to; `None` detects it as upstream's image does.
    pub user_group: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthManager {
    pub controller_ip_port_list: Vec<String>,
    /// Seconds between heartbeats.
    pub heartbeat_interval: u64,
    pub heartbeat_key: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AmphoraAgent {
    pub agent_server_ca: PathBuf,
    pub agent_server_cert: PathBuf,
    pub agent_server_network_dir: Option<PathBuf>,
    /// Seconds a client may take to send a request.
    pub agent_request_read_timeout: u64,
    pub amphora_id: String,
    pub agent_tls_protocol: TlsProtocol,
    pub amphora_udp_driver: String,
    /// Our extension: the network namespace haproxy runs in. Empty means the
    /// agent's own namespace (development only).
    pub network_namespace: Option<String>,
    /// Our extension: the largest request body accepted, in bytes.
    pub max_request_body_size: usize,
    /// Our extension: which APIs are served ("0.1", "1.0", "appliance").
    pub api_versions: Vec<String>,
}

/// Every API the agent can serve.
pub const API_VERSIONS: &[&str] = &["0.1", "1.0", "appliance"];

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ControllerWorker {
    pub loadbalancer_topology: Topology,
}

/// Minimum TLS version offered to the controller.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TlsProtocol {
    Tls12,
    Tls13,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Topology {
    Single,
    ActiveStandby,
}

impl Topology {
    /// The spelling upstream's agent and controller use.
    pub fn as_str(self) -> &'static str {
        match self {
            Topology::Single => "SINGLE",
            Topology::ActiveStandby => "ACTIVE_STANDBY",
        }
    }
}

/// Options we read, plus upstream options the agent template writes that we
/// accept without acting on them (so they do not draw warnings).
const KNOWN_OPTIONS: &oslo_ini::KnownOptions = &[
    (
        "DEFAULT",
        &["debug", "use_syslog", "syslog_log_facility", "log_file", "log_dir", "use_stderr", "use_journal", "host"],
    ),
    (
        "haproxy_amphora",
        &[
            "base_path",
            "base_cert_dir",
            "bind_host",
            "bind_port",
            "haproxy_cmd",
            "user_group",
            "user_log_facility",
            "administrative_log_facility",
            "lb_network_interface",
            "respawn_count",
            "respawn_interval",
        ],
    ),
    ("health_manager", &["controller_ip_port_list", "heartbeat_interval", "heartbeat_key"]),
    (
        "amphora_agent",
        &[
            "agent_server_ca",
            "agent_server_cert",
            "agent_server_network_dir",
            "agent_request_read_timeout",
            "amphora_id",
            "agent_tls_protocol",
            "amphora_udp_driver",
            "network_namespace",
            "max_request_body_size",
            "api_versions",
            "admin_log_targets",
            "tenant_log_targets",
            "user_log_facility",
            "administrative_log_facility",
            "log_protocol",
            "log_retry_count",
            "log_retry_interval",
            "log_queue_size",
            "logging_template_override",
            "forward_all_logs",
            "disable_local_log_storage",
        ],
    ),
    ("controller_worker", &["loadbalancer_topology"]),
];

fn parse_tls_protocol(value: &str, warnings: &mut Vec<ConfigWarning>) -> Result<TlsProtocol, String> {
    match value {
        "TLSv1.3" => Ok(TlsProtocol::Tls13),
        "TLSv1.2" => Ok(TlsProtocol::Tls12),
        "SSLv2" | "SSLv3" | "TLSv1" | "TLSv1.1" => {
            warnings
                .push(ConfigWarning(format!("agent_tls_protocol {value} is obsolete; accepting TLSv1.2 and later")));
            Ok(TlsProtocol::Tls12)
        }
        _ => Err("expected one of SSLv2, SSLv3, TLSv1, TLSv1.1, TLSv1.2, TLSv1.3".into()),
    }
}

fn parse_topology(value: &str) -> Result<Topology, String> {
    match value {
        "SINGLE" => Ok(Topology::Single),
        "ACTIVE_STANDBY" => Ok(Topology::ActiveStandby),
        _ => Err("expected SINGLE or ACTIVE_STANDBY".into()),
    }
}

fn parse_controller(value: &str) -> Result<(), String> {
    let (host, port) = value.rsplit_once(':').ok_or_else(|| format!("{value:?} is not an ip:port pair"))?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    host.parse::<IpAddr>().map_err(|_| format!("{host:?} is not an IP address"))?;
    parse_int(port, 1, 65535).map_err(|_| format!("{port:?} is not a port"))?;
    Ok(())
}

/// A parsed configuration and what the operator should be told about it.
#[derive(Debug)]
pub struct Loaded {
    pub config: Config,
    pub warnings: Vec<ConfigWarning>,
    /// The files read, in order; the last one is the one `PUT /1.0/config`
    /// rewrites.
    pub files: Vec<PathBuf>,
}

/// Reads and validates the given files; later files override earlier ones.
pub fn load(paths: &[PathBuf]) -> Result<Loaded, ConfigError> {
    let mut texts = Vec::with_capacity(paths.len());
    for path in paths {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read { path: path.clone(), source })?;
        texts.push((path.clone(), text));
    }
    parse(texts.iter().map(|(p, t)| (p.as_path(), t.as_str())))
}

/// Parses configuration texts, each labelled with the path it came from.
pub fn parse<'a>(sources: impl IntoIterator<Item = (&'a Path, &'a str)>) -> Result<Loaded, ConfigError> {
    let mut layers = Layers::new(KNOWN_OPTIONS);
    for (path, text) in sources {
        layers.add(path, text)?;
    }
    let mut warnings = layers.take_warnings();

    let haproxy_amphora = HaproxyAmphora {
        base_path: layers.path("haproxy_amphora", "base_path", "/var/lib/octavia")?,
        base_cert_dir: layers.path("haproxy_amphora", "base_cert_dir", "/var/lib/octavia/certs")?,
        bind_host: layers.get("haproxy_amphora", "bind_host", IpAddr::from([0u16; 8]), |v| {
            v.parse().map_err(|_| "expected an IP address".to_owned())
        })?,
        bind_port: layers.get("haproxy_amphora", "bind_port", 9443, |v| parse_int(v, 0, 65535).map(|n| n as u16))?,
        haproxy_cmd: layers.path("haproxy_amphora", "haproxy_cmd", "/usr/sbin/haproxy")?,
        user_group: layers.optional_string("haproxy_amphora", "user_group")?,
    };

    let health_manager = HealthManager {
        controller_ip_port_list: layers.get("health_manager", "controller_ip_port_list", Vec::new(), |v| {
            let list = parse_list(v);
            list.iter().try_for_each(|c| parse_controller(c))?;
            Ok(list)
        })?,
        heartbeat_interval: layers.get("health_manager", "heartbeat_interval", 10, |v| parse_int(v, 1, 86_400))?,
        heartbeat_key: layers.optional_string("health_manager", "heartbeat_key")?,
    };

    let amphora_agent = AmphoraAgent {
        agent_server_ca: layers.path("amphora_agent", "agent_server_ca", "/etc/octavia/certs/client_ca.pem")?,
        agent_server_cert: layers.path("amphora_agent", "agent_server_cert", "/etc/octavia/certs/server.pem")?,
        agent_server_network_dir: layers.get("amphora_agent", "agent_server_network_dir", None, |v| {
            if v.is_empty() { Ok(None) } else { parse_absolute_path(v).map(Some) }
        })?,
        agent_request_read_timeout: layers
            .get("amphora_agent", "agent_request_read_timeout", 180, |v| parse_int(v, 1, 86_400))?,
        amphora_id: layers.required("amphora_agent", "amphora_id")?,
        agent_tls_protocol: layers
            .get("amphora_agent", "agent_tls_protocol", TlsProtocol::Tls12, |v| parse_tls_protocol(v, &mut warnings))?,
        amphora_udp_driver: layers.string("amphora_agent", "amphora_udp_driver", "keepalived_lvs")?,
        network_namespace: layers.get(
            "amphora_agent",
            "network_namespace",
            Some("amphora-haproxy".to_owned()),
            |v| {
                if v.is_empty() {
                    Ok(None)
                } else if is_namespace_name(v) {
                    Ok(Some(v.to_owned()))
                } else {
                    Err("expected a network namespace name (letters, digits, '-', '_', '.')".into())
                }
            },
        )?,
        max_request_body_size: layers.get("amphora_agent", "max_request_body_size", 16 * 1024 * 1024, |v| {
            parse_int(v, 1024, 1 << 32).map(|n| n as usize)
        })?,
        api_versions: layers.get(
            "amphora_agent",
            "api_versions",
            API_VERSIONS.iter().map(|v| v.to_string()).collect(),
            |v| {
                let list = parse_list(v);
                if list.is_empty() {
                    return Err("at least one API version must be served".into());
                }
                match list.iter().find(|v| !API_VERSIONS.contains(&v.as_str())) {
                    Some(unknown) => {
                        Err(format!("unknown API version {unknown:?} (known: {})", API_VERSIONS.join(", ")))
                    }
                    None => Ok(list),
                }
            },
        )?,
    };

    let controller_worker = ControllerWorker {
        loadbalancer_topology: layers.get(
            "controller_worker",
            "loadbalancer_topology",
            Topology::Single,
            parse_topology,
        )?,
    };

    let config = Config {
        debug: layers.get("DEFAULT", "debug", false, parse_bool)?,
        haproxy_amphora,
        health_manager,
        amphora_agent,
        controller_worker,
    };
    Ok(Loaded { config, warnings, files: layers.files().to_vec() })
}

fn is_namespace_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && !name.starts_with('.')
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINIMAL: &str = "[amphora_agent]\namphora_id = 6e2bc8a0-2548-4fb7-a5f0-fb1ef4a696ce\n";

    fn parse_one(text: &str) -> Result<Loaded, ConfigError> {
        parse([(Path::new("/etc/octavia/amphora-agent.conf"), text)])
    }

    #[test]
    fn defaults_match_upstream() {
        let loaded = parse_one(MINIMAL).expect("valid");
        let c = loaded.config;
        assert!(!c.debug);
        assert_eq!(c.haproxy_amphora.base_path, PathBuf::from("/var/lib/octavia"));
        assert_eq!(c.haproxy_amphora.base_cert_dir, PathBuf::from("/var/lib/octavia/certs"));
        assert_eq!(c.haproxy_amphora.bind_host, "::".parse::<IpAddr>().expect("ip"));
        assert_eq!(c.haproxy_amphora.bind_port, 9443);
        assert_eq!(c.haproxy_amphora.haproxy_cmd, PathBuf::from("/usr/sbin/haproxy"));
        assert_eq!(c.health_manager.heartbeat_interval, 10);
        assert_eq!(c.health_manager.controller_ip_port_list, Vec::<String>::new());
        assert_eq!(c.health_manager.heartbeat_key, None);
        assert_eq!(c.amphora_agent.agent_server_ca, PathBuf::from("/etc/octavia/certs/client_ca.pem"));
        assert_eq!(c.amphora_agent.agent_server_cert, PathBuf::from("/etc/octavia/certs/server.pem"));
        assert_eq!(c.amphora_agent.agent_request_read_timeout, 180);
        assert_eq!(c.amphora_agent.agent_tls_protocol, TlsProtocol::Tls12);
        assert_eq!(c.amphora_agent.amphora_udp_driver, "keepalived_lvs");
        assert_eq!(c.amphora_agent.network_namespace.as_deref(), Some("amphora-haproxy"));
        assert_eq!(c.controller_worker.loadbalancer_topology, Topology::Single);
        assert!(loaded.warnings.is_empty(), "{:?}", loaded.warnings);
    }

    #[test]
    fn api_versions_are_checked() {
        let c = parse_one(&format!("{MINIMAL}api_versions = 1.0\n")).expect("valid").config;
        assert_eq!(c.amphora_agent.api_versions, vec!["1.0"]);
        let defaults = parse_one(MINIMAL).expect("valid").config;
        assert_eq!(defaults.amphora_agent.api_versions, vec!["0.1", "1.0", "appliance"]);
        let err = parse_one(&format!("{MINIMAL}api_versions = 1.0, 2.0\n")).expect_err("unknown").to_string();
        assert!(err.contains("unknown API version \"2.0\""), "{err}");
    }

    #[test]
    fn reads_upstream_template_output() {
        let text = "\
[DEFAULT]
debug = True
use_syslog = True
syslog_log_facility = LOG_LOCAL1

[haproxy_amphora]
base_cert_dir = /var/lib/octavia/certs
base_path = /var/lib/octavia
bind_host = 0.0.0.0
bind_port = 9443
haproxy_cmd = /usr/sbin/haproxy
user_log_facility = 0
administrative_log_facility = 1

[health_manager]
controller_ip_port_list = 192.168.0.5:5555, [fd00::5]:5555
heartbeat_interval = 3
heartbeat_key = insecure

[amphora_agent]
agent_server_ca = /etc/octavia/certs/client_ca.pem
agent_server_cert = /etc/octavia/certs/server.pem
agent_request_read_timeout = 180
amphora_id = 6e2bc8a0-2548-4fb7-a5f0-fb1ef4a696ce
amphora_udp_driver = keepalived_lvs
agent_tls_protocol = TLSv1.3

[controller_worker]
loadbalancer_topology = ACTIVE_STANDBY
";
        let loaded = parse_one(text).expect("valid");
        let c = loaded.config;
        assert!(c.debug);
        assert_eq!(c.haproxy_amphora.bind_host, "0.0.0.0".parse::<IpAddr>().expect("ip"));
        assert_eq!(
            c.health_manager.controller_ip_port_list,
            vec!["192.168.0.5:5555".to_owned(), "[fd00::5]:5555".to_owned()]
        );
        assert_eq!(c.health_manager.heartbeat_interval, 3);
        assert_eq!(c.health_manager.heartbeat_key.as_deref(), Some("insecure"));
        assert_eq!(c.amphora_agent.amphora_id, "6e2bc8a0-2548-4fb7-a5f0-fb1ef4a696ce");
        assert_eq!(c.amphora_agent.agent_tls_protocol, TlsProtocol::Tls13);
        assert_eq!(c.controller_worker.loadbalancer_topology, Topology::ActiveStandby);
        assert!(loaded.warnings.is_empty(), "{:?}", loaded.warnings);
    }

    #[test]
    fn later_files_override_earlier_ones_key_by_key() {
        let first = "[haproxy_amphora]\nbind_port = 1000\nbase_path = /srv/a\n[amphora_agent]\namphora_id = one\n";
        let second = "[haproxy_amphora]\nbind_port = 2000\n[amphora_agent]\namphora_id = two\n";
        let loaded = parse([(Path::new("/a.conf"), first), (Path::new("/b.conf"), second)]).expect("valid");
        assert_eq!(loaded.config.haproxy_amphora.bind_port, 2000);
        assert_eq!(loaded.config.haproxy_amphora.base_path, PathBuf::from("/srv/a"));
        assert_eq!(loaded.config.amphora_agent.amphora_id, "two");
        assert_eq!(loaded.files, vec![PathBuf::from("/a.conf"), PathBuf::from("/b.conf")]);
    }

    #[test]
    fn unknown_options_and_sections_are_warnings() {
        let text = format!("{MINIMAL}colour = blue\n[mystery]\nx = 1\n");
        let loaded = parse_one(&text).expect("valid");
        assert_eq!(
            loaded.warnings,
            vec![
                ConfigWarning("/etc/octavia/amphora-agent.conf: ignoring unknown option [amphora_agent] colour".into()),
                ConfigWarning("/etc/octavia/amphora-agent.conf: ignoring unknown section [mystery]".into()),
            ]
        );
    }

    #[test]
    fn invalid_value_names_file_section_and_key() {
        let text = format!("{MINIMAL}[haproxy_amphora]\nbind_port = lots\n");
        let err = parse_one(&text).expect_err("invalid");
        assert_eq!(
            err.to_string(),
            "/etc/octavia/amphora-agent.conf: [haproxy_amphora] bind_port = \"lots\": expected an integer from 0 to 65535"
        );
    }

    #[test]
    fn missing_amphora_id_is_an_error() {
        let err = parse_one("[haproxy_amphora]\nbind_port = 1\n").expect_err("missing");
        assert_eq!(
            err.to_string(),
            "missing required option [amphora_agent] amphora_id (read /etc/octavia/amphora-agent.conf)"
        );
    }

    #[test]
    fn malformed_file_reports_the_line() {
        let err = parse_one("[amphora_agent\namphora_id = x\n").expect_err("malformed");
        match err {
            ConfigError::Syntax { path, line, .. } => {
                assert_eq!(path, PathBuf::from("/etc/octavia/amphora-agent.conf"));
                assert!(line >= 1);
            }
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn rejects_bad_choices_and_relative_paths() {
        for (section, key, value, reason) in [
            ("amphora_agent", "agent_tls_protocol", "TLSv9", "expected one of"),
            ("controller_worker", "loadbalancer_topology", "ACTIVE-ACTIVE", "expected SINGLE"),
            ("haproxy_amphora", "base_path", "var/lib", "absolute path"),
            ("haproxy_amphora", "bind_host", "localhost", "IP address"),
            ("health_manager", "controller_ip_port_list", "10.0.0.1", "ip:port"),
            ("health_manager", "heartbeat_interval", "0", "integer from 1"),
            ("amphora_agent", "network_namespace", "../etc", "namespace name"),
            ("DEFAULT", "debug", "maybe", "boolean"),
        ] {
            let text = format!("{MINIMAL}[{section}]\n{key} = {value}\n");
            let err = parse_one(&text).expect_err(value).to_string();
            assert!(err.contains(&format!("[{section}] {key}")), "{err}");
            assert!(err.contains(reason), "{err}");
        }
    }

    #[test]
    fn obsolete_tls_versions_are_raised_to_1_2_with_a_warning() {
        let text = format!("{MINIMAL}agent_tls_protocol = TLSv1.1\n");
        let loaded = parse_one(&text).expect("valid");
        assert_eq!(loaded.config.amphora_agent.agent_tls_protocol, TlsProtocol::Tls12);
        assert_eq!(loaded.warnings.len(), 1);
    }

    #[test]
    fn quotes_are_stripped_and_empty_namespace_means_none() {
        let text = format!("{MINIMAL}network_namespace =\n[health_manager]\nheartbeat_key = \"secret\"\n");
        let c = parse_one(&text).expect("valid").config;
        assert_eq!(c.amphora_agent.network_namespace, None);
        assert_eq!(c.health_manager.heartbeat_key.as_deref(), Some("secret"));
    }
}
