//! The command line and configuration files: clear start-up errors naming
//! file, section and key; warnings for unknown options; layered files.

mod common;

use std::process::Command;

use amphora_proto::Message;
use common::*;

/// Runs the agent with one configuration file and returns its exit code and
/// standard error.
fn run_with(config: &str) -> (Option<i32>, String) {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("amphora-agent.conf");
    std::fs::write(&path, config).expect("write");
    let output =
        Command::new(env!("CARGO_BIN_EXE_amphora-agent")).arg("--config-file").arg(&path).output().expect("run agent");
    let stderr = String::from_utf8_lossy(&output.stderr).replace(&path.display().to_string(), "CONFIG");
    (output.status.code(), stderr)
}

#[test]
fn a_missing_amphora_id_stops_start_up() {
    let (code, stderr) = run_with("[haproxy_amphora]\nbind_port = 9443\n");
    assert_eq!(code, Some(2));
    assert!(stderr.contains("missing required option [amphora_agent] amphora_id (read CONFIG)"), "{stderr}");
}

#[test]
fn a_malformed_file_names_the_file_and_line() {
    let (code, stderr) = run_with("[amphora_agent\namphora_id = x\n");
    assert_eq!(code, Some(2));
    assert!(stderr.contains("CONFIG:"), "{stderr}");
    assert!(stderr.contains("malformed configuration"), "{stderr}");
}

#[test]
fn an_invalid_value_names_file_section_and_key() {
    let (code, stderr) = run_with("[amphora_agent]\namphora_id = x\n[haproxy_amphora]\nbind_port = lots\n");
    assert_eq!(code, Some(2));
    assert!(stderr.contains("CONFIG: [haproxy_amphora] bind_port = \"lots\""), "{stderr}");
}

#[test]
fn a_missing_certificate_names_the_option() {
    let (code, stderr) = run_with(
        "[amphora_agent]\namphora_id = x\nagent_server_ca = /nonexistent/ca.pem\nagent_server_cert = /nonexistent/server.pem\n",
    );
    assert_ne!(code, Some(0));
    assert!(stderr.contains("agent_server_ca = /nonexistent/ca.pem"), "{stderr}");
}

#[test]
fn a_missing_file_is_reported() {
    let output = Command::new(env!("CARGO_BIN_EXE_amphora-agent"))
        .args(["--config-file", "/nonexistent/amphora-agent.conf"])
        .output()
        .expect("run agent");
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("cannot read configuration file /nonexistent/amphora-agent.conf"), "{stderr}");
}

#[tokio::test]
async fn unknown_options_are_logged_and_ignored() {
    let agent = builder().option("amphora_agent", "colour", "blue").option("mystery", "x", "1").start();
    assert_eq!(agent.client().get("/1.0/info").await.status, 200);
    let logs = agent.logs();
    assert!(logs.contains("ignoring unknown option [amphora_agent] colour"), "{logs}");
    assert!(logs.contains("ignoring unknown section [mystery]"), "{logs}");
}

#[tokio::test]
async fn later_files_override_earlier_ones() {
    let agent = builder().config_file("[amphora_agent]\nmax_request_body_size = 2048\n").start();
    let reply = agent.client().put(&upload_path(&agent, LB), "#".repeat(4096)).await;
    assert_eq!(reply.status, 413);
    assert_eq!(reply.json::<Message>().message, "Request body too large");
}
