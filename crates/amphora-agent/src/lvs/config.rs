//! What the agent reads from a controller-rendered keepalived LVS
//! configuration: the listener's addresses and protocol, its pool, and the
//! member each `real_server` is (the controller names them in comments).
//! keepalived itself validates the file; this reading is lenient and only
//! feeds status reports.

use std::net::{IpAddr, SocketAddr};

/// The protocol of a listener served through IPVS.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Protocol {
    Udp,
    Sctp,
}

/// A member of the pool: its id and, unless it is disabled, the real
/// server it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    pub id: String,
    pub address: Option<SocketAddr>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LvsConfig {
    /// `# Listener {id} is disabled`: nothing is served.
    pub disabled: bool,
    pub protocol: Option<Protocol>,
    /// The virtual servers (VIP and port), from `virtual_server_group`
    /// blocks or `virtual_server {ip} {port}` lines.
    pub virtual_servers: Vec<SocketAddr>,
    /// Whether any `virtual_server` block exists.
    pub serves: bool,
    pub pool: Option<String>,
    pub members: Vec<Member>,
    /// Whether real servers are health-checked.
    pub health_checked: bool,
}

fn comment_id<'a>(line: &'a str, prefix: &str) -> Option<&'a str> {
    line.strip_prefix(prefix).map(str::trim).filter(|id| !id.is_empty() && !id.contains(char::is_whitespace))
}

fn socket(ip: &str, port: &str) -> Option<SocketAddr> {
    Some(SocketAddr::new(ip.parse::<IpAddr>().ok()?, port.parse().ok()?))
}

/// Reads a configuration; never fails, missing parts stay empty.
pub fn parse(text: &str) -> LvsConfig {
    let mut config = LvsConfig::default();
    let mut pending_member: Option<String> = None;
    let mut in_group = false;
    for raw in text.lines() {
        let line = raw.trim();
        if let Some(comment) = line.strip_prefix('#') {
            let comment = comment.trim();
            if let Some(rest) = comment.strip_prefix("Listener ")
                && rest.ends_with(" is disabled")
            {
                config.disabled = true;
            } else if let Some(id) = comment_id(comment, "Configuration for Pool ") {
                config.pool = Some(id.to_owned());
            } else if let Some(id) = comment_id(comment, "Configuration for Member ") {
                pending_member = Some(id.to_owned());
            } else if let Some(rest) = comment.strip_prefix("Member ")
                && let Some(id) = rest.strip_suffix(" is disabled")
            {
                config.members.push(Member { id: id.trim().to_owned(), address: None });
            }
            continue;
        }
        let words: Vec<&str> = line.split_whitespace().collect();
        match words.as_slice() {
            ["virtual_server_group", _, "{"] => in_group = true,
            ["}"] if in_group => in_group = false,
            [ip, port] if in_group => config.virtual_servers.extend(socket(ip, port)),
            ["virtual_server", "group", _, "{"] => config.serves = true,
            ["virtual_server", ip, port, "{"] => {
                config.serves = true;
                config.virtual_servers.extend(socket(ip, port));
            }
            ["protocol", protocol] => {
                config.protocol = match protocol.to_ascii_uppercase().as_str() {
                    "UDP" => Some(Protocol::Udp),
                    "SCTP" => Some(Protocol::Sctp),
                    _ => config.protocol,
                }
            }
            ["real_server", ip, port, "{"] => {
                if let Some(id) = pending_member.take() {
                    config.members.push(Member { id, address: socket(ip, port) });
                }
            }
            [checker, "{"] if matches!(*checker, "MISC_CHECK" | "HTTP_GET" | "TCP_CHECK" | "SSL_GET") => {
                config.health_checked = true;
            }
            _ => {}
        }
    }
    config
}

/// The configuration keepalived runs: the controller's, without its
/// `net_namespace` line (the agent starts keepalived inside the amphora
/// namespace itself, whatever that namespace is called).
pub fn runnable(text: &str) -> String {
    text.lines().filter(|line| !line.trim_start().starts_with("net_namespace")).flat_map(|line| [line, "\n"]).collect()
}

/// A listener serves one port: every virtual server of its configuration
/// must be on the same port, and none may be one that another listener
/// (`others`, by id) already serves with the same protocol.
pub fn check_virtual_servers(config: &LvsConfig, others: &[(String, LvsConfig)]) -> Result<(), String> {
    let mut ports: Vec<u16> = config.virtual_servers.iter().map(SocketAddr::port).collect();
    ports.sort_unstable();
    ports.dedup();
    if ports.len() > 1 {
        return Err(format!("virtual servers on ports {ports:?}: a listener serves one port"));
    }
    let protocol = config.protocol.unwrap_or(Protocol::Udp);
    for (id, other) in others {
        if other.protocol.unwrap_or(Protocol::Udp) != protocol {
            continue;
        }
        if let Some(address) = config.virtual_servers.iter().find(|a| other.virtual_servers.contains(a)) {
            return Err(format!("{address} is already served by listener {id}"));
        }
    }
    Ok(())
}

/// keepalived keywords whose value runs a program (as root, in the
/// amphora namespace).
const RUNS_A_PROGRAM: &[&str] = &[
    "misc_path",
    "notify",
    "notify_up",
    "notify_down",
    "notify_master",
    "notify_backup",
    "notify_fault",
    "notify_stop",
    "notify_deleted",
    "notify_master_rx_lower_pri",
    "script",
    "startup_script",
    "shutdown_script",
    "notify_fifo_script",
    "vrrp_notify_fifo_script",
    "lvs_notify_fifo_script",
];

/// The program a health-check script names without a path: upstream's
/// SCTP check, `amphora-health-checker sctp ...`, found on keepalived's
/// PATH (the agent's own directory first).
pub const HEALTH_CHECKER: &str = "amphora-health-checker";

/// Refuses what keepalived would run outside the agent's own checks: every
/// program a configuration names must be [`HEALTH_CHECKER`] or a file
/// directly in `check_dir` (where the agent writes `udp_check.sh`), and no
/// other file may be included. The controller's templates name nothing
/// else.
pub fn check_programs(text: &str, check_dir: &std::path::Path) -> Result<(), String> {
    for (number, raw) in text.lines().enumerate() {
        let line = raw.split(['#', '!']).next().unwrap_or("").trim();
        let (keyword, value) = line.split_once(char::is_whitespace).unwrap_or((line, ""));
        if keyword == "include" {
            return Err(format!("line {}: include is not accepted", number + 1));
        }
        if !RUNS_A_PROGRAM.contains(&keyword) {
            continue;
        }
        let value = value.trim();
        let command = value.strip_prefix('"').and_then(|v| v.split('"').next()).unwrap_or(value);
        let program = command.split_whitespace().next().unwrap_or("");
        let path = std::path::Path::new(program);
        let allowed = program == HEALTH_CHECKER
            || (path.parent() == Some(check_dir) && path.file_name().is_some_and(|name| name != ".." && name != "."));
        if !allowed {
            return Err(format!(
                "line {}: {keyword} runs {program:?}; only {HEALTH_CHECKER} or a script in {} may run",
                number + 1,
                check_dir.display()
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The shape of the controller's template (upstream's own rendering
    /// test), with UUIDs.
    pub const UDP: &str = "# Configuration for Loadbalancer 3c1b9f1e-0000-4000-8000-000000000001
# Configuration for Listener 3c1b9f1e-0000-4000-8000-000000000002

net_namespace amphora-haproxy

virtual_server_group ipv4-group {
    10.0.0.2 80
}

virtual_server group ipv4-group {
    lb_algo wrr
    lb_kind NAT
    protocol UDP
    persistence_timeout 33
    persistence_granularity 255.255.0.0
    delay_loop 30
    delay_before_retry 30
    retry 3


    # Configuration for Pool 3c1b9f1e-0000-4000-8000-000000000003
    # Configuration for HealthMonitor 3c1b9f1e-0000-4000-8000-000000000004
    # Configuration for Member 3c1b9f1e-0000-4000-8000-000000000005
    real_server 10.0.0.99 82 {
        weight 13
        uthreshold 98
        MISC_CHECK {
            misc_path \"/var/lib/octavia/lvs/check/udp_check.sh 10.0.0.99 82\"
            misc_timeout 31
        }
    }

    # Member 3c1b9f1e-0000-4000-8000-000000000006 is disabled
    # Configuration for Member 3c1b9f1e-0000-4000-8000-000000000007
    real_server fd00::98 82 {
        weight 13
    }

}

";

    #[test]
    fn the_controllers_template() {
        let config = parse(UDP);
        assert!(!config.disabled && config.serves && config.health_checked);
        assert_eq!(config.protocol, Some(Protocol::Udp));
        assert_eq!(config.virtual_servers, vec!["10.0.0.2:80".parse().expect("addr")]);
        assert_eq!(config.pool.as_deref(), Some("3c1b9f1e-0000-4000-8000-000000000003"));
        assert_eq!(
            config.members,
            vec![
                Member { id: "3c1b9f1e-0000-4000-8000-000000000005".into(), address: "10.0.0.99:82".parse().ok() },
                Member { id: "3c1b9f1e-0000-4000-8000-000000000006".into(), address: None },
                Member { id: "3c1b9f1e-0000-4000-8000-000000000007".into(), address: "[fd00::98]:82".parse().ok() },
            ]
        );
    }

    #[test]
    fn a_disabled_listener_serves_nothing() {
        let config = parse(
            "# Configuration for Loadbalancer lb\n# Listener 3c1b9f1e-0000-4000-8000-000000000002 is disabled\n\n\
             net_namespace amphora-haproxy\n\n",
        );
        assert!(config.disabled);
        assert!(!config.serves);
        assert_eq!(config.protocol, None);
    }

    #[test]
    fn sctp_and_a_plain_virtual_server() {
        let config =
            parse("virtual_server 203.0.113.5 9000 {\n    protocol SCTP\n    real_server 10.0.0.1 9000 {\n    }\n}\n");
        assert_eq!(config.protocol, Some(Protocol::Sctp));
        assert_eq!(config.virtual_servers, vec!["203.0.113.5:9000".parse().expect("addr")]);
        assert!(config.members.is_empty(), "a real server without the controller's comment is nobody's");
        assert!(!config.health_checked);
    }

    #[test]
    fn the_namespace_line_goes() {
        let runnable = runnable(UDP);
        assert!(!runnable.contains("net_namespace"));
        assert_eq!(runnable.lines().count(), UDP.lines().count() - 1);
        assert_eq!(parse(&runnable), parse(UDP));
    }

    #[test]
    fn the_controllers_checks_may_run_and_nothing_else() {
        let check_dir = std::path::Path::new("/var/lib/octavia/lvs/check");
        assert_eq!(check_programs(UDP, check_dir), Ok(()));
        let sctp = "real_server 10.0.0.1 9000 {\n    MISC_CHECK {\n        \
                    misc_path \"amphora-health-checker sctp -t 3 10.0.0.1 9000\"\n    }\n}\n";
        assert_eq!(check_programs(sctp, check_dir), Ok(()));
        for (hostile, why) in [
            ("misc_path \"/bin/sh -c 'rm -rf /'\"", "misc_path runs \"/bin/sh\""),
            ("misc_path \"/var/lib/octavia/lvs/check/../../../../bin/sh\"", "misc_path runs"),
            ("misc_path /tmp/x.sh", "misc_path runs \"/tmp/x.sh\""),
            ("    notify_down \"/usr/bin/touch /tmp/p\"", "notify_down runs \"/usr/bin/touch\""),
            ("include /etc/keepalived/other.conf", "include is not accepted"),
            ("misc_path \"./udp_check.sh 1 2\"", "misc_path runs \"./udp_check.sh\""),
        ] {
            let text = format!("virtual_server 10.0.0.2 80 {{\n{hostile}\n}}\n");
            let error = check_programs(&text, check_dir).expect_err(hostile);
            assert!(error.starts_with("line 2: ") && error.contains(why), "{hostile}: {error}");
        }
        // A comment may say anything.
        assert_eq!(check_programs("# misc_path /bin/sh\n! notify /bin/sh\n", check_dir), Ok(()));
    }

    #[test]
    fn a_listener_serves_one_port_no_other_listener_serves() {
        let mine = parse(UDP);
        assert_eq!(check_virtual_servers(&mine, &[]), Ok(()));
        let two_ports = parse(&UDP.replace("    10.0.0.2 80\n", "    10.0.0.2 80\n    10.0.0.3 22\n"));
        assert_eq!(
            check_virtual_servers(&two_ports, &[]),
            Err("virtual servers on ports [22, 80]: a listener serves one port".to_owned())
        );
        let other = ("other".to_owned(), parse("virtual_server 10.0.0.2 80 {\n    protocol UDP\n}\n"));
        assert_eq!(
            check_virtual_servers(&mine, std::slice::from_ref(&other)),
            Err("10.0.0.2:80 is already served by listener other".to_owned())
        );
        // The same address and port over SCTP is another service.
        let sctp = ("sctp".to_owned(), parse("virtual_server 10.0.0.2 80 {\n    protocol SCTP\n}\n"));
        assert_eq!(check_virtual_servers(&mine, &[sctp]), Ok(()));
    }
}
