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
use std::sync::LazyLock;

pub use crate::syslog::Facility;
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
    pub logging: Logging,
}

/// Where the agent's own log records go: standard error (for journald) by
/// default; the local syslog socket when upstream's switches ask for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Logging {
    /// `[DEFAULT] use_syslog`, which upstream's controller always renders
    /// `True`.
    pub use_syslog: bool,
    /// `[DEFAULT] syslog_log_facility`; when unset, the administrative one.
    pub syslog_log_facility: Option<Facility>,
    /// `[haproxy_amphora] administrative_log_facility`: `LOG_LOCAL<n>`.
    pub administrative_log_facility: u8,
    /// `[amphora_agent] admin_log_targets`: forwarded by the image's
    /// rsyslog; set, they turn syslog on.
    pub admin_log_targets: Vec<String>,
    /// `[amphora_agent] tenant_log_targets`: likewise.
    pub tenant_log_targets: Vec<String>,
    /// Our extension: the syslog socket.
    pub syslog_socket: PathBuf,
}

impl Logging {
    /// The socket and facility to send records to, when syslog is on.
    pub fn syslog(&self) -> Option<(PathBuf, Facility)> {
        let on = self.use_syslog || !self.admin_log_targets.is_empty() || !self.tenant_log_targets.is_empty();
        let admin = Facility::local(self.administrative_log_facility).unwrap_or(Facility::local(1)?);
        on.then(|| (self.syslog_socket.clone(), self.syslog_log_facility.unwrap_or(admin)))
    }
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
    /// Our extension: threads of the async runtime. Blocking work has a
    /// pool of its own, so one serves the agent's light load, with less CPU
    /// per request (no wake-ups across threads) and the other vCPUs left to
    /// haproxy.
    pub worker_threads: usize,
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

/// The amphora topology; `[controller_worker] loadbalancer_topology` takes
/// its configuration spelling.
pub use crate::topology::Topology;

/// Where an option comes from: upstream's agent, or this agent's own
/// additions (documented in the README's "Options of ours").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    Upstream,
    Ours,
}

/// How the table reads, shows and copies one option's field of `Config`.
#[derive(Debug, Clone, Copy)]
struct Access {
    /// Parses a value (as written in a file) into its field.
    read: fn(&str, &mut Config, &mut Vec<ConfigWarning>) -> Result<(), String>,
    /// The field as it would be written in a file.
    show: fn(&Config) -> String,
    /// Copies the field from one configuration to another.
    copy: fn(&mut Config, &Config),
}

/// One configuration option: the one place that names it, gives its
/// default, says how it is parsed and whether it applies without a
/// restart.
#[derive(Debug, Clone, Copy)]
pub struct OptionSpec {
    pub section: &'static str,
    pub key: &'static str,
    /// The value when no file sets it, as it would be written in a file;
    /// `None` for a required option, and for options accepted and ignored.
    pub default: Option<&'static str>,
    /// Applied by `PUT /1.0/config` at once (upstream's `mutable=True`).
    pub mutable: bool,
    pub origin: Origin,
    /// `None`: an upstream option the agent template writes, accepted
    /// without acting on it (so it draws no warning).
    access: Option<Access>,
}

impl OptionSpec {
    /// `[section] key`, as reports and errors name options.
    pub fn name(&self) -> String {
        format!("[{}] {}", self.section, self.key)
    }

    /// Whether the agent acts on this option.
    pub fn is_used(&self) -> bool {
        self.access.is_some()
    }

    /// The option's value in `config`, as it would be written in a file;
    /// `None` for options the agent ignores.
    pub fn show(&self, config: &Config) -> Option<String> {
        self.access.map(|access| (access.show)(config))
    }

    /// Copies this option's value from `from` into `to`.
    pub fn copy(&self, to: &mut Config, from: &Config) {
        if let Some(access) = self.access {
            (access.copy)(to, from);
        }
    }
}

/// A value as it would be written in a configuration file.
trait IniValue {
    fn ini(&self) -> String;
}

impl IniValue for String {
    fn ini(&self) -> String {
        self.clone()
    }
}

impl IniValue for PathBuf {
    fn ini(&self) -> String {
        self.display().to_string()
    }
}

impl<T: IniValue> IniValue for Option<T> {
    fn ini(&self) -> String {
        self.as_ref().map(IniValue::ini).unwrap_or_default()
    }
}

impl IniValue for Vec<String> {
    fn ini(&self) -> String {
        self.join(", ")
    }
}

macro_rules! ini_by_display {
    ($($t:ty),+) => {
        $(impl IniValue for $t {
            fn ini(&self) -> String {
                self.to_string()
            }
        })+
    };
}
ini_by_display!(bool, u8, u16, u64, usize, IpAddr);

impl IniValue for Facility {
    fn ini(&self) -> String {
        self.name()
    }
}

impl IniValue for TlsProtocol {
    fn ini(&self) -> String {
        match self {
            TlsProtocol::Tls12 => "TLSv1.2",
            TlsProtocol::Tls13 => "TLSv1.3",
        }
        .to_owned()
    }
}

impl IniValue for Topology {
    fn ini(&self) -> String {
        self.config_str().to_owned()
    }
}

/// An option the agent reads into `config.<field>` with `parse`
/// (`fn(&str) -> Result<T, String>`), or with `parse_warning`
/// (`fn(&str, &mut Vec<ConfigWarning>) -> Result<T, String>`).
macro_rules! option {
    ($section:literal, $key:literal, $origin:ident, mutable: $mutable:literal, default: $default:expr,
     $($field:ident).+ = parse $parse:expr) => {
        option!(@spec $section, $key, $origin, $mutable, $default, $($field).+,
            |value, _warnings| ($parse)(value))
    };
    ($section:literal, $key:literal, $origin:ident, mutable: $mutable:literal, default: $default:expr,
     $($field:ident).+ = parse_warning $parse:expr) => {
        option!(@spec $section, $key, $origin, $mutable, $default, $($field).+, $parse)
    };
    (@spec $section:literal, $key:literal, $origin:ident, $mutable:literal, $default:expr, $($field:ident).+,
     $parse:expr) => {
        OptionSpec {
            section: $section,
            key: $key,
            default: $default,
            mutable: $mutable,
            origin: Origin::$origin,
            access: Some(Access {
                read: |value, config, warnings| {
                    let parse: fn(&str, &mut Vec<ConfigWarning>) -> Result<_, String> = $parse;
                    config.$($field).+ = parse(value, warnings)?;
                    Ok(())
                },
                show: |config| config.$($field).+.ini(),
                copy: |to, from| to.$($field).+ = from.$($field).+.clone(),
            }),
        }
    };
}

/// An upstream option the agent template writes and the agent ignores.
const fn ignored(section: &'static str, key: &'static str) -> OptionSpec {
    OptionSpec { section, key, default: None, mutable: false, origin: Origin::Upstream, access: None }
}

fn parse_path(value: &str) -> Result<PathBuf, String> {
    parse_absolute_path(value)
}

fn parse_optional_path(value: &str) -> Result<Option<PathBuf>, String> {
    if value.is_empty() { Ok(None) } else { parse_absolute_path(value).map(Some) }
}

fn parse_string(value: &str) -> Result<String, String> {
    Ok(value.to_owned())
}

/// An option whose empty value means "not set".
fn parse_optional_string(value: &str) -> Result<Option<String>, String> {
    Ok((!value.is_empty()).then(|| value.to_owned()))
}

fn parse_ip(value: &str) -> Result<IpAddr, String> {
    value.parse().map_err(|_| "expected an IP address".to_owned())
}

fn parse_controllers(value: &str) -> Result<Vec<String>, String> {
    let list = parse_list(value);
    list.iter().try_for_each(|c| parse_controller(c))?;
    Ok(list)
}

fn parse_namespace(value: &str) -> Result<Option<String>, String> {
    if value.is_empty() {
        Ok(None)
    } else if is_namespace_name(value) {
        Ok(Some(value.to_owned()))
    } else {
        Err("expected a network namespace name (letters, digits, '-', '_', '.')".into())
    }
}

fn parse_api_versions(value: &str) -> Result<Vec<String>, String> {
    let list = parse_list(value);
    if list.is_empty() {
        return Err("at least one API version must be served".into());
    }
    match list.iter().find(|v| !API_VERSIONS.contains(&v.as_str())) {
        Some(unknown) => Err(format!("unknown API version {unknown:?} (known: {})", API_VERSIONS.join(", "))),
        None => Ok(list),
    }
}

/// Every option the agent knows, in the order reports list them: the one
/// table that names, defaults, parses and classifies them.
pub const OPTIONS: &[OptionSpec] = &[
    option!("DEFAULT", "debug", Upstream, mutable: true, default: Some("false"), debug = parse parse_bool),
    option!("haproxy_amphora", "base_path", Upstream, mutable: false, default: Some("/var/lib/octavia"),
        haproxy_amphora.base_path = parse parse_path),
    option!("haproxy_amphora", "base_cert_dir", Upstream, mutable: false, default: Some("/var/lib/octavia/certs"),
        haproxy_amphora.base_cert_dir = parse parse_path),
    option!("haproxy_amphora", "bind_host", Upstream, mutable: false, default: Some("::"),
        haproxy_amphora.bind_host = parse parse_ip),
    option!("haproxy_amphora", "bind_port", Upstream, mutable: false, default: Some("9443"),
        haproxy_amphora.bind_port = parse |v| parse_int(v, 0, 65535).map(|n| n as u16)),
    option!("haproxy_amphora", "haproxy_cmd", Upstream, mutable: false, default: Some("/usr/sbin/haproxy"),
        haproxy_amphora.haproxy_cmd = parse parse_path),
    option!("haproxy_amphora", "user_group", Upstream, mutable: false, default: Some(""),
        haproxy_amphora.user_group = parse parse_optional_string),
    option!("health_manager", "controller_ip_port_list", Upstream, mutable: true, default: Some(""),
        health_manager.controller_ip_port_list = parse parse_controllers),
    option!("health_manager", "heartbeat_interval", Upstream, mutable: true, default: Some("10"),
        health_manager.heartbeat_interval = parse |v| parse_int(v, 1, 86_400)),
    option!("health_manager", "heartbeat_key", Upstream, mutable: true, default: Some(""),
        health_manager.heartbeat_key = parse parse_optional_string),
    option!("amphora_agent", "agent_server_ca", Upstream, mutable: false,
        default: Some("/etc/octavia/certs/client_ca.pem"), amphora_agent.agent_server_ca = parse parse_path),
    option!("amphora_agent", "agent_server_cert", Upstream, mutable: false,
        default: Some("/etc/octavia/certs/server.pem"), amphora_agent.agent_server_cert = parse parse_path),
    option!("amphora_agent", "agent_server_network_dir", Upstream, mutable: false, default: Some(""),
        amphora_agent.agent_server_network_dir = parse parse_optional_path),
    option!("amphora_agent", "agent_request_read_timeout", Upstream, mutable: false, default: Some("180"),
        amphora_agent.agent_request_read_timeout = parse |v| parse_int(v, 1, 86_400)),
    option!("amphora_agent", "amphora_id", Upstream, mutable: false, default: None,
        amphora_agent.amphora_id = parse parse_string),
    option!("amphora_agent", "agent_tls_protocol", Upstream, mutable: false, default: Some("TLSv1.2"),
        amphora_agent.agent_tls_protocol = parse_warning parse_tls_protocol),
    option!("amphora_agent", "amphora_udp_driver", Upstream, mutable: false, default: Some("keepalived_lvs"),
        amphora_agent.amphora_udp_driver = parse parse_string),
    option!("amphora_agent", "network_namespace", Ours, mutable: false, default: Some("amphora-haproxy"),
        amphora_agent.network_namespace = parse parse_namespace),
    option!("amphora_agent", "max_request_body_size", Ours, mutable: false, default: Some("16777216"),
        amphora_agent.max_request_body_size = parse |v| parse_int(v, 1024, 1 << 32).map(|n| n as usize)),
    option!("amphora_agent", "api_versions", Ours, mutable: false, default: Some("0.1, 1.0, appliance"),
        amphora_agent.api_versions = parse parse_api_versions),
    option!("amphora_agent", "worker_threads", Ours, mutable: false, default: Some("1"),
        amphora_agent.worker_threads = parse |v| parse_int(v, 1, 256).map(|n| n as usize)),
    option!("controller_worker", "loadbalancer_topology", Upstream, mutable: true, default: Some("SINGLE"),
        controller_worker.loadbalancer_topology = parse Topology::parse_config),
    option!("DEFAULT", "use_syslog", Upstream, mutable: false, default: Some("false"),
        logging.use_syslog = parse parse_bool),
    option!("DEFAULT", "syslog_log_facility", Upstream, mutable: false, default: Some(""),
        logging.syslog_log_facility = parse parse_facility),
    option!("haproxy_amphora", "administrative_log_facility", Upstream, mutable: false, default: Some("1"),
        logging.administrative_log_facility = parse |v| parse_int(v, 0, 7).map(|n| n as u8)),
    option!("amphora_agent", "admin_log_targets", Upstream, mutable: false, default: Some(""),
        logging.admin_log_targets = parse parse_log_targets),
    option!("amphora_agent", "tenant_log_targets", Upstream, mutable: false, default: Some(""),
        logging.tenant_log_targets = parse parse_log_targets),
    option!("amphora_agent", "syslog_socket", Ours, mutable: false, default: Some("/dev/log"),
        logging.syslog_socket = parse parse_path),
    ignored("DEFAULT", "log_file"),
    ignored("DEFAULT", "log_dir"),
    ignored("DEFAULT", "use_stderr"),
    ignored("DEFAULT", "use_journal"),
    ignored("DEFAULT", "host"),
    ignored("haproxy_amphora", "user_log_facility"),
    ignored("haproxy_amphora", "lb_network_interface"),
    ignored("haproxy_amphora", "respawn_count"),
    ignored("haproxy_amphora", "respawn_interval"),
    ignored("amphora_agent", "user_log_facility"),
    ignored("amphora_agent", "administrative_log_facility"),
    ignored("amphora_agent", "log_protocol"),
    ignored("amphora_agent", "log_retry_count"),
    ignored("amphora_agent", "log_retry_interval"),
    ignored("amphora_agent", "log_queue_size"),
    ignored("amphora_agent", "logging_template_override"),
    ignored("amphora_agent", "forward_all_logs"),
    ignored("amphora_agent", "disable_local_log_storage"),
];

/// `OPTIONS` grouped by section, as the INI reader wants them to tell
/// unknown options apart.
fn known_options() -> &'static oslo_ini::KnownOptions {
    static KEYS: LazyLock<Vec<(&'static str, Vec<&'static str>)>> = LazyLock::new(|| {
        let mut sections: Vec<(&'static str, Vec<&'static str>)> = Vec::new();
        for option in OPTIONS {
            match sections.iter_mut().find(|(name, _)| *name == option.section) {
                Some((_, keys)) => keys.push(option.key),
                None => sections.push((option.section, vec![option.key])),
            }
        }
        sections
    });
    static KNOWN: LazyLock<Vec<(&'static str, &'static [&'static str])>> =
        LazyLock::new(|| KEYS.iter().map(|(section, keys)| (*section, keys.as_slice())).collect());
    KNOWN.as_slice()
}

/// The configuration before the table fills it in; every field is
/// overwritten by its option (value or default).
fn unfilled() -> Config {
    Config {
        debug: false,
        haproxy_amphora: HaproxyAmphora {
            base_path: PathBuf::new(),
            base_cert_dir: PathBuf::new(),
            bind_host: IpAddr::from([0u16; 8]),
            bind_port: 0,
            haproxy_cmd: PathBuf::new(),
            user_group: None,
        },
        health_manager: HealthManager {
            controller_ip_port_list: Vec::new(),
            heartbeat_interval: 0,
            heartbeat_key: None,
        },
        amphora_agent: AmphoraAgent {
            agent_server_ca: PathBuf::new(),
            agent_server_cert: PathBuf::new(),
            agent_server_network_dir: None,
            agent_request_read_timeout: 0,
            amphora_id: String::new(),
            agent_tls_protocol: TlsProtocol::Tls12,
            amphora_udp_driver: String::new(),
            network_namespace: None,
            max_request_body_size: 0,
            api_versions: Vec::new(),
            worker_threads: 0,
        },
        controller_worker: ControllerWorker { loadbalancer_topology: Topology::Single },
        logging: Logging {
            use_syslog: false,
            syslog_log_facility: None,
            administrative_log_facility: 1,
            admin_log_targets: Vec::new(),
            tenant_log_targets: Vec::new(),
            syslog_socket: PathBuf::new(),
        },
    }
}

/// A facility name; empty means unset.
fn parse_facility(value: &str) -> Result<Option<Facility>, String> {
    if value.is_empty() { Ok(None) } else { Facility::parse(value).map(Some) }
}

/// `host:port` pairs, as upstream's logging template splits them.
fn parse_log_targets(value: &str) -> Result<Vec<String>, String> {
    let list = parse_list(value);
    for target in &list {
        let (host, port) = target.rsplit_once(':').ok_or_else(|| format!("{target:?} is not a host:port pair"))?;
        if host.is_empty() {
            return Err(format!("{target:?} has no host"));
        }
        parse_int(port, 1, 65535).map_err(|_| format!("{port:?} is not a port"))?;
    }
    Ok(list)
}

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
    let mut layers = Layers::new(known_options());
    for (path, text) in sources {
        layers.add(path, text)?;
    }
    let mut warnings = layers.take_warnings();
    let mut config = unfilled();
    for option in OPTIONS {
        let Some(access) = option.access else { continue };
        let value = match option.default {
            // An empty value counts as missing, as oslo.config's required
            // string options.
            None => Some(layers.required(option.section, option.key)?),
            Some(_) => None,
        };
        let set = layers.get(option.section, option.key, false, |raw| {
            (access.read)(value.as_deref().unwrap_or(raw), &mut config, &mut warnings).map(|()| true)
        })?;
        if let (false, Some(default)) = (set, option.default) {
            (access.read)(default, &mut config, &mut warnings).map_err(|reason| ConfigError::Invalid {
                path: PathBuf::from("(built-in default)"),
                section: option.section.to_owned(),
                key: option.key.to_owned(),
                value: default.to_owned(),
                reason,
            })?;
        }
    }
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
    fn every_option_is_named_once() {
        let mut names: Vec<String> = OPTIONS.iter().map(OptionSpec::name).collect();
        names.sort();
        let count = names.len();
        names.dedup();
        assert_eq!(names.len(), count, "an option appears twice in OPTIONS");
    }

    #[test]
    fn every_default_is_what_an_unset_option_reads_as() {
        let config = parse_one(MINIMAL).expect("valid").config;
        for option in OPTIONS.iter().filter(|o| o.is_used()) {
            match option.default {
                Some(default) => assert_eq!(option.show(&config).as_deref(), Some(default), "{}", option.name()),
                None => assert_eq!(option.name(), "[amphora_agent] amphora_id", "only the amphora id is required"),
            }
        }
    }

    #[test]
    fn every_option_reads_back_what_it_shows() {
        // Values unlike the defaults, so a field read into the wrong place shows.
        let text = "[DEFAULT]\ndebug = yes\nuse_syslog = true\nsyslog_log_facility = LOG_LOCAL5\n\
                    [haproxy_amphora]\nbase_path = /srv/b\nbase_cert_dir = /srv/c\nbind_host = 192.0.2.9\n\
                    bind_port = 1234\nhaproxy_cmd = /opt/haproxy\nuser_group = lbs\nadministrative_log_facility = 6\n\
                    [health_manager]\ncontroller_ip_port_list = 192.0.2.1:5555, [fd00::1]:5556\n\
                    heartbeat_interval = 7\nheartbeat_key = k\n\
                    [amphora_agent]\namphora_id = amp-9\nagent_server_ca = /srv/ca.pem\nagent_server_cert = /srv/s.pem\n\
                    agent_server_network_dir = /srv/net\nagent_request_read_timeout = 5\nagent_tls_protocol = TLSv1.3\n\
                    amphora_udp_driver = other\nnetwork_namespace = ns-9\nmax_request_body_size = 2048\n\
                    api_versions = 1.0\nworker_threads = 3\n\
                    admin_log_targets = 192.0.2.3:514\ntenant_log_targets = logs.example:10514, 192.0.2.4:514\n\
                    syslog_socket = /srv/log\n\
                    [controller_worker]\nloadbalancer_topology = ACTIVE_STANDBY\n";
        let config = parse_one(text).expect("valid").config;
        let defaults = parse_one(MINIMAL).expect("valid").config;
        for option in OPTIONS.iter().filter(|o| o.is_used()) {
            let shown = option.show(&config).expect("used");
            assert_ne!(Some(&shown), option.show(&defaults).as_ref(), "{} kept its default", option.name());
            let again = format!("{MINIMAL}[{}]\n{} = {shown}\n", option.section, option.key);
            let read = parse_one(&again).expect("valid").config;
            assert_eq!(option.show(&read), Some(shown), "{}", option.name());
            let mut copied = defaults.clone();
            option.copy(&mut copied, &config);
            assert_eq!(option.show(&copied), option.show(&config), "{}", option.name());
        }
    }

    #[test]
    fn every_option_in_the_table_is_known_to_the_reader() {
        let mut text = String::new();
        for option in OPTIONS {
            let value = match (option.key, option.default) {
                ("amphora_id", _) => "amp",
                (_, Some(default)) => default,
                // Ignored options take anything.
                (_, None) => "x",
            };
            text.push_str(&format!("[{}]\n{} = {value}\n", option.section, option.key));
        }
        let loaded = parse_one(&text).expect("valid");
        assert!(loaded.warnings.is_empty(), "{:?}", loaded.warnings);
    }

    /// The README's table of our own options lists exactly the table's
    /// `Origin::Ours` options with their defaults.
    #[test]
    fn our_options_are_documented_with_their_defaults() {
        let readme = include_str!("../../../README.md");
        let section = readme.split("Options of ours").nth(1).expect("README has our options");
        let documented: Vec<(String, String)> = section
            .lines()
            .skip_while(|line| !line.starts_with('|'))
            .take_while(|line| line.starts_with('|'))
            .filter_map(|line| {
                let cells: Vec<&str> = line.split('|').map(str::trim).collect();
                let key = cells.get(1)?.strip_prefix('`')?.strip_suffix('`')?;
                let default = cells.get(2)?.trim_matches('`');
                Some((key.to_owned(), default.to_owned()))
            })
            .collect();
        let ours: Vec<(String, String)> = OPTIONS
            .iter()
            .filter(|o| o.origin == Origin::Ours)
            .map(|o| (o.key.to_owned(), o.default.unwrap_or("").to_owned()))
            .collect();
        assert_eq!(documented, ours);
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
