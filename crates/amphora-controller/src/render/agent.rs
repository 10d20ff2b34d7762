//! The amphora agent's configuration file, as upstream's
//! `AgentJinjaTemplater` renders it (`amphora_agent_conf.template`): the
//! controller's own options the agent must share (heartbeat key and
//! targets, paths, the agent server's certificates) plus the amphora's id
//! and its load balancer's topology.

use std::fmt::Write as _;

use super::RenderError;
use crate::config::{Config, Topology};

fn python_bool(value: bool) -> &'static str {
    if value { "True" } else { "False" }
}

/// Renders the agent configuration of amphora `amphora_id`.
///
/// Fails when `[health_manager] heartbeat_key` is unset (upstream would
/// write the word `None` as the key, and no heartbeat would verify) or a
/// value would break the INI file (a line break).
pub fn agent_config(amphora_id: &str, topology: Topology, config: &Config) -> Result<String, RenderError> {
    let h = &config.haproxy_amphora;
    let a = &config.amphora_agent;
    let hm = &config.health;
    let heartbeat_key = hm.heartbeat_key.as_deref().ok_or_else(|| {
        RenderError("[health_manager] heartbeat_key is not set: amphorae could not sign their heartbeats".into())
    })?;
    let controllers = hm.controller_ip_port_list.join(", ");
    let values = [
        ("amphora_id", amphora_id),
        ("heartbeat_key", heartbeat_key),
        ("controller_ip_port_list", &controllers),
        ("base_path", &h.base_path),
        ("base_cert_dir", &h.base_cert_dir),
        ("haproxy_cmd", &h.haproxy_cmd),
        ("agent_server_ca", &a.agent_server_ca),
        ("agent_server_cert", &a.agent_server_cert),
        ("agent_server_network_dir", a.agent_server_network_dir.as_deref().unwrap_or("")),
        ("amphora_udp_driver", &a.amphora_udp_driver),
    ];
    if let Some((name, value)) = values.iter().find(|(_, value)| value.contains(['\n', '\r'])) {
        return Err(RenderError(format!("{name} {value:?} holds a line break")));
    }
    if amphora_id.trim().is_empty() {
        return Err(RenderError("the amphora id is empty".into()));
    }

    let mut out = String::new();
    let _ = write!(
        out,
        "[DEFAULT]\ndebug = {}\nuse_syslog = True\nsyslog_log_facility = LOG_LOCAL{}\n\n",
        python_bool(config.debug),
        a.administrative_log_facility
    );
    let _ = write!(
        out,
        "[haproxy_amphora]\nbase_cert_dir = {}\nbase_path = {}\nbind_host = {}\nbind_port = {}\nhaproxy_cmd = {}\n\
         user_log_facility = {}\nadministrative_log_facility = {}\n\n",
        h.base_cert_dir,
        h.base_path,
        h.bind_host,
        h.bind_port,
        h.haproxy_cmd,
        a.user_log_facility,
        a.administrative_log_facility
    );
    let _ = write!(
        out,
        "[health_manager]\ncontroller_ip_port_list = {controllers}\nheartbeat_interval = {}\nheartbeat_key = {heartbeat_key}\n\n",
        hm.heartbeat_interval
    );
    let _ = writeln!(out, "[amphora_agent]");
    let _ = writeln!(out, "agent_server_ca = {}", a.agent_server_ca);
    let _ = writeln!(out, "agent_server_cert = {}", a.agent_server_cert);
    if let Some(dir) = a.agent_server_network_dir.as_deref().filter(|d| !d.is_empty()) {
        let _ = writeln!(out, "agent_server_network_dir = {dir}");
    }
    let _ = writeln!(out, "agent_request_read_timeout = {}", a.agent_request_read_timeout);
    let _ = writeln!(out, "amphora_id = {amphora_id}");
    let _ = writeln!(out, "amphora_udp_driver = {}", a.amphora_udp_driver);
    let _ = writeln!(out, "agent_tls_protocol = {}", a.agent_tls_protocol);
    let _ = write!(out, "\n[controller_worker]\nloadbalancer_topology = {}\n", topology.as_str());
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn config(extra: &str) -> Config {
        let text = format!("[api_settings]\nauth_strategy = noauth\n{extra}");
        crate::config::parse([(Path::new("/o.conf"), text.as_str())]).expect("valid").config
    }

    #[test]
    fn renders_upstreams_agent_file() {
        let c = config(
            "[health_manager]\nheartbeat_key = s3cret\ncontroller_ip_port_list = 192.168.0.5:5555, [fd00::5]:5555\n\
             heartbeat_interval = 3\n",
        );
        let text = agent_config("amp-1", Topology::ActiveStandby, &c).expect("renders");
        let expected = "[DEFAULT]
debug = False
use_syslog = True
syslog_log_facility = LOG_LOCAL1

[haproxy_amphora]
base_cert_dir = /var/lib/octavia/certs
base_path = /var/lib/octavia
bind_host = ::
bind_port = 9443
haproxy_cmd = /usr/sbin/haproxy
user_log_facility = 0
administrative_log_facility = 1

[health_manager]
controller_ip_port_list = 192.168.0.5:5555, [fd00::5]:5555
heartbeat_interval = 3
heartbeat_key = s3cret

[amphora_agent]
agent_server_ca = /etc/octavia/certs/client_ca.pem
agent_server_cert = /etc/octavia/certs/server.pem
agent_request_read_timeout = 180
amphora_id = amp-1
amphora_udp_driver = keepalived_lvs
agent_tls_protocol = TLSv1.2

[controller_worker]
loadbalancer_topology = ACTIVE_STANDBY
";
        assert_eq!(text, expected);
    }

    #[test]
    fn operator_options_reach_the_agent() {
        let c = config(
            "[DEFAULT]\ndebug = true\n[health_manager]\nheartbeat_key = k\n[haproxy_amphora]\nbase_path = /srv/amp\n\
             bind_host = 0.0.0.0\n[amphora_agent]\nagent_server_network_dir = /etc/netns/amphora-haproxy\n\
             administrative_log_facility = 4\n",
        );
        let text = agent_config("amp-2", Topology::Single, &c).expect("renders");
        for line in [
            "debug = True",
            "syslog_log_facility = LOG_LOCAL4",
            "base_path = /srv/amp",
            "bind_host = 0.0.0.0",
            "agent_server_network_dir = /etc/netns/amphora-haproxy",
            "administrative_log_facility = 4",
            "loadbalancer_topology = SINGLE",
        ] {
            assert!(text.lines().any(|l| l == line), "{line:?} missing from\n{text}");
        }
    }

    #[test]
    fn unusable_values_are_errors() {
        let err = agent_config("amp-1", Topology::Single, &config("")).expect_err("no key");
        assert!(err.to_string().contains("heartbeat_key is not set"), "{err}");
        let c = config("[health_manager]\nheartbeat_key = k\n");
        let err = agent_config("amp\n[x]", Topology::Single, &c).expect_err("line break");
        assert!(err.to_string().contains("amphora_id"), "{err}");
    }
}
