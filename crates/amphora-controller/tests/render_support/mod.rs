//! Load balancers to render, the octavia.conf they are rendered with, and
//! the real checkers (haproxy -c, keepalived --config-test, the agent's own
//! configuration loader), shared by the render tests.

#![allow(dead_code)]

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;

use amphora_controller::config::{Config, Topology};
use amphora_controller::render::haproxy::peer_name;
use amphora_controller::render::model::{
    AmphoraView, HealthMonitor, HostRoute, Listener, LoadBalancer, Member, Pool, SessionPersistence, Subnet, VrrpGroup,
};

/// A temp directory holding an octavia.conf whose paths point inside it.
pub struct Setup {
    pub dir: tempfile::TempDir,
    pub config_file: PathBuf,
    pub config: Config,
}

impl Setup {
    pub fn new() -> Setup {
        let dir = tempfile::tempdir().expect("temp dir");
        let root = dir.path().display().to_string();
        let text = format!(
            "[api_settings]\nauth_strategy = noauth\n\
             [database]\nconnection = sqlite:///{root}/octavia.db\n\
             [health_manager]\nheartbeat_key = insecure\ncontroller_ip_port_list = 192.0.2.10:5555, 192.0.2.11:5555\n\
             heartbeat_interval = 7\n\
             [haproxy_amphora]\nbase_path = {root}/amp\nbase_cert_dir = {root}/amp/certs\nhaproxy_stick_size = 20k\n\
             timeout_client_data = 40000\ndefault_connection_limit = 30000\n\
             [keepalived_vrrp]\nvrrp_check_interval = 3\nvrrp_garp_refresh_count = 4\n\
             [amphora_agent]\nuser_log_facility = 2\nadministrative_log_facility = 3\n"
        );
        let config_file = dir.path().join("octavia.conf");
        std::fs::write(&config_file, &text).expect("write octavia.conf");
        let config = amphora_controller::config::parse([(config_file.as_path(), text.as_str())])
            .expect("valid octavia.conf")
            .config;
        std::fs::create_dir_all(dir.path().join("amp/vrrp")).expect("amp dir");
        Setup { dir, config_file, config }
    }
}

pub const VRRP_INTERFACE: &str = "eth1";

fn amphorae(lb: &mut LoadBalancer, ips: &[&str]) {
    for (n, ip) in ips.iter().enumerate() {
        let role = match (lb.topology, n) {
            (Topology::Single, _) => "STANDALONE",
            (_, 0) => "MASTER",
            _ => "BACKUP",
        };
        let mut a = AmphoraView::new(&format!("a0000000-0000-4000-8000-{n:012}"), Some(role));
        a.vrrp_ip = Some((*ip).into());
        a.ha_ip = Some(lb.vip.address.clone());
        a.lb_network_ip = Some(format!("198.51.100.{}", n + 2));
        a.vrrp_id = Some(1);
        a.vrrp_priority = Some(if n == 0 { 100 } else { 90 });
        lb.amphorae.push(a);
    }
}

/// SINGLE: HTTP with two weighted members and an HTTP/1.1 monitor, timeouts,
/// a connection limit and inserted headers; TCP with SOURCE_IP persistence,
/// a TCP monitor on another address, backup and disabled members; a disabled
/// listener; a UDP listener (LVS's, not haproxy's).
pub fn single_http_tcp() -> LoadBalancer {
    let mut lb = LoadBalancer::new(
        "11111111-2222-4333-8444-555555555555",
        "6b3f0d7e1c2a4b5d8e9f0a1b2c3d4e5f",
        Topology::Single,
        "203.0.113.10",
    );
    let mut http = Listener::new("l1000000-0000-4000-8000-000000000001", "HTTP", 80);
    http.default_pool_id = Some("p1000000-0000-4000-8000-000000000001".into());
    http.connection_limit = 1000;
    http.timeout_client_data = Some(25_000);
    http.timeout_member_connect = Some(3_000);
    http.timeout_member_data = Some(20_000);
    http.timeout_tcp_inspect = Some(100);
    for header in ["X-Forwarded-For", "X-Forwarded-Port", "X-Forwarded-Proto"] {
        http.insert_headers.insert(header.into(), "true".into());
    }
    let mut web = Pool::new("p1000000-0000-4000-8000-000000000001", "HTTP", "ROUND_ROBIN");
    web.members.push(Member::new("m1000000-0000-4000-8000-000000000001", "192.168.10.11", 8080));
    let mut heavy = Member::new("m1000000-0000-4000-8000-000000000002", "192.168.10.12", 8080);
    heavy.weight = 7;
    web.members.push(heavy);
    let mut hm = HealthMonitor::new("h1000000-0000-4000-8000-000000000001", "HTTP", 5, 3, 2, 3);
    hm.url_path = Some("/healthz".into());
    hm.expected_codes = Some("200-202,204".into());
    hm.http_version = Some("1.1".into());
    hm.domain_name = Some("www.example.org".into());
    web.health_monitor = Some(hm);

    let mut tcp = Listener::new("l1000000-0000-4000-8000-000000000002", "TCP", 3306);
    tcp.default_pool_id = Some("p1000000-0000-4000-8000-000000000002".into());
    let mut db = Pool::new("p1000000-0000-4000-8000-000000000002", "TCP", "SOURCE_IP");
    db.session_persistence = Some(SessionPersistence::new("SOURCE_IP"));
    let mut primary = Member::new("m1000000-0000-4000-8000-000000000003", "192.168.20.11", 3306);
    primary.monitor_address = Some("192.168.20.111".into());
    primary.monitor_port = Some(9200);
    let mut backup = Member::new("m1000000-0000-4000-8000-000000000004", "192.168.20.12", 3306);
    backup.backup = true;
    let mut off = Member::new("m1000000-0000-4000-8000-000000000005", "192.168.20.13", 3306);
    off.enabled = false;
    db.members.extend([primary, backup, off]);
    db.health_monitor = Some(HealthMonitor::new("h1000000-0000-4000-8000-000000000002", "TCP", 10, 5, 3, 2));

    let mut disabled = Listener::new("l1000000-0000-4000-8000-000000000003", "HTTP", 8080);
    disabled.enabled = false;
    disabled.default_pool_id = None;
    let udp = Listener::new("l1000000-0000-4000-8000-000000000004", "UDP", 53);

    lb.listeners.extend([http, tcp, disabled, udp]);
    lb.pools.extend([web, db]);
    amphorae(&mut lb, &["198.18.0.4"]);
    lb
}

/// ACTIVE_STANDBY: HTTPS passthrough with a TLS-HELLO monitor, HTTP with
/// APP_COOKIE persistence and a PING monitor, TCP with SOURCE_IP shared
/// through the peers section.
pub fn active_standby() -> LoadBalancer {
    let mut lb = LoadBalancer::new(
        "22222222-3333-4444-8555-666666666666",
        "0a1b2c3d4e5f60718293a4b5c6d7e8f9",
        Topology::ActiveStandby,
        "10.20.0.100",
    );
    lb.vrrp_group = Some(VrrpGroup {
        name: lb.id.replace('-', ""),
        auth_type: "PASS".into(),
        auth_pass: "f00ba12".into(),
        advert_int: 2,
    });
    lb.vip_subnet = Some(Subnet {
        cidr: "10.20.0.0/24".into(),
        gateway_ip: Some("10.20.0.1".into()),
        host_routes: vec![HostRoute { destination: "172.31.0.0/16".into(), nexthop: "10.20.0.254".into() }],
    });
    let mut https = Listener::new("l2000000-0000-4000-8000-000000000001", "HTTPS", 443);
    https.default_pool_id = Some("p2000000-0000-4000-8000-000000000001".into());
    let mut tls = Pool::new("p2000000-0000-4000-8000-000000000001", "HTTPS", "LEAST_CONNECTIONS");
    tls.members.push(Member::new("m2000000-0000-4000-8000-000000000001", "10.30.0.11", 443));
    tls.members.push(Member::new("m2000000-0000-4000-8000-000000000002", "10.30.0.12", 443));
    tls.health_monitor = Some(HealthMonitor::new("h2000000-0000-4000-8000-000000000001", "TLS-HELLO", 6, 4, 2, 2));

    let mut http = Listener::new("l2000000-0000-4000-8000-000000000002", "HTTP", 80);
    http.default_pool_id = Some("p2000000-0000-4000-8000-000000000002".into());
    http.insert_headers.insert("X-Forwarded-For".into(), "True".into());
    let mut app = Pool::new("p2000000-0000-4000-8000-000000000002", "HTTP", "ROUND_ROBIN");
    app.session_persistence =
        Some(SessionPersistence { cookie_name: Some("JSESSIONID".into()), ..SessionPersistence::new("APP_COOKIE") });
    let mut w = Member::new("m2000000-0000-4000-8000-000000000003", "10.30.0.21", 8080);
    w.weight = 10;
    app.members.push(w);
    app.health_monitor = Some(HealthMonitor::new("h2000000-0000-4000-8000-000000000002", "PING", 3, 2, 1, 1));

    let mut tcp = Listener::new("l2000000-0000-4000-8000-000000000003", "TCP", 5432);
    tcp.default_pool_id = Some("p2000000-0000-4000-8000-000000000003".into());
    tcp.connection_limit = 250;
    let mut sticky = Pool::new("p2000000-0000-4000-8000-000000000003", "TCP", "SOURCE_IP");
    sticky.session_persistence = Some(SessionPersistence::new("SOURCE_IP"));
    sticky.members.push(Member::new("m2000000-0000-4000-8000-000000000004", "10.30.0.31", 5432));

    lb.listeners.extend([https, http, tcp]);
    lb.pools.extend([tls, app, sticky]);
    amphorae(&mut lb, &["10.20.0.4", "10.20.0.5"]);
    lb
}

/// SINGLE: TERMINATED_HTTPS with its certificate, TLS options and HSTS in
/// front of a re-encrypting HTTP_COOKIE pool with an HTTPS monitor; a PROXY
/// pool behind TCP; a pool being deleted and a monitor disabled.
pub fn terminated_https() -> LoadBalancer {
    let mut lb = LoadBalancer::new(
        "33333333-4444-4555-8666-777777777777",
        "fedcba98765443210fedcba987654321",
        Topology::Single,
        "203.0.113.30",
    );
    let mut term = Listener::new("l3000000-0000-4000-8000-000000000001", "TERMINATED_HTTPS", 443);
    term.default_pool_id = Some("p3000000-0000-4000-8000-000000000001".into());
    term.default_tls_container_ref = Some("http://barbican/v1/containers/8c6b".into());
    term.tls_ciphers = Some("ECDHE-RSA-AES256-GCM-SHA384:TLS_AES_128_GCM_SHA256:ECDHE-RSA-AES128-GCM-SHA256".into());
    term.tls_versions = Some(vec!["TLSv1.2".into(), "TLSv1.3".into()]);
    term.alpn_protocols = Some(vec!["h2".into(), "http/1.1".into()]);
    term.hsts_max_age = Some(3600);
    term.hsts_include_subdomains = true;
    for header in ["X-Forwarded-Proto", "X-SSL-Client-Verify", "X-SSL-Client-DN", "X-SSL-Issuer"] {
        term.insert_headers.insert(header.into(), "true".into());
    }
    let mut secure = Pool::new("p3000000-0000-4000-8000-000000000001", "HTTP", "ROUND_ROBIN");
    secure.session_persistence = Some(SessionPersistence::new("HTTP_COOKIE"));
    secure.tls_enabled = true;
    secure.tls_ciphers = Some("ECDHE-RSA-AES256-GCM-SHA384".into());
    secure.tls_versions = Some(vec!["TLSv1.2".into()]);
    secure.alpn_protocols = Some(vec!["http/1.1".into()]);
    secure.members.push(Member::new("m3000000-0000-4000-8000-000000000001", "10.40.0.11", 8443));
    let mut hm = HealthMonitor::new("h3000000-0000-4000-8000-000000000001", "HTTPS", 5, 5, 3, 3);
    hm.http_method = Some("HEAD".into());
    hm.url_path = Some("/status".into());
    secure.health_monitor = Some(hm);

    let mut proxied = Listener::new("l3000000-0000-4000-8000-000000000002", "TCP", 2222);
    proxied.default_pool_id = Some("p3000000-0000-4000-8000-000000000002".into());
    let mut proxy = Pool::new("p3000000-0000-4000-8000-000000000002", "PROXY", "ROUND_ROBIN");
    proxy.members.push(Member::new("m3000000-0000-4000-8000-000000000002", "10.40.0.21", 22));
    let mut off = HealthMonitor::new("h3000000-0000-4000-8000-000000000002", "TCP", 5, 5, 3, 3);
    off.enabled = false;
    proxy.health_monitor = Some(off);

    let mut leaving = Listener::new("l3000000-0000-4000-8000-000000000003", "HTTP", 8000);
    leaving.default_pool_id = Some("p3000000-0000-4000-8000-000000000003".into());
    let mut gone = Pool::new("p3000000-0000-4000-8000-000000000003", "HTTP", "ROUND_ROBIN");
    gone.provisioning_status = "PENDING_DELETE".into();

    lb.listeners.extend([term, proxied, leaving]);
    lb.pools.extend([secure, proxy, gone]);
    amphorae(&mut lb, &["198.18.0.30"]);
    lb
}

/// ACTIVE_STANDBY with an IPv6 VIP over IPv4 VRRP addresses: the VIP goes
/// to keepalived's excluded addresses.
pub fn active_standby_ipv6_vip() -> LoadBalancer {
    let mut lb = active_standby();
    lb.id = "55555555-6666-4777-8888-999999999999".into();
    lb.vrrp_group.as_mut().expect("group").name = lb.id.replace('-', "");
    lb.vip.address = "fd00:20::100".into();
    lb.vip_subnet =
        Some(Subnet { cidr: "fd00:20::/64".into(), gateway_ip: Some("fd00:20::1".into()), host_routes: vec![] });
    for amp in &mut lb.amphorae {
        amp.ha_ip = Some(lb.vip.address.clone());
    }
    lb
}

/// A disabled load balancer keeps its global section only.
pub fn disabled() -> LoadBalancer {
    let mut lb = single_http_tcp();
    lb.id = "44444444-5555-4666-8777-888888888888".into();
    lb.enabled = false;
    lb
}

/// SINGLE with UDP and SCTP listeners only (keepalived LVS, no haproxy):
/// UDP with SOURCE_IP persistence, a connection limit, a UDP-CONNECT
/// monitor, weighted, monitored-elsewhere, disabled and IPv6 members; SCTP
/// with least connections and an SCTP monitor; UDP with HTTP and TCP
/// monitors, a disabled pool, a disabled monitor, a disabled listener and
/// one without a pool.
pub fn lvs_listeners() -> LoadBalancer {
    let mut lb = LoadBalancer::new(
        "66666666-7777-4888-8999-aaaaaaaaaaaa",
        "11112222333344445555666677778888",
        Topology::Single,
        "203.0.113.60",
    );
    let listener = |n: u8, protocol: &str, port: u16, pool: Option<u8>| {
        let mut l = Listener::new(&format!("l6000000-0000-4000-8000-{n:012}"), protocol, port);
        l.default_pool_id = pool.map(|p| format!("p6000000-0000-4000-8000-{p:012}"));
        l
    };
    let pool = |n: u8, protocol: &str, algorithm: &str| {
        Pool::new(&format!("p6000000-0000-4000-8000-{n:012}"), protocol, algorithm)
    };
    let member =
        |n: u8, address: &str, port: u16| Member::new(&format!("m6000000-0000-4000-8000-{n:012}"), address, port);
    let monitor = |n: u8, kind: &str| HealthMonitor::new(&format!("h6000000-0000-4000-8000-{n:012}"), kind, 4, 2, 2, 3);

    let mut dns = listener(1, "UDP", 53, Some(1));
    dns.connection_limit = 500;
    let mut resolvers = pool(1, "UDP", "ROUND_ROBIN");
    resolvers.session_persistence = Some(SessionPersistence {
        persistence_timeout: Some(120),
        persistence_granularity: Some("255.255.255.0".into()),
        ..SessionPersistence::new("SOURCE_IP")
    });
    let mut heavy = member(2, "192.168.60.12", 5353);
    heavy.weight = 9;
    let mut elsewhere = member(3, "192.168.60.13", 5353);
    elsewhere.monitor_address = Some("192.168.60.113".into());
    elsewhere.monitor_port = Some(9053);
    let mut off = member(4, "192.168.60.14", 5353);
    off.enabled = false;
    resolvers.members.extend([member(1, "192.168.60.11", 5353), heavy, elsewhere, off, member(5, "fd00:60::15", 5353)]);
    resolvers.health_monitor = Some(monitor(1, "UDP-CONNECT"));

    let signalling = listener(2, "SCTP", 9000, Some(2));
    let mut peers = pool(2, "SCTP", "LEAST_CONNECTIONS");
    peers.members.extend([member(6, "192.168.61.11", 9000), member(7, "192.168.61.12", 9000)]);
    peers.health_monitor = Some(monitor(2, "SCTP"));

    let radius = listener(3, "UDP", 1812, Some(3));
    let mut auth = pool(3, "UDP", "SOURCE_IP");
    auth.session_persistence = Some(SessionPersistence::new("SOURCE_IP"));
    auth.members.push(member(8, "192.168.62.11", 1812));
    let mut http = monitor(3, "HTTP");
    http.url_path = Some("/health".into());
    http.expected_codes = Some("200,202-203".into());
    auth.health_monitor = Some(http);

    let sip = listener(4, "UDP", 5060, Some(4));
    let mut closed = pool(4, "UDP", "ROUND_ROBIN");
    closed.enabled = false;
    closed.members.push(member(9, "192.168.63.11", 5060));
    closed.health_monitor = Some(monitor(4, "TCP"));

    let syslog = listener(5, "UDP", 514, Some(5));
    let mut logs = pool(5, "UDP", "SOURCE_IP_PORT");
    logs.members.push(member(10, "192.168.64.11", 514));
    let mut quiet = monitor(5, "UDP-CONNECT");
    quiet.enabled = false;
    logs.health_monitor = Some(quiet);
    let mut tcp_checked = listener(7, "UDP", 4789, Some(7));
    tcp_checked.connection_limit = 0;
    let mut tunnels = pool(7, "UDP", "ROUND_ROBIN");
    let mut tunnel = member(11, "192.168.65.11", 4789);
    tunnel.monitor_port = Some(22);
    tunnels.members.push(tunnel);
    tunnels.health_monitor = Some(monitor(7, "TCP"));

    let mut ntp = listener(6, "UDP", 123, Some(1));
    ntp.enabled = false;
    let bare = listener(8, "UDP", 69, None);

    lb.listeners.extend([dns, signalling, radius, sip, syslog, tcp_checked, ntp, bare]);
    lb.pools.extend([resolvers, peers, auth, closed, logs, tunnels]);
    amphorae(&mut lb, &["198.18.0.60"]);
    lb
}

pub fn all_cases() -> Vec<(&'static str, LoadBalancer)> {
    vec![
        ("single_http_tcp", single_http_tcp()),
        ("active_standby", active_standby()),
        ("active_standby_ipv6_vip", active_standby_ipv6_vip()),
        ("terminated_https", terminated_https()),
        ("disabled", disabled()),
    ]
}

pub fn haproxy_binary() -> &'static str {
    ["/usr/sbin/haproxy", "/usr/local/sbin/haproxy", "/usr/bin/haproxy"]
        .into_iter()
        .find(|c| Path::new(c).exists())
        .unwrap_or("/usr/sbin/haproxy")
}

pub fn keepalived_binary() -> &'static str {
    ["/usr/sbin/keepalived", "/usr/local/sbin/keepalived", "/usr/bin/keepalived"]
        .into_iter()
        .find(|c| Path::new(c).exists())
        .unwrap_or("/usr/sbin/keepalived")
}

/// Writes the certificate files a TERMINATED_HTTPS listener's crt-list
/// names (a self-signed certificate made by openssl), as the agent would
/// have stored them.
pub fn install_certificates(lb: &LoadBalancer, base_cert_dir: &Path) {
    let dir = base_cert_dir.join(&lb.id);
    std::fs::create_dir_all(&dir).expect("cert dir");
    for listener in lb.listeners.iter().filter(|l| l.default_tls_container_ref.is_some()) {
        let pem = dir.join(format!("{}-cert.pem", listener.id));
        let key = dir.join(format!("{}-key.pem", listener.id));
        let status = Command::new("openssl")
            .args(["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=lb.example.org"])
            .arg("-keyout")
            .arg(&key)
            .arg("-out")
            .arg(&pem)
            .output()
            .expect("run openssl");
        assert!(status.status.success(), "openssl: {}", String::from_utf8_lossy(&status.stderr));
        let mut both = std::fs::read(&pem).expect("cert");
        both.extend(std::fs::read(&key).expect("key"));
        std::fs::write(&pem, both).expect("bundle");
        std::fs::write(dir.join(format!("{}.pem", listener.id)), format!("{}\n", pem.display())).expect("crt-list");
    }
}

/// `haproxy -c` on a rendered file, as the agent runs it (with the
/// amphora's local peer name).
pub fn haproxy_check(path: &Path, amphora_id: &str) -> Result<(), String> {
    let output = Command::new(haproxy_binary())
        .arg("-c")
        .arg("-f")
        .arg(path)
        .arg("-L")
        .arg(peer_name(amphora_id))
        .output()
        .map_err(|e| format!("cannot run haproxy: {e}"))?;
    let text = format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    if output.status.success() { Ok(()) } else { Err(text) }
}

/// `keepalived --config-test` on a rendered file, in network namespace
/// `netns` when given (keepalived checks that the interfaces it names
/// exist). keepalived fails its test on warnings too; the ones about (check)
/// scripts run without script_security are expected (as on upstream's amphorae, the
/// check script runs as root) and is the only one tolerated.
pub fn keepalived_check(path: &Path, netns: Option<&str>) -> Result<(), String> {
    let mut command = match netns {
        Some(ns) => {
            let mut c = Command::new("ip");
            c.args(["netns", "exec", ns, keepalived_binary()]);
            c
        }
        None => Command::new(keepalived_binary()),
    };
    let output =
        command.arg("-f").arg(path).arg("--config-test").output().map_err(|e| format!("cannot run keepalived: {e}"))?;
    let text = format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    let problems: Vec<&str> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .filter(|l| {
            !matches!(
                *l,
                "SECURITY VIOLATION - scripts are being executed but script_security not enabled."
                    | "SECURITY VIOLATION - check scripts are being executed but script_security not enabled."
            )
        })
        .collect();
    if output.status.success() || problems.is_empty() { Ok(()) } else { Err(problems.join("\n")) }
}

/// A config file split into its sections (a line that does not start with
/// whitespace opens one), each a set of directive lines with whitespace
/// collapsed; comments and blank lines dropped. Used for haproxy (sections
/// `global`, `frontend X`...) and the agent's INI (`[section]`).
pub fn sections(text: &str) -> BTreeMap<String, BTreeSet<String>> {
    let mut out: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut current = String::from("<top>");
    for line in text.lines() {
        let normal = line.split_whitespace().collect::<Vec<_>>().join(" ");
        if normal.is_empty() || normal.starts_with('#') {
            continue;
        }
        let indented = line.starts_with(char::is_whitespace);
        let ini_header = normal.starts_with('[') && normal.ends_with(']');
        if (!indented && !line.contains('=')) || ini_header {
            current = normal;
            out.entry(current.clone()).or_default();
        } else {
            out.entry(current.clone()).or_default().insert(normal);
        }
    }
    out
}

/// keepalived's nested blocks flattened: each directive keyed by the path
/// of the blocks around it (`vrrp_instance X/unicast_peer`), whitespace
/// collapsed.
pub fn keepalived_blocks(text: &str) -> BTreeMap<String, BTreeSet<String>> {
    let mut out: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut path: Vec<String> = Vec::new();
    for line in text.lines() {
        let normal = line.split_whitespace().collect::<Vec<_>>().join(" ");
        if normal.is_empty() || normal.starts_with('#') {
            continue;
        }
        if let Some(block) = normal.strip_suffix('{') {
            path.push(block.trim().to_owned());
            out.entry(path.join("/")).or_default();
        } else if normal == "}" {
            path.pop();
        } else {
            out.entry(path.join("/")).or_default().insert(normal);
        }
    }
    out
}
