//! haproxy's configuration for one amphora of a load balancer, as upstream's
//! combined-listeners templater renders it
//! (`octavia/common/jinja/haproxy/combined_listeners/`): one file per load
//! balancer with every TCP-family listener as a frontend and each of its
//! pools as a backend. UDP and SCTP listeners are not haproxy's (LVS).
//!
//! The lines, their order within a section and their options are upstream's;
//! only the whitespace is ours (upstream's template leaves stray blank lines
//! and indentation that haproxy ignores).

use std::collections::BTreeSet;
use std::fmt::Write as _;

use base64::Engine;
use sha1::{Digest, Sha1};

use super::RenderError;
use super::model::{AmphoraView, HealthMonitor, Listener, LoadBalancer, Member, Pool};
use crate::config::{Config, Topology};

/// Upstream's `HAPROXY_MAX_MAXCONN`.
pub const MAX_MAXCONN: i64 = 1_000_000;
/// Upstream's `HAPROXY_BASE_PEER_PORT`: the port of the `peers` section.
pub const PEER_PORT: u16 = 1025;
/// Where upstream's amphora image keeps the PING monitor's script.
pub const PING_WRAPPER: &str = "/var/lib/octavia/ping-wrapper.sh";
const DEFAULT_LOG_PATH: &str = "/run/rsyslog/octavia/log";

/// What upstream's templater takes from `octavia.conf`, and what the
/// controller learns from the amphora (`GET /details`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HaproxyOptions {
    /// `[haproxy_amphora] base_path` on the amphora.
    pub base_path: String,
    /// `[haproxy_amphora] base_cert_dir` on the amphora.
    pub base_cert_dir: String,
    pub connection_logging: bool,
    /// `[haproxy_amphora] user_log_format` (with `{{ project_id }}` and
    /// `{{ lb_id }}` placeholders).
    pub user_log_format: String,
    pub stick_size: String,
    pub default_connection_limit: i64,
    pub timeout_client_data: i64,
    pub timeout_member_connect: i64,
    pub timeout_member_data: i64,
    pub timeout_tcp_inspect: i64,
    pub user_log_facility: u8,
    pub administrative_log_facility: u8,
    /// The syslog targets of the two `log` lines; `None` is upstream's
    /// `/run/rsyslog/octavia/log` (its driver never sets them).
    pub log_http: Option<String>,
    pub log_server: Option<String>,
    /// `[api_settings] tls1_3_supported_ciphers`.
    pub tls1_3_supported_ciphers: String,
    /// The stats socket; `None` is `{base_path}/{lb_id}.sock`.
    pub socket_path: Option<String>,
    /// The amphora's `GET /details` facts that change the file (threads,
    /// SSL cache); `None` as when upstream cannot read them.
    pub details: Option<AmphoraDetails>,
}

/// The parts of an amphora's `GET /details` answer the templater reads.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct AmphoraDetails {
    pub cpu_count: Option<u32>,
    /// Space separated TuneD profiles; threads are pinned only when
    /// `amphora` is one of them.
    pub active_tuned_profiles: Option<String>,
    /// kB of free, buffers and cached memory.
    pub memory: Option<(i64, i64, i64)>,
}

impl HaproxyOptions {
    pub fn from_config(config: &Config) -> HaproxyOptions {
        let h = &config.haproxy_amphora;
        HaproxyOptions {
            base_path: h.base_path.clone(),
            base_cert_dir: h.base_cert_dir.clone(),
            connection_logging: h.connection_logging,
            user_log_format: h.user_log_format.clone(),
            stick_size: h.haproxy_stick_size.clone(),
            default_connection_limit: h.default_connection_limit,
            timeout_client_data: h.timeout_client_data,
            timeout_member_connect: h.timeout_member_connect,
            timeout_member_data: h.timeout_member_data,
            timeout_tcp_inspect: h.timeout_tcp_inspect,
            user_log_facility: config.amphora_agent.user_log_facility,
            administrative_log_facility: config.amphora_agent.administrative_log_facility,
            log_http: None,
            log_server: None,
            tls1_3_supported_ciphers: config.api.tls1_3_supported_ciphers.clone(),
            socket_path: None,
            details: None,
        }
    }
}

/// Protocols haproxy does not carry (keepalived's LVS does).
pub fn is_lvs(protocol: &str) -> bool {
    matches!(protocol, "UDP" | "SCTP")
}

/// Whether the load balancer has a listener for haproxy (upstream renders
/// and uploads haproxy's file only then).
pub fn needs_haproxy(lb: &LoadBalancer) -> bool {
    lb.listeners.iter().any(|l| !is_lvs(&l.protocol))
}

/// haproxy's `mode` for an Octavia protocol (upstream's `PROTOCOL_MAP`).
fn protocol_mode(protocol: &str) -> Result<&'static str, RenderError> {
    Ok(match protocol {
        "TCP" | "HTTPS" => "tcp",
        "HTTP" | "TERMINATED_HTTPS" | "PROMETHEUS" => "http",
        "PROXY" | "PROXYV2" => "proxy",
        other => return Err(RenderError(format!("protocol {other:?} cannot be rendered for haproxy"))),
    })
}

fn balance(algorithm: &str) -> &'static str {
    match algorithm {
        "LEAST_CONNECTIONS" => "leastconn",
        "SOURCE_IP" => "source",
        _ => "roundrobin",
    }
}

/// haproxy's name of an amphora in a `peers` section (upstream's
/// `base64_sha1_string` without the padding): base64 with `_` and `-` of the
/// SHA-1 of the id, a leading `-` turned into `x`.
pub fn peer_name(amphora_id: &str) -> String {
    let digest = Sha1::digest(amphora_id.as_bytes());
    let encoded = base64::engine::general_purpose::STANDARD_NO_PAD.encode(digest);
    let encoded: String = encoded
        .chars()
        .map(|c| {
            if c == '+' {
                '_'
            } else if c == '/' {
                '-'
            } else {
                c
            }
        })
        .collect();
    match encoded.strip_prefix('-') {
        Some(rest) => format!("x{rest}"),
        None => encoded,
    }
}

/// The name of the load balancer's `peers` section.
pub fn peers_name(lb_id: &str) -> String {
    format!("{}_peers", lb_id.replace('-', ""))
}

/// What a given haproxy version supports (upstream's
/// `feature_compatibility`).
#[derive(Debug, Clone, Copy)]
struct Features {
    http_reuse: bool,
    server_state_file: bool,
    pool_alpn: bool,
    prometheus: bool,
    insecure_fork: bool,
}

impl Features {
    fn of(version: Option<&str>) -> Result<Features, RenderError> {
        let (major, minor) = match version {
            None => (2, 6),
            Some(text) => {
                let bad = || RenderError(format!("haproxy version {text:?} is not MAJOR.MINOR[.PATCH]"));
                let mut parts = text.trim().split('.');
                let major: u32 = parts.next().and_then(|p| p.parse().ok()).ok_or_else(bad)?;
                let minor: u32 = parts
                    .next()
                    .map(|p| p.chars().take_while(char::is_ascii_digit).collect::<String>())
                    .and_then(|p| p.parse().ok())
                    .ok_or_else(bad)?;
                (major, minor)
            }
        };
        let at_least = |a: u32, b: u32| (major, minor) >= (a, b);
        Ok(Features {
            http_reuse: at_least(1, 6),
            server_state_file: at_least(1, 6),
            pool_alpn: at_least(1, 9),
            prometheus: major >= 2,
            insecure_fork: at_least(2, 2),
        })
    }
}

/// The connection limit a listener runs with: its own when positive, the
/// configured default otherwise.
fn connection_limit(listener: &Listener, opts: &HaproxyOptions) -> i64 {
    if listener.connection_limit > 0 { listener.connection_limit } else { opts.default_connection_limit }
}

/// Upstream's `timeout or default` (zero and unset both take the default).
fn or_default(value: Option<i64>, default: i64) -> i64 {
    value.filter(|v| *v != 0).unwrap_or(default)
}

fn log_format(lb: &LoadBalancer, protocol: &str, opts: &HaproxyOptions) -> String {
    let mut format = opts.user_log_format.replace("{{ project_id }}", &lb.project_id).replace("{{ lb_id }}", &lb.id);
    if !matches!(protocol, "HTTP" | "TERMINATED_HTTPS") {
        for http_only in ["%{+Q}r", "%r", "%{+Q}ST", "%ST"] {
            format = format.replace(http_only, "-");
        }
    }
    format.replace(' ', "\\ ")
}

/// Expected HTTP codes as haproxy's status regex: "200-202, 204" becomes
/// 200|201|202|204 (sorted: upstream joins a set, in no fixed order).
pub fn expected_codes(codes: &str) -> Result<String, RenderError> {
    let mut all = BTreeSet::new();
    for code in codes.split(',').map(str::trim).filter(|c| !c.is_empty()) {
        match code.split_once('-') {
            Some((low, high)) => {
                let bad = || RenderError(format!("expected_codes {codes:?}: {code:?} is not a range of codes"));
                let low: u16 = low.trim().parse().map_err(|_| bad())?;
                let high: u16 = high.trim().parse().map_err(|_| bad())?;
                if high < low || high - low > 1000 {
                    return Err(bad());
                }
                all.extend((low..=high).map(|c| c.to_string()));
            }
            None => {
                all.insert(code.to_owned());
            }
        }
    }
    Ok(all.into_iter().collect::<Vec<_>>().join("|"))
}

/// A cipher string split into the part for TLS up to 1.2 and the TLSv1.3
/// suites, each sorted; `None` for a part the versions leave out.
fn split_ciphers(
    ciphers: Option<&str>,
    versions: Option<&[String]>,
    opts: &HaproxyOptions,
) -> (Option<String>, Option<String>) {
    let Some(ciphers) = ciphers else { return (None, None) };
    let tls13: BTreeSet<&str> = opts.tls1_3_supported_ciphers.split(':').collect();
    let all: BTreeSet<&str> = ciphers.split(':').collect();
    let mut old = Some(all.difference(&tls13).copied().collect::<Vec<_>>().join(":"));
    let mut new = Some(all.intersection(&tls13).copied().collect::<Vec<_>>().join(":"));
    if let Some(versions) = versions {
        if !versions.iter().any(|v| v == "TLSv1.3") {
            new = None;
        }
        if !versions.iter().any(|v| matches!(v.as_str(), "SSLv3" | "TLSv1" | "TLSv1.1" | "TLSv1.2")) {
            old = None;
        }
    }
    (old, new)
}

/// ` ciphers X ciphersuites Y no-sslv3 ... alpn Z`, as both bind and server
/// lines carry them.
fn tls_options(
    ciphers: Option<&str>,
    versions: Option<&[String]>,
    alpn: Option<&str>,
    opts: &HaproxyOptions,
) -> String {
    let mut out = String::new();
    let (old, new) = split_ciphers(ciphers, versions, opts);
    if let Some(c) = old.filter(|c| !c.is_empty()) {
        let _ = write!(out, " ciphers {c}");
    }
    if let Some(c) = new.filter(|c| !c.is_empty()) {
        let _ = write!(out, " ciphersuites {c}");
    }
    if let Some(versions) = versions {
        for (version, option) in [
            ("SSLv3", "no-sslv3"),
            ("TLSv1", "no-tlsv10"),
            ("TLSv1.1", "no-tlsv11"),
            ("TLSv1.2", "no-tlsv12"),
            ("TLSv1.3", "no-tlsv13"),
        ] {
            if !versions.iter().any(|v| v == version) {
                let _ = write!(out, " {option}");
            }
        }
    }
    if let Some(alpn) = alpn {
        let _ = write!(out, " alpn {alpn}");
    }
    out
}

/// A listener's pools as upstream's `listener.pools`: its default pool,
/// unless that is being deleted (there are no L7 policies).
fn listener_pools<'a>(lb: &'a LoadBalancer, listener: &Listener) -> Vec<&'a Pool> {
    listener
        .default_pool_id
        .as_deref()
        .and_then(|id| lb.pool(id))
        .filter(|p| p.provisioning_status != "PENDING_DELETE")
        .into_iter()
        .collect()
}

fn live_monitor(pool: &Pool) -> Option<&HealthMonitor> {
    pool.health_monitor.as_ref().filter(|m| m.provisioning_status != "PENDING_DELETE")
}

/// The enabled health monitor of a pool, if any.
fn active_monitor(pool: &Pool) -> Option<&HealthMonitor> {
    live_monitor(pool).filter(|m| m.enabled)
}

/// Renders haproxy's configuration for `amphora`, one of `lb`'s amphorae.
pub fn combined(lb: &LoadBalancer, amphora: &AmphoraView, opts: &HaproxyOptions) -> Result<String, RenderError> {
    let features = Features::of(amphora.haproxy_version.as_deref())?;
    let listeners: Vec<&Listener> = lb.listeners.iter().filter(|l| !is_lvs(&l.protocol)).collect();
    for listener in &listeners {
        protocol_mode(&listener.protocol)?;
    }

    let sum: i64 = listeners.iter().filter(|l| l.enabled).map(|l| connection_limit(l, opts)).sum();
    let global_connection_limit = if 0 < sum && sum < MAX_MAXCONN { sum } else { MAX_MAXCONN };
    let socket = opts.socket_path.clone().unwrap_or_else(|| format!("{}/{}.sock", opts.base_path, lb.id));
    let state_file = features.server_state_file.then(|| format!("{}/{}/servers-state", opts.base_path, lb.id));

    let mut out = String::new();
    let _ = writeln!(out, "# Configuration for loadbalancer {}", lb.id);
    out.push_str("global\n    daemon\n    user nobody\n");
    let _ = writeln!(
        out,
        "    log {} local{}",
        opts.log_http.as_deref().filter(|s| !s.is_empty()).unwrap_or(DEFAULT_LOG_PATH),
        opts.user_log_facility
    );
    let _ = writeln!(
        out,
        "    log {} local{} notice",
        opts.log_server.as_deref().filter(|s| !s.is_empty()).unwrap_or(DEFAULT_LOG_PATH),
        opts.administrative_log_facility
    );
    let _ = writeln!(out, "    stats socket {socket} mode 0666 level user");
    if let Some(state_file) = &state_file {
        let _ = writeln!(out, "    server-state-file {state_file}");
    }
    let _ = writeln!(out, "    maxconn {global_connection_limit}");
    if lb.listeners.iter().any(|l| l.protocol == "TERMINATED_HTTPS")
        && let Some((free, buffers, cached)) = opts.details.as_ref().and_then(|d| d.memory)
    {
        // Upstream: (free + buffers + cached - 32 kB per connection) * 2 // 5.
        let ssl_cache_kb = ((free + buffers + cached - 32 * global_connection_limit) * 2).div_euclid(5);
        if ssl_cache_kb > 5000 {
            let _ = writeln!(out, "    tune.ssl.cachesize {}", ssl_cache_kb * 4);
        }
    }
    if let Some(details) = &opts.details {
        let tuned =
            details.active_tuned_profiles.as_deref().is_some_and(|p| p.split_whitespace().any(|p| p == "amphora"));
        if let (true, Some(cpus)) = (tuned, details.cpu_count)
            && cpus > 1
        {
            let _ = writeln!(out, "    nbthread {}", cpus - 1);
            let _ = writeln!(out, "    cpu-map auto:1/1-{} 1-{}", cpus - 1, cpus - 1);
        }
    }
    let ping = listeners.iter().filter(|l| l.enabled).any(|l| {
        listener_pools(lb, l).iter().filter(|p| p.enabled).any(|p| active_monitor(p).is_some_and(|m| m.kind == "PING"))
    });
    if ping {
        out.push_str("    external-check\n");
        if features.insecure_fork {
            out.push_str("    insecure-fork-wanted\n");
        }
    }
    out.push_str("\ndefaults\n");
    out.push_str(if opts.connection_logging { "    log global\n" } else { "    no log\n" });
    out.push_str(
        "    retries 3\n    option redispatch\n    option splice-request\n    option splice-response\n    option http-keep-alive\n",
    );

    if lb.topology == Topology::ActiveStandby {
        let _ = writeln!(out, "\npeers {}", peers_name(&lb.id));
        for amp in lb.amphorae.iter().filter(|a| a.status == "ALLOCATED") {
            let vrrp_ip = amp
                .vrrp_ip
                .as_deref()
                .ok_or_else(|| RenderError(format!("amphora {} has no VRRP address for the peers section", amp.id)))?;
            let _ = writeln!(out, "    peer {} {}:{PEER_PORT}", peer_name(&amp.id), vrrp_ip);
        }
    }

    if features.prometheus && lb.listeners.iter().any(|l| l.protocol == "PROMETHEUS") {
        out.push_str(
            "\nfrontend prometheus-exporter-internal-endpoint\n    bind 127.0.0.1:9101\n    mode http\n    no log\n    \
             http-request use-service prometheus-exporter if { path /metrics }\n    http-request reject\n    \
             timeout http-request 5s\n    timeout client 5s\nbackend prometheus-exporter-internal\n    mode http\n    \
             no log\n    balance first\n    timeout connect 5s\n    timeout server 5s\n    \
             server prometheus-internal 127.0.0.1:9102\n",
        );
    }

    if lb.enabled {
        for listener in listeners.iter().filter(|l| l.enabled) {
            frontend(&mut out, lb, listener, opts, features)?;
            for pool in listener_pools(lb, listener).into_iter().filter(|p| p.enabled) {
                backend(&mut out, lb, listener, pool, opts, features, state_file.is_some())?;
            }
        }
    }
    Ok(out)
}

fn listener_tls(listener: &Listener) -> bool {
    matches!(listener.protocol.as_str(), "TERMINATED_HTTPS" | "PROMETHEUS")
}

fn frontend(
    out: &mut String,
    lb: &LoadBalancer,
    listener: &Listener,
    opts: &HaproxyOptions,
    features: Features,
) -> Result<(), RenderError> {
    let _ = writeln!(out, "\nfrontend {}", listener.id);
    let _ = writeln!(out, "    maxconn {}", connection_limit(listener, opts));
    if listener.protocol == "TERMINATED_HTTPS" {
        out.push_str("    redirect scheme https if !{ ssl_fc }\n");
        if let Some(max_age) = listener.hsts_max_age {
            let mut directives = format!("max-age={max_age};");
            if listener.hsts_include_subdomains {
                directives.push_str(" includeSubDomains;");
            }
            if listener.hsts_preload {
                directives.push_str(" preload;");
            }
            let _ = writeln!(out, "    http-response set-header Strict-Transport-Security \"{directives}\"");
        }
    }
    let mut bind_options = String::new();
    if listener.default_tls_container_ref.is_some() {
        let _ = write!(bind_options, "ssl crt-list {}/{}/{}.pem", opts.base_cert_dir, lb.id, listener.id);
    }
    if listener_tls(listener) {
        let alpn = listener.alpn_protocols.as_ref().map(|a| a.join(","));
        bind_options.push_str(&tls_options(
            listener.tls_ciphers.as_deref(),
            listener.tls_versions.as_deref(),
            alpn.as_deref(),
            opts,
        ));
    }
    let bind = format!("bind {}:{} {}", lb.vip.address, listener.protocol_port, bind_options.trim());
    let _ = writeln!(out, "    {}", bind.trim());
    let _ = writeln!(out, "    mode {}", protocol_mode(&listener.protocol)?);
    if let Some(pool) = listener_pools(lb, listener).into_iter().find(|p| p.enabled) {
        let _ = writeln!(out, "    default_backend {}:{}", pool.id, listener.id);
    }
    let _ = writeln!(out, "    timeout client {}", or_default(listener.timeout_client_data, opts.timeout_client_data));
    let inspect = or_default(listener.timeout_tcp_inspect, opts.timeout_tcp_inspect);
    if inspect != 0 {
        let _ = writeln!(out, "    tcp-request inspect-delay {inspect}");
    }
    if listener.protocol == "PROMETHEUS" && features.prometheus {
        out.push_str("    default_backend prometheus-exporter-internal\n");
    }
    if opts.connection_logging {
        let _ = writeln!(out, "    log-format {}", log_format(lb, &listener.protocol, opts));
    }
    Ok(())
}

fn header_on(listener: &Listener, name: &str) -> bool {
    listener.insert_headers.get(name).is_some_and(|v| v.eq_ignore_ascii_case("true"))
}

/// Upstream's float rendering of an HTTP version ("1.0", "1.1").
fn http_version(text: &str) -> Result<(String, bool), RenderError> {
    let v: f64 = text.trim().parse().map_err(|_| RenderError(format!("http_version {text:?} is not a number")))?;
    Ok((format!("{v:?}"), v == 1.1))
}

fn backend(
    out: &mut String,
    lb: &LoadBalancer,
    listener: &Listener,
    pool: &Pool,
    opts: &HaproxyOptions,
    features: Features,
    state_file: bool,
) -> Result<(), RenderError> {
    let listener_mode = protocol_mode(&listener.protocol)?;
    let pool_mode = protocol_mode(&pool.protocol)?;
    let proxy_protocol = match pool.protocol.as_str() {
        "PROXY" => Some(1),
        "PROXYV2" => Some(2),
        _ => None,
    };
    let _ = writeln!(out, "\nbackend {}:{}", pool.id, listener.id);
    let _ = writeln!(out, "    mode {}", if proxy_protocol.is_some() { listener_mode } else { pool_mode });
    if features.http_reuse && (pool_mode == "http" || (pool_mode == "proxy" && listener_mode == "http")) {
        out.push_str("    http-reuse safe\n");
    }
    let _ = writeln!(out, "    balance {}", balance(&pool.lb_algorithm));
    let peers = (lb.topology == Topology::ActiveStandby).then(|| format!(" peers {}", peers_name(&lb.id)));
    let peers = peers.as_deref().unwrap_or("");
    if let Some(sp) = &pool.session_persistence {
        match sp.kind.as_str() {
            "SOURCE_IP" => {
                let _ = writeln!(out, "    stick-table type ipv6 size {}{peers}", opts.stick_size);
                out.push_str("    stick on src\n");
            }
            "APP_COOKIE" => {
                let cookie = sp
                    .cookie_name
                    .as_deref()
                    .ok_or_else(|| RenderError(format!("pool {}: APP_COOKIE persistence without a cookie", pool.id)))?;
                let _ = writeln!(out, "    stick-table type string len 64 size {}{peers}", opts.stick_size);
                let _ = writeln!(out, "    stick store-response res.cook({cookie})");
                let _ = writeln!(out, "    stick match req.cook({cookie})");
            }
            "HTTP_COOKIE" => out.push_str("    cookie SRV insert indirect nocache\n"),
            _ => {}
        }
    }
    let monitor = active_monitor(pool);
    if let Some(m) = monitor {
        if state_file {
            out.push_str("    load-server-state-from-file global\n");
        }
        let _ = writeln!(out, "    timeout check {}s", m.timeout);
        if matches!(m.kind.as_str(), "HTTP" | "HTTPS") {
            let method = m.http_method.as_deref().unwrap_or("GET");
            let url = m.url_path.as_deref().unwrap_or("/");
            match m.http_version.as_deref() {
                Some(version) => {
                    let (version, is_1_1) = http_version(version)?;
                    let _ = writeln!(out, "    option httpchk {method} {url} HTTP/{version}");
                    if let (true, Some(domain)) = (is_1_1, m.domain_name.as_deref()) {
                        let _ = writeln!(out, "    http-check send hdr Host {domain}");
                    }
                }
                None => {
                    let _ = writeln!(out, "    option httpchk {method} {url}");
                }
            }
            let codes = expected_codes(m.expected_codes.as_deref().unwrap_or("200"))?;
            let _ = writeln!(out, "    http-check expect rstatus {codes}");
        }
        if m.kind == "PING" {
            out.push_str("    option external-check\n");
            let _ = writeln!(out, "    external-check command {PING_WRAPPER}");
        }
    }
    if pool_mode == "http" {
        if header_on(listener, "X-Forwarded-For") {
            out.push_str("    option forwardfor\n");
        }
        if header_on(listener, "X-Forwarded-Port") {
            out.push_str("    http-request set-header X-Forwarded-Port %[dst_port]\n");
        }
    }
    if header_on(listener, "X-Forwarded-Proto") {
        match listener.protocol.as_str() {
            "HTTP" => out.push_str("    http-request set-header X-Forwarded-Proto http\n"),
            "TERMINATED_HTTPS" => out.push_str("    http-request set-header X-Forwarded-Proto https\n"),
            _ => {}
        }
    }
    if listener.protocol == "TERMINATED_HTTPS" {
        for (header, value) in [
            ("X-SSL-Client-Verify", "%[ssl_c_verify]"),
            ("X-SSL-Client-Has-Cert", "%[ssl_c_used]"),
            ("X-SSL-Client-DN", "%{+Q}[ssl_c_s_dn]"),
            ("X-SSL-Client-CN", "%{+Q}[ssl_c_s_dn(cn)]"),
            ("X-SSL-Issuer", "%{+Q}[ssl_c_i_dn]"),
            ("X-SSL-Client-SHA1", "%{+Q}[ssl_c_sha1,hex]"),
            ("X-SSL-Client-Not-Before", "%{+Q}[ssl_c_notbefore]"),
            ("X-SSL-Client-Not-After", "%{+Q}[ssl_c_notafter]"),
        ] {
            if header_on(listener, header) {
                let _ = writeln!(out, "    http-request set-header {header} {value}");
            }
        }
    }
    let _ = writeln!(out, "    fullconn {}", connection_limit(listener, opts));
    out.push_str("    option allbackups\n");
    let _ = writeln!(
        out,
        "    timeout connect {}",
        or_default(listener.timeout_member_connect, opts.timeout_member_connect)
    );
    let _ = writeln!(out, "    timeout server {}", or_default(listener.timeout_member_data, opts.timeout_member_data));
    let pool_alpn =
        if pool.tls_enabled && features.pool_alpn { pool.alpn_protocols.as_ref().map(|a| a.join(",")) } else { None };
    for member in pool.members.iter().filter(|m| m.provisioning_status != "PENDING_DELETE") {
        let line = server_line(listener, pool, member, monitor, proxy_protocol, pool_alpn.as_deref(), opts);
        let _ = writeln!(out, "    {}", line.trim());
    }
    Ok(())
}

fn server_line(
    listener: &Listener,
    pool: &Pool,
    member: &Member,
    monitor: Option<&HealthMonitor>,
    proxy_protocol: Option<u8>,
    pool_alpn: Option<&str>,
    opts: &HaproxyOptions,
) -> String {
    let mut line = format!("server {} {}:{} weight {}", member.id, member.address, member.protocol_port, member.weight);
    if let Some(m) = monitor {
        line.push_str(" check");
        if m.kind == "HTTPS" {
            line.push_str(" check-ssl verify none");
        }
        if let Some(alpn) = pool_alpn {
            let _ = write!(line, " check-alpn {alpn}");
        }
        let _ = write!(line, " inter {}s fall {} rise {}", m.delay, m.fall_threshold, m.rise_threshold);
        if let Some(address) = member.monitor_address.as_deref().filter(|a| !a.is_empty()) {
            let _ = write!(line, " addr {address}");
        }
        if let Some(port) = member.monitor_port.filter(|p| *p != 0) {
            let _ = write!(line, " port {port}");
        }
    }
    if pool.session_persistence.as_ref().is_some_and(|sp| sp.kind == "HTTP_COOKIE") {
        let _ = write!(line, " cookie {}", member.id);
    }
    match proxy_protocol {
        Some(1) => line.push_str(" send-proxy"),
        Some(_) if listener_tls(listener) => line.push_str(" send-proxy-v2-ssl-cn"),
        Some(_) => line.push_str(" send-proxy-v2"),
        None => {}
    }
    if member.backup {
        line.push_str(" backup");
    }
    if !member.enabled {
        line.push_str(" disabled");
    }
    if pool.tls_enabled {
        line.push_str(" ssl verify none sni ssl_fc_sni");
        line.push_str(&tls_options(pool.tls_ciphers.as_deref(), pool.tls_versions.as_deref(), pool_alpn, opts));
    }
    line
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::render::model::{HealthMonitor, Listener, Member, Pool, SessionPersistence};

    const LB: &str = "9b2a3c1e-6f0a-4a8e-9d1c-0e6b8f1d2a70";

    fn opts() -> HaproxyOptions {
        HaproxyOptions::from_config(&Config::for_tests("sqlite:///tmp/unused.db"))
    }

    fn amp() -> AmphoraView {
        AmphoraView::new("amp-1", Some("STANDALONE"))
    }

    /// The directive lines of one section (the line after `header`, up to
    /// the next blank line), trimmed.
    fn section(text: &str, header: &str) -> Vec<String> {
        let mut lines = text.lines().skip_while(|l| *l != header);
        assert!(lines.next().is_some(), "no {header:?} in\n{text}");
        lines.take_while(|l| !l.trim().is_empty()).map(|l| l.trim().to_owned()).collect()
    }

    fn http_lb() -> LoadBalancer {
        let mut lb = LoadBalancer::new(LB, "proj", Topology::Single, "10.0.0.10");
        let mut listener = Listener::new("lis-http", "HTTP", 80);
        listener.default_pool_id = Some("pool-1".into());
        listener.insert_headers.insert("X-Forwarded-For".into(), "true".into());
        listener.insert_headers.insert("X-Forwarded-Port".into(), "True".into());
        listener.insert_headers.insert("X-Forwarded-Proto".into(), "false".into());
        let mut pool = Pool::new("pool-1", "HTTP", "LEAST_CONNECTIONS");
        pool.members.push(Member::new("m-1", "192.168.1.5", 8080));
        let mut m2 = Member::new("m-2", "192.168.1.6", 8080);
        m2.weight = 5;
        pool.members.push(m2);
        let mut hm = HealthMonitor::new("hm-1", "HTTP", 5, 3, 2, 4);
        hm.url_path = Some("/healthz".into());
        hm.expected_codes = Some("200-202, 204".into());
        pool.health_monitor = Some(hm);
        lb.listeners.push(listener);
        lb.pools.push(pool);
        lb
    }

    #[test]
    fn http_listener_renders_upstreams_global_frontend_and_backend() {
        let text = combined(&http_lb(), &amp(), &opts()).expect("renders");
        assert!(text.starts_with(&format!("# Configuration for loadbalancer {LB}\n")), "{text}");
        assert_eq!(
            section(&text, "global"),
            [
                "daemon",
                "user nobody",
                "log /run/rsyslog/octavia/log local0",
                "log /run/rsyslog/octavia/log local1 notice",
                &format!("stats socket /var/lib/octavia/{LB}.sock mode 0666 level user"),
                &format!("server-state-file /var/lib/octavia/{LB}/servers-state"),
                "maxconn 50000",
            ]
        );
        assert_eq!(
            section(&text, "defaults"),
            [
                "log global",
                "retries 3",
                "option redispatch",
                "option splice-request",
                "option splice-response",
                "option http-keep-alive",
            ]
        );
        let log = format!(
            "proj\\ {LB}\\ %f\\ %ci\\ %cp\\ %t\\ %{{+Q}}r\\ %ST\\ %B\\ %U\\ %[ssl_c_verify]\\ %{{+Q}}[ssl_c_s_dn]\\ %b\\ %s\\ %Tt\\ %tsc"
        );
        assert_eq!(
            section(&text, "frontend lis-http"),
            [
                "maxconn 50000",
                "bind 10.0.0.10:80",
                "mode http",
                "default_backend pool-1:lis-http",
                "timeout client 50000",
                &format!("log-format {log}"),
            ]
        );
        assert_eq!(
            section(&text, "backend pool-1:lis-http"),
            [
                "mode http",
                "http-reuse safe",
                "balance leastconn",
                "load-server-state-from-file global",
                "timeout check 3s",
                "option httpchk GET /healthz",
                "http-check expect rstatus 200|201|202|204",
                "option forwardfor",
                "http-request set-header X-Forwarded-Port %[dst_port]",
                "fullconn 50000",
                "option allbackups",
                "timeout connect 5000",
                "timeout server 50000",
                "server m-1 192.168.1.5:8080 weight 1 check inter 5s fall 4 rise 2",
                "server m-2 192.168.1.6:8080 weight 5 check inter 5s fall 4 rise 2",
            ]
        );
        assert!(!text.contains("peers"), "SINGLE has no peers section:\n{text}");
    }

    #[test]
    fn http_version_1_1_with_a_domain_sends_a_host_header() {
        let mut lb = http_lb();
        let hm = lb.pools[0].health_monitor.as_mut().expect("monitor");
        hm.http_version = Some("1.1".into());
        hm.domain_name = Some("example.org".into());
        hm.http_method = Some("HEAD".into());
        let text = combined(&lb, &amp(), &opts()).expect("renders");
        let backend = section(&text, "backend pool-1:lis-http");
        assert!(backend.contains(&"option httpchk HEAD /healthz HTTP/1.1".to_owned()), "{backend:?}");
        assert!(backend.contains(&"http-check send hdr Host example.org".to_owned()), "{backend:?}");

        let hm = lb.pools[0].health_monitor.as_mut().expect("monitor");
        hm.http_version = Some("1.0".into());
        let text = combined(&lb, &amp(), &opts()).expect("renders");
        let backend = section(&text, "backend pool-1:lis-http");
        assert!(backend.contains(&"option httpchk HEAD /healthz HTTP/1.0".to_owned()), "{backend:?}");
        assert!(!backend.iter().any(|l| l.starts_with("http-check send")), "{backend:?}");
    }

    #[test]
    fn connection_limits_sum_enabled_listeners_and_default_unset_ones() {
        let mut lb = http_lb();
        lb.listeners[0].connection_limit = 100;
        let mut second = Listener::new("lis-tcp", "TCP", 22);
        second.connection_limit = -1;
        let mut disabled = Listener::new("lis-off", "TCP", 23);
        disabled.enabled = false;
        disabled.connection_limit = 7;
        let udp = Listener::new("lis-udp", "UDP", 53);
        lb.listeners.extend([second, disabled, udp]);
        let text = combined(&lb, &amp(), &opts()).expect("renders");
        assert!(section(&text, "global").contains(&"maxconn 50100".to_owned()), "{text}");
        assert_eq!(section(&text, "frontend lis-http")[0], "maxconn 100");
        assert_eq!(section(&text, "backend pool-1:lis-http")[9], "fullconn 100");
        assert_eq!(section(&text, "frontend lis-tcp")[0], "maxconn 50000");
        assert!(!text.contains("lis-off"), "disabled listeners are not rendered:\n{text}");
        assert!(!text.contains("lis-udp"), "UDP listeners are LVS's:\n{text}");

        for listener in &mut lb.listeners {
            listener.connection_limit = 600_000;
        }
        let text = combined(&lb, &amp(), &opts()).expect("renders");
        assert!(section(&text, "global").contains(&format!("maxconn {MAX_MAXCONN}")), "{text}");
    }

    #[test]
    fn listener_timeouts_override_the_defaults() {
        let mut lb = http_lb();
        let l = &mut lb.listeners[0];
        l.timeout_client_data = Some(1000);
        l.timeout_member_connect = Some(2000);
        l.timeout_member_data = Some(3000);
        l.timeout_tcp_inspect = Some(400);
        let text = combined(&lb, &amp(), &opts()).expect("renders");
        let frontend = section(&text, "frontend lis-http");
        assert!(frontend.contains(&"timeout client 1000".to_owned()), "{frontend:?}");
        assert!(frontend.contains(&"tcp-request inspect-delay 400".to_owned()), "{frontend:?}");
        let backend = section(&text, "backend pool-1:lis-http");
        assert!(backend.contains(&"timeout connect 2000".to_owned()), "{backend:?}");
        assert!(backend.contains(&"timeout server 3000".to_owned()), "{backend:?}");
    }

    #[test]
    fn active_standby_has_peers_and_shares_stick_tables() {
        let mut lb = LoadBalancer::new(LB, "proj", Topology::ActiveStandby, "10.0.0.10");
        let mut listener = Listener::new("lis-tcp", "TCP", 22);
        listener.default_pool_id = Some("pool-1".into());
        let mut pool = Pool::new("pool-1", "TCP", "SOURCE_IP");
        pool.session_persistence = Some(SessionPersistence::new("SOURCE_IP"));
        pool.health_monitor = Some(HealthMonitor::new("hm", "TCP", 10, 5, 3, 3));
        pool.members.push(Member::new("m-1", "192.168.1.5", 22));
        lb.listeners.push(listener);
        lb.pools.push(pool);
        for (id, ip, status) in [
            ("6e2bc8a0-2548-4fb7-a5f0-fb1ef4a696ce", "10.0.0.4", "ALLOCATED"),
            ("amp-8", "10.0.0.5", "ALLOCATED"),
            ("amp-gone", "10.0.0.6", "PENDING_DELETE"),
        ] {
            let mut a = AmphoraView::new(id, Some("MASTER"));
            a.vrrp_ip = Some(ip.into());
            a.status = status.into();
            lb.amphorae.push(a);
        }
        let text = combined(&lb, &lb.amphorae[0].clone(), &opts()).expect("renders");
        let peers = format!("peers {}_peers", LB.replace('-', ""));
        // Peer names computed with upstream's base64_sha1_string.
        assert_eq!(
            section(&text, &peers),
            ["peer 4KWSjCNhb1B84rv60BJd9a5qRtE 10.0.0.4:1025", "peer x91XrNQjEyuJfD7eN-yPxgxGGzc 10.0.0.5:1025"]
        );
        let backend = section(&text, "backend pool-1:lis-tcp");
        assert_eq!(
            backend[..4],
            [
                "mode tcp".to_owned(),
                "balance source".to_owned(),
                format!("stick-table type ipv6 size 10k peers {}_peers", LB.replace('-', "")),
                "stick on src".to_owned(),
            ]
        );
        assert!(!backend.iter().any(|l| l.starts_with("option httpchk")), "{backend:?}");
        assert!(backend.contains(&"server m-1 192.168.1.5:22 weight 1 check inter 10s fall 3 rise 3".to_owned()));

        lb.amphorae[1].vrrp_ip = None;
        let err = combined(&lb, &lb.amphorae[0].clone(), &opts()).expect_err("no VRRP address");
        assert!(err.to_string().contains("amp-8 has no VRRP address"), "{err}");
    }

    #[test]
    fn cookie_persistence_sticks_on_the_cookie() {
        let mut lb = http_lb();
        lb.pools[0].session_persistence = Some(SessionPersistence {
            cookie_name: Some("JSESSIONID".into()),
            ..SessionPersistence::new("APP_COOKIE")
        });
        let text = combined(&lb, &amp(), &opts()).expect("renders");
        let backend = section(&text, "backend pool-1:lis-http");
        assert_eq!(
            backend[3..6],
            [
                "stick-table type string len 64 size 10k",
                "stick store-response res.cook(JSESSIONID)",
                "stick match req.cook(JSESSIONID)",
            ]
        );

        lb.pools[0].session_persistence = Some(SessionPersistence::new("HTTP_COOKIE"));
        let text = combined(&lb, &amp(), &opts()).expect("renders");
        let backend = section(&text, "backend pool-1:lis-http");
        assert_eq!(backend[3], "cookie SRV insert indirect nocache");
        assert!(
            backend
                .contains(&"server m-1 192.168.1.5:8080 weight 1 check inter 5s fall 4 rise 2 cookie m-1".to_owned())
        );
    }

    #[test]
    fn members_carry_backup_disabled_and_monitor_address() {
        let mut lb = http_lb();
        let pool = &mut lb.pools[0];
        pool.members[0].backup = true;
        pool.members[0].monitor_address = Some("192.168.9.9".into());
        pool.members[0].monitor_port = Some(9000);
        pool.members[1].enabled = false;
        let mut leaving = Member::new("m-3", "192.168.1.7", 80);
        leaving.provisioning_status = "PENDING_DELETE".into();
        pool.members.push(leaving);
        let text = combined(&lb, &amp(), &opts()).expect("renders");
        let backend = section(&text, "backend pool-1:lis-http");
        assert!(
            backend.contains(
                &"server m-1 192.168.1.5:8080 weight 1 check inter 5s fall 4 rise 2 addr 192.168.9.9 port 9000 backup"
                    .to_owned()
            )
        );
        assert!(
            backend.contains(&"server m-2 192.168.1.6:8080 weight 5 check inter 5s fall 4 rise 2 disabled".to_owned())
        );
        assert!(!text.contains("m-3"), "members being deleted are left out:\n{text}");

        lb.pools[0].health_monitor.as_mut().expect("monitor").enabled = false;
        let text = combined(&lb, &amp(), &opts()).expect("renders");
        let backend = section(&text, "backend pool-1:lis-http");
        assert!(backend.contains(&"server m-1 192.168.1.5:8080 weight 1 backup".to_owned()), "{backend:?}");
        assert!(!backend.iter().any(|l| l.starts_with("timeout check")), "{backend:?}");
    }

    #[test]
    fn ping_monitors_need_external_checks() {
        let mut lb = http_lb();
        lb.pools[0].health_monitor = Some(HealthMonitor::new("hm", "PING", 4, 2, 1, 1));
        let text = combined(&lb, &amp(), &opts()).expect("renders");
        let global = section(&text, "global");
        assert_eq!(global[global.len() - 2..], ["external-check", "insecure-fork-wanted"]);
        let backend = section(&text, "backend pool-1:lis-http");
        assert!(backend.contains(&"option external-check".to_owned()));
        assert!(backend.contains(&format!("external-check command {PING_WRAPPER}")));

        let mut old = amp();
        old.haproxy_version = Some("2.0.33".into());
        let text = combined(&lb, &old, &opts()).expect("renders");
        assert!(!text.contains("insecure-fork-wanted"), "haproxy before 2.2 has no insecure-fork-wanted:\n{text}");

        old.haproxy_version = Some("1.5".into());
        let text = combined(&lb, &old, &opts()).expect("renders");
        assert!(!text.contains("server-state-file"), "{text}");
        assert!(!text.contains("http-reuse"), "{text}");
    }

    #[test]
    fn tcp_log_format_drops_http_fields_and_logging_can_be_off() {
        let mut lb = http_lb();
        lb.listeners[0].protocol = "TCP".into();
        lb.pools[0].protocol = "TCP".into();
        let text = combined(&lb, &amp(), &opts()).expect("renders");
        let log = format!(
            "log-format proj\\ {LB}\\ %f\\ %ci\\ %cp\\ %t\\ -\\ -\\ %B\\ %U\\ %[ssl_c_verify]\\ %{{+Q}}[ssl_c_s_dn]\\ %b\\ %s\\ %Tt\\ %tsc"
        );
        assert!(section(&text, "frontend lis-http").contains(&log), "{text}");
        let backend = section(&text, "backend pool-1:lis-http");
        assert!(!backend.contains(&"option forwardfor".to_owned()), "headers are HTTP's:\n{text}");

        let mut o = opts();
        o.connection_logging = false;
        let text = combined(&lb, &amp(), &o).expect("renders");
        assert_eq!(section(&text, "defaults")[0], "no log");
        assert!(!text.contains("log-format"), "{text}");
    }

    #[test]
    fn disabled_load_balancers_and_pools_have_no_proxies() {
        let mut lb = http_lb();
        lb.pools[0].enabled = false;
        let text = combined(&lb, &amp(), &opts()).expect("renders");
        assert!(!text.contains("backend "), "{text}");
        assert!(!section(&text, "frontend lis-http").iter().any(|l| l.starts_with("default_backend")));
        lb.enabled = false;
        let text = combined(&lb, &amp(), &opts()).expect("renders");
        assert!(!text.contains("frontend"), "{text}");
        assert!(section(&text, "global").contains(&"maxconn 50000".to_owned()));
    }

    #[test]
    fn terminated_https_binds_its_certificates_with_tls_options() {
        let mut lb = http_lb();
        let l = &mut lb.listeners[0];
        l.protocol = "TERMINATED_HTTPS".into();
        l.protocol_port = 443;
        l.default_tls_container_ref = Some("https://barbican/v1/containers/c".into());
        l.tls_ciphers = Some("TLS_AES_256_GCM_SHA384:ECDHE-RSA-AES256-GCM-SHA384:ECDHE-ECDSA-AES128-GCM-SHA256".into());
        l.tls_versions = Some(vec!["TLSv1.2".into(), "TLSv1.3".into()]);
        l.alpn_protocols = Some(vec!["h2".into(), "http/1.1".into()]);
        l.hsts_max_age = Some(31_536_000);
        l.hsts_preload = true;
        l.insert_headers.insert("X-Forwarded-Proto".into(), "true".into());
        l.insert_headers.insert("X-SSL-Client-CN".into(), "true".into());
        let text = combined(&lb, &amp(), &opts()).expect("renders");
        let frontend = section(&text, "frontend lis-http");
        assert_eq!(
            frontend[1..4],
            [
                "redirect scheme https if !{ ssl_fc }".to_owned(),
                "http-response set-header Strict-Transport-Security \"max-age=31536000; preload;\"".to_owned(),
                format!(
                    "bind 10.0.0.10:443 ssl crt-list /var/lib/octavia/certs/{LB}/lis-http.pem \
                 ciphers ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES256-GCM-SHA384 \
                 ciphersuites TLS_AES_256_GCM_SHA384 no-sslv3 no-tlsv10 no-tlsv11 alpn h2,http/1.1"
                ),
            ]
        );
        let backend = section(&text, "backend pool-1:lis-http");
        assert!(backend.contains(&"http-request set-header X-Forwarded-Proto https".to_owned()), "{backend:?}");
        assert!(backend.contains(&"http-request set-header X-SSL-Client-CN %{+Q}[ssl_c_s_dn(cn)]".to_owned()));
    }

    #[test]
    fn tls_pools_reencrypt_without_verification() {
        let mut lb = http_lb();
        let pool = &mut lb.pools[0];
        pool.tls_enabled = true;
        pool.alpn_protocols = Some(vec!["http/1.1".into()]);
        pool.tls_versions = Some(vec!["TLSv1.3".into()]);
        pool.tls_ciphers = Some("TLS_AES_128_GCM_SHA256".into());
        pool.health_monitor = Some(HealthMonitor::new("hm", "HTTPS", 5, 3, 2, 2));
        let text = combined(&lb, &amp(), &opts()).expect("renders");
        let backend = section(&text, "backend pool-1:lis-http");
        assert!(backend.contains(
            &"server m-1 192.168.1.5:8080 weight 1 check check-ssl verify none check-alpn http/1.1 inter 5s fall 2 \
              rise 2 ssl verify none sni ssl_fc_sni ciphersuites TLS_AES_128_GCM_SHA256 no-sslv3 no-tlsv10 \
              no-tlsv11 no-tlsv12 alpn http/1.1"
                .to_owned()
        ), "{backend:?}");
    }

    #[test]
    fn proxy_pools_send_the_proxy_protocol() {
        let mut lb = http_lb();
        lb.pools[0].protocol = "PROXYV2".into();
        lb.pools[0].health_monitor = None;
        let text = combined(&lb, &amp(), &opts()).expect("renders");
        let backend = section(&text, "backend pool-1:lis-http");
        assert_eq!(backend[..2], ["mode http", "http-reuse safe"]);
        assert!(backend.contains(&"server m-1 192.168.1.5:8080 weight 1 send-proxy-v2".to_owned()), "{backend:?}");
    }

    #[test]
    fn amphora_details_pin_threads_and_size_the_ssl_cache() {
        let mut lb = http_lb();
        lb.listeners[0].protocol = "TERMINATED_HTTPS".into();
        let mut o = opts();
        o.details = Some(AmphoraDetails {
            cpu_count: Some(4),
            active_tuned_profiles: Some("virtual-guest amphora".into()),
            memory: Some((3_000_000, 500_000, 500_000)),
        });
        let text = combined(&lb, &amp(), &o).expect("renders");
        let global = section(&text, "global");
        // (4,000,000 kB - 32 kB x 50,000 connections) x 2/5 = 960,000 kB,
        // four cache entries per kB.
        assert!(global.contains(&"tune.ssl.cachesize 3840000".to_owned()), "{global:?}");
        assert!(global.contains(&"nbthread 3".to_owned()), "{global:?}");
        assert!(global.contains(&"cpu-map auto:1/1-3 1-3".to_owned()), "{global:?}");

        o.details = Some(AmphoraDetails {
            cpu_count: Some(4),
            active_tuned_profiles: Some("virtual-guest".into()),
            memory: Some((1_000_000, 0, 0)),
        });
        let text = combined(&lb, &amp(), &o).expect("renders");
        assert!(!text.contains("nbthread"), "threads only with the amphora profile:\n{text}");
        assert!(!text.contains("cachesize"), "no cache below upstream's floor:\n{text}");
    }

    #[test]
    fn peer_names_match_upstreams_hash() {
        // Values from upstream's base64_sha1_string (python, octavia 19).
        assert_eq!(peer_name("6e2bc8a0-2548-4fb7-a5f0-fb1ef4a696ce"), "4KWSjCNhb1B84rv60BJd9a5qRtE");
        assert_eq!(peer_name("amp-1"), "nb4_5hKf-EYlJ2pGnOD7IGY2jng");
        assert_eq!(peer_name("amp-8"), "x91XrNQjEyuJfD7eN-yPxgxGGzc");
    }

    #[test]
    fn expected_codes_expand_ranges_and_reject_garbage() {
        assert_eq!(expected_codes("200").expect("valid"), "200");
        assert_eq!(expected_codes("200-203, 302").expect("valid"), "200|201|202|203|302");
        assert_eq!(expected_codes("404,200").expect("valid"), "200|404");
        assert!(expected_codes("200-abc").is_err());
        assert!(expected_codes("300-200").is_err());
    }

    #[test]
    fn bad_inputs_are_errors() {
        let mut a = amp();
        a.haproxy_version = Some("two".into());
        let err = combined(&http_lb(), &a, &opts()).expect_err("bad version");
        assert!(err.to_string().contains("haproxy version \"two\""), "{err}");
        let mut lb = http_lb();
        lb.listeners[0].protocol = "GOPHER".into();
        let err = combined(&lb, &amp(), &opts()).expect_err("bad protocol");
        assert!(err.to_string().contains("\"GOPHER\""), "{err}");
    }
}
