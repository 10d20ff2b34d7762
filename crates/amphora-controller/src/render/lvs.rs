//! keepalived's LVS configuration of one UDP or SCTP listener, as
//! upstream's `octavia/common/jinja/lvs/` renders it: a virtual server group
//! per IP version of the VIP, the default pool's members as real servers
//! (NAT), each with the health check its pool's monitor asks for. The agent
//! runs one keepalived per such listener
//! (`PUT /1.0/listeners/{amphora}/{listener}/udp_listener`).

use std::fmt::Write as _;
use std::net::IpAddr;

use super::RenderError;
use super::haproxy::{expected_codes, is_lvs};
use super::model::{GONE, HealthMonitor, Listener, LoadBalancer, Member};

/// The namespace upstream's template names; the agent starts keepalived in
/// its own amphora namespace whatever this line says.
const NAMESPACE: &str = "amphora-haproxy";

/// What the rendering needs besides the load balancer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LvsOptions {
    /// The amphora's `[haproxy_amphora] base_path`: a UDP-CONNECT monitor
    /// runs `{base_path}/lvs/check/udp_check.sh`, which the agent writes.
    pub base_path: String,
}

impl LvsOptions {
    fn udp_check_script(&self) -> String {
        format!("{}/lvs/check/udp_check.sh", self.base_path)
    }
}

/// IPVS's scheduler for a pool's algorithm (upstream's `BALANCE_MAP`; any
/// other algorithm gets weighted round robin, as upstream).
fn scheduler(lb_algorithm: &str) -> &'static str {
    match lb_algorithm {
        "LEAST_CONNECTIONS" => "lc",
        "SOURCE_IP" => "sh",
        _ => "wrr",
    }
}

fn version(address: &str, what: &str) -> Result<u8, RenderError> {
    match address.parse::<IpAddr>() {
        Ok(IpAddr::V4(_)) => Ok(4),
        Ok(IpAddr::V6(_)) => Ok(6),
        Err(_) => Err(RenderError(format!("{what} {address:?} is not an IP address"))),
    }
}

fn live(status: &str) -> bool {
    !GONE.contains(&status)
}

/// Renders the LVS configuration of `listener` (UDP or SCTP) of `lb`.
pub fn listener(lb: &LoadBalancer, listener: &Listener, opts: &LvsOptions) -> Result<String, RenderError> {
    if !is_lvs(&listener.protocol) {
        return Err(RenderError(format!("listener {} is {}, not UDP or SCTP", listener.id, listener.protocol)));
    }
    let mut out = format!("# Configuration for Loadbalancer {}\n", lb.id);
    if listener.enabled {
        let _ = writeln!(out, "# Configuration for Listener {}\n", listener.id);
    } else {
        let _ = writeln!(out, "# Listener {} is disabled\n", listener.id);
    }
    let _ = writeln!(out, "net_namespace {NAMESPACE}\n");
    if !(lb.enabled && listener.enabled) {
        return Ok(out);
    }
    let pool = listener.default_pool_id.as_deref().and_then(|id| lb.pool(id)).filter(|p| live(&p.provisioning_status));
    let Some(pool) = pool else { return Ok(out) };
    if !is_lvs(&pool.protocol) {
        return Err(RenderError(format!(
            "pool {} of listener {} is {}, not UDP or SCTP",
            pool.id, listener.id, pool.protocol
        )));
    }
    let vip_version = version(&lb.vip.address, "the VIP")?;
    let monitor = pool.health_monitor.as_ref().filter(|m| live(&m.provisioning_status) && m.enabled);
    let mut members = Vec::new();
    for member in pool.members.iter().filter(|m| live(&m.provisioning_status)) {
        members.push((version(&member.address, "member address")?, member));
    }
    let _ = writeln!(
        out,
        "virtual_server_group ipv{vip_version}-group {{\n    {} {}\n}}\n",
        lb.vip.address, listener.protocol_port
    );
    let _ = writeln!(out, "virtual_server group ipv{vip_version}-group {{");
    let _ = writeln!(out, "    lb_algo {}", scheduler(&pool.lb_algorithm));
    out.push_str("    lb_kind NAT\n");
    let _ = writeln!(out, "    protocol {}", listener.protocol);
    if let Some(sp) = pool.session_persistence.as_ref().filter(|sp| sp.kind == "SOURCE_IP") {
        let timeout = sp.persistence_timeout.filter(|t| *t != 0).unwrap_or(360);
        let _ = writeln!(out, "    persistence_timeout {timeout}");
        let granularity = match sp.persistence_granularity.as_deref().filter(|g| !g.is_empty()) {
            Some(g) => g.to_owned(),
            None if vip_version == 4 => "255.255.255.255".into(),
            None => "128".into(),
        };
        let _ = writeln!(out, "    persistence_granularity {granularity}");
    }
    if let Some(m) = monitor {
        let _ = writeln!(out, "    delay_loop {}\n    delay_before_retry {}", m.delay, m.delay);
        if m.fall_threshold != 0 {
            let _ = writeln!(out, "    retry {}", m.fall_threshold);
        }
    }
    if pool.enabled {
        let _ = writeln!(out, "    # Configuration for Pool {}", pool.id);
    } else {
        let _ = writeln!(out, "    # Pool {} is disabled", pool.id);
    }
    if let Some(m) = monitor {
        let _ = writeln!(out, "    # Configuration for HealthMonitor {}", m.id);
    }
    if pool.enabled {
        for (_, member) in members.iter().filter(|(v, _)| *v == vip_version) {
            real_server(&mut out, listener, member, monitor, opts)?;
        }
    }
    out.push_str("}\n");
    Ok(out)
}

fn real_server(
    out: &mut String,
    listener: &Listener,
    member: &Member,
    monitor: Option<&HealthMonitor>,
    opts: &LvsOptions,
) -> Result<(), RenderError> {
    if !member.enabled {
        let _ = writeln!(out, "    # Member {} is disabled", member.id);
        return Ok(());
    }
    let _ = writeln!(out, "    # Configuration for Member {}", member.id);
    let _ = writeln!(out, "    real_server {} {} {{", member.address, member.protocol_port);
    let _ = writeln!(out, "        weight {}", member.weight);
    if listener.connection_limit > 0 {
        let _ = writeln!(out, "        uthreshold {}", listener.connection_limit);
    }
    if let Some(m) = monitor {
        let address = member.monitor_address.as_deref().filter(|a| !a.is_empty()).unwrap_or(&member.address);
        let port = member.monitor_port.filter(|p| *p != 0).unwrap_or(member.protocol_port);
        match m.kind.as_str() {
            "UDP-CONNECT" => {
                let _ = writeln!(
                    out,
                    "        MISC_CHECK {{\n            misc_path \"{} {address} {port}\"\n            misc_timeout {}\n        }}",
                    opts.udp_check_script(),
                    m.timeout
                );
            }
            "SCTP" => {
                let _ = writeln!(
                    out,
                    "        MISC_CHECK {{\n            misc_path \"amphora-health-checker sctp -t {} {address} {port}\"\n            misc_timeout {}\n        }}",
                    m.timeout,
                    m.timeout + 1
                );
            }
            "HTTP" if m.http_method.as_deref() == Some("GET") => {
                out.push_str("        HTTP_GET {\n");
                let codes = expected_codes(m.expected_codes.as_deref().unwrap_or_default())?;
                let path = m.url_path.as_deref().unwrap_or("/");
                for code in codes.split('|').filter(|c| !c.is_empty()) {
                    let _ = writeln!(
                        out,
                        "            url {{\n              path {path}\n              status_code {code}\n            }}"
                    );
                }
                let _ = writeln!(
                    out,
                    "            connect_ip {address}\n            connect_port {port}\n            connect_timeout {}\n        }}",
                    m.timeout
                );
            }
            "TCP" => {
                let _ = writeln!(
                    out,
                    "        TCP_CHECK {{\n            connect_ip {address}\n            connect_port {port}\n            connect_timeout {}\n        }}",
                    m.timeout
                );
            }
            // Upstream renders no check for the other types on LVS pools
            // (the API refuses them there).
            _ => {}
        }
    }
    out.push_str("    }\n");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Topology;
    use crate::render::model::{Pool, SessionPersistence};

    fn opts() -> LvsOptions {
        LvsOptions { base_path: "/var/lib/octavia".into() }
    }

    fn udp_lb() -> LoadBalancer {
        let mut lb = LoadBalancer::new("lb-1", "project", Topology::Single, "203.0.113.5");
        let mut listener = Listener::new("listener-1", "UDP", 53);
        listener.default_pool_id = Some("pool-1".into());
        let mut pool = Pool::new("pool-1", "UDP", "ROUND_ROBIN");
        pool.members.push(Member::new("member-1", "192.0.2.11", 5353));
        let mut heavy = Member::new("member-2", "192.0.2.12", 5353);
        heavy.weight = 5;
        pool.members.push(heavy);
        pool.health_monitor = Some(HealthMonitor::new("hm-1", "UDP-CONNECT", 4, 2, 2, 3));
        lb.listeners.push(listener);
        lb.pools.push(pool);
        lb
    }

    #[test]
    fn a_udp_listener_is_a_nat_virtual_server_with_a_udp_check_per_member() {
        let lb = udp_lb();
        let text = listener(&lb, &lb.listeners[0], &opts()).expect("renders");
        assert!(text.contains("virtual_server_group ipv4-group {\n    203.0.113.5 53\n}"), "{text}");
        for line in ["lb_algo wrr", "lb_kind NAT", "protocol UDP", "delay_loop 4", "delay_before_retry 4", "retry 3"] {
            assert!(text.contains(&format!("\n    {line}\n")), "{line} missing:\n{text}");
        }
        assert!(text.contains("real_server 192.0.2.12 5353 {\n        weight 5\n"), "{text}");
        assert!(text.contains("misc_path \"/var/lib/octavia/lvs/check/udp_check.sh 192.0.2.11 5353\""), "{text}");
        assert_eq!(text.matches("MISC_CHECK").count(), 2);
    }

    #[test]
    fn source_ip_persistence_takes_upstreams_defaults_by_vip_version() {
        let mut lb = udp_lb();
        lb.pools[0].session_persistence = Some(SessionPersistence::new("SOURCE_IP"));
        let text = listener(&lb, &lb.listeners[0], &opts()).expect("renders");
        assert!(text.contains("persistence_timeout 360\n    persistence_granularity 255.255.255.255\n"), "{text}");
        lb.vip.address = "2001:db8::5".into();
        lb.pools[0].members[0].address = "2001:db8:1::11".into();
        lb.pools[0].session_persistence =
            Some(SessionPersistence { persistence_timeout: Some(60), ..SessionPersistence::new("SOURCE_IP") });
        let text = listener(&lb, &lb.listeners[0], &opts()).expect("renders");
        assert!(text.contains("virtual_server group ipv6-group"), "{text}");
        assert!(text.contains("persistence_timeout 60\n    persistence_granularity 128\n"), "{text}");
        // Only the member of the VIP's IP version is a real server.
        assert!(text.contains("real_server 2001:db8:1::11 5353"), "{text}");
        assert!(!text.contains("192.0.2.12"), "{text}");
    }

    #[test]
    fn a_disabled_listener_or_member_or_pool_serves_nothing_of_it() {
        let mut lb = udp_lb();
        lb.pools[0].members[1].enabled = false;
        let text = listener(&lb, &lb.listeners[0], &opts()).expect("renders");
        assert!(text.contains("# Member member-2 is disabled") && !text.contains("192.0.2.12"), "{text}");
        lb.pools[0].enabled = false;
        let text = listener(&lb, &lb.listeners[0], &opts()).expect("renders");
        assert!(!text.contains("real_server"), "{text}");
        lb.listeners[0].enabled = false;
        let text = listener(&lb, &lb.listeners[0], &opts()).expect("renders");
        assert!(!text.contains("virtual_server") && text.contains("net_namespace amphora-haproxy"), "{text}");
    }

    #[test]
    fn sctp_and_http_monitors_render_their_checks_and_a_tcp_listener_is_refused() {
        let mut lb = udp_lb();
        lb.listeners[0].protocol = "SCTP".into();
        lb.pools[0].protocol = "SCTP".into();
        lb.pools[0].lb_algorithm = "LEAST_CONNECTIONS".into();
        lb.pools[0].health_monitor = Some(HealthMonitor::new("hm-1", "SCTP", 4, 2, 2, 3));
        lb.pools[0].members[0].monitor_address = Some("192.0.2.99".into());
        lb.pools[0].members[0].monitor_port = Some(9000);
        let text = listener(&lb, &lb.listeners[0], &opts()).expect("renders");
        assert!(text.contains("lb_algo lc") && text.contains("protocol SCTP"), "{text}");
        assert!(text.contains("misc_path \"amphora-health-checker sctp -t 2 192.0.2.99 9000\"\n"), "{text}");
        assert!(text.contains("misc_timeout 3\n"), "{text}");

        let mut hm = HealthMonitor::new("hm-1", "HTTP", 4, 2, 2, 3);
        hm.expected_codes = Some("200-201".into());
        hm.url_path = Some("/health".into());
        lb.pools[0].health_monitor = Some(hm);
        let text = listener(&lb, &lb.listeners[0], &opts()).expect("renders");
        assert_eq!(text.matches("HTTP_GET").count(), 2, "{text}");
        assert_eq!(text.matches("path /health").count(), 4, "{text}");
        assert!(text.contains("status_code 201"), "{text}");

        lb.listeners[0].protocol = "TCP".into();
        assert!(listener(&lb, &lb.listeners[0], &opts()).is_err());
    }
}
