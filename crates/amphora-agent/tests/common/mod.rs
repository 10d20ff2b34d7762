//! Shared helpers for the agent's integration tests.

#![allow(dead_code)]

use std::time::Duration;

use amphora_testkit::agent::{Agent, AgentBuilder};

pub const LB: &str = "5e4bd1ae-4a73-4d26-a4b5-4a3ac1b8a0a2";
pub const LISTENER: &str = "0b4b3c10-cb6e-4b1b-8c36-6d4a1e4a7fb1";
/// haproxy's frontend port inside the test namespace.
pub const FRONTEND_PORT: u16 = 8080;
/// The test backend's port inside the test namespace.
pub const BACKEND_PORT: u16 = 8081;
pub const WAIT: Duration = Duration::from_secs(20);

pub fn builder() -> AgentBuilder {
    Agent::builder(env!("CARGO_BIN_EXE_amphora-agent"))
}

/// An agent with its own namespace.
pub fn agent() -> Agent {
    builder().start()
}

/// A configuration shaped like the controller's, serving `listener` on
/// `127.0.0.1:{FRONTEND_PORT}` and tagging responses with `version`.
pub fn lb_config(agent: &Agent, lb: &str, listener: &str, version: u32) -> String {
    lb_config_with(agent, lb, listener, version, &format!("127.0.0.1:{FRONTEND_PORT}"), 1000)
}

pub fn lb_config_with(agent: &Agent, lb: &str, listener: &str, version: u32, bind: &str, maxconn: u64) -> String {
    let base = agent.base_path();
    format!(
        "# Configuration for loadbalancer {lb}
global
    daemon
    user nobody
    stats socket {socket} mode 0666 level user
    server-state-file {base}/{lb}/servers-state
    maxconn {maxconn}

defaults
    load-server-state-from-file global
    retries 3
    option redispatch
    timeout connect 5s
    timeout client 30s
    timeout server 30s

frontend {listener}
    maxconn {maxconn}
    bind {bind}
    mode http
    http-response set-header X-Config-Version {version}
    default_backend pool:{listener}

backend pool:{listener}
    mode http
    server member-1 127.0.0.1:{BACKEND_PORT}
",
        socket = agent.stats_socket(lb).display(),
        base = base.display(),
    )
}

pub fn upload_path(agent: &Agent, lb: &str) -> String {
    format!("/1.0/loadbalancer/{}/{lb}/haproxy", agent.amphora_id)
}

/// `ip -j` output of a command in a namespace.
pub fn ip_json(namespace: &str, args: &[&str]) -> serde_json::Value {
    let output = std::process::Command::new("ip").args(["-j", "-n", namespace]).args(args).output().expect("ip");
    serde_json::from_slice(&output.stdout).expect("ip -j output")
}

/// Addresses of an interface, without the kernel's own link-local ones.
pub fn addresses_of(namespace: &str, interface: &str) -> Vec<String> {
    let json = ip_json(namespace, &["addr", "show", "dev", interface]);
    json[0]["addr_info"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter(|i| i["scope"] != "link")
                .map(|i| format!("{}/{}", i["local"].as_str().unwrap_or(""), i["prefixlen"]))
                .collect()
        })
        .unwrap_or_default()
}
