//! The agent's own records go to the syslog socket when the configuration
//! asks for it as upstream's does (log targets, or `use_syslog`), with the
//! administrative facility; without the socket they go to standard error
//! and the agent serves on.

mod common;

use std::os::unix::net::UnixDatagram;
use std::time::{Duration, Instant};

use common::*;

/// A unix datagram socket standing in for rsyslog's.
struct FakeSyslog {
    _dir: tempfile::TempDir,
    path: String,
    socket: UnixDatagram,
}

fn fake_syslog() -> FakeSyslog {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("log");
    let socket = UnixDatagram::bind(&path).expect("bind the syslog socket");
    socket.set_read_timeout(Some(Duration::from_millis(200))).expect("read timeout");
    FakeSyslog { path: path.display().to_string(), _dir: dir, socket }
}

impl FakeSyslog {
    /// Receives records until one contains `needle`, or panics at the
    /// deadline with what did arrive.
    fn record_containing(&self, needle: &str) -> String {
        let deadline = Instant::now() + WAIT;
        let mut seen = Vec::new();
        let mut buffer = vec![0u8; 65536];
        while Instant::now() < deadline {
            if let Ok(n) = self.socket.recv(&mut buffer) {
                let record = String::from_utf8_lossy(&buffer[..n]).into_owned();
                if record.contains(needle) {
                    return record;
                }
                seen.push(record);
            }
        }
        panic!("no record containing {needle:?} within {WAIT:?}; received {seen:#?}");
    }
}

/// `<PRI>amphora-agent[PID]: ` split into PRI and the rest after the tag.
fn split_record(record: &str) -> (u16, &str) {
    let (pri, rest) = record.strip_prefix('<').and_then(|r| r.split_once('>')).expect("a <PRI> prefix");
    let rest = rest.strip_prefix("amphora-agent[").expect("the amphora-agent tag");
    let (pid, message) = rest.split_once("]: ").expect("a pid");
    assert!(pid.parse::<u32>().is_ok(), "pid {pid:?}");
    (pri.parse().expect("a numeric PRI"), message)
}

// Syslog facility codes (RFC 5424): local0 is 16; PRI = facility * 8 +
// severity, with warning 4 and informational 6.
const LOCAL1: u16 = 17;
const LOCAL2: u16 = 18;
const LOCAL3: u16 = 19;
const WARNING: u16 = 4;
const INFO: u16 = 6;

#[tokio::test]
async fn admin_log_targets_send_records_to_syslog_with_the_admin_facility() {
    let syslog = fake_syslog();
    let agent = builder()
        .option("amphora_agent", "admin_log_targets", "192.0.2.10:10514, 192.0.2.11:10514")
        .option("amphora_agent", "syslog_socket", &syslog.path)
        .option("amphora_agent", "colour", "blue")
        .start();
    assert_eq!(agent.client().get("/1.0/info").await.status, 200);

    let (pri, message) =
        split_record(&syslog.record_containing("ignoring unknown option [amphora_agent] colour")).clone_owned();
    assert_eq!(pri, LOCAL1 * 8 + WARNING, "{message}");
    assert!(message.trim_start().starts_with("WARN "), "{message}");
    assert!(!agent.logs().contains("colour"), "the record went to standard error too: {}", agent.logs());
}

#[tokio::test]
async fn the_amphora_side_administrative_facility_and_tenant_targets_are_honoured() {
    let syslog = fake_syslog();
    let agent = builder()
        .option("amphora_agent", "tenant_log_targets", "192.0.2.10:10514")
        .option("haproxy_amphora", "administrative_log_facility", "2")
        .option("amphora_agent", "syslog_socket", &syslog.path)
        .option("amphora_agent", "colour", "blue")
        .start();
    assert_eq!(agent.client().get("/1.0/info").await.status, 200);
    let (pri, _) = split_record(&syslog.record_containing("colour")).clone_owned();
    assert_eq!(pri, LOCAL2 * 8 + WARNING);
}

#[tokio::test]
async fn use_syslog_as_upstream_renders_it_uses_syslog_log_facility() {
    let syslog = fake_syslog();
    let agent = builder()
        .option("DEFAULT", "use_syslog", "True")
        .option("DEFAULT", "syslog_log_facility", "LOG_LOCAL3")
        .option("amphora_agent", "syslog_socket", &syslog.path)
        .option("amphora_agent", "colour", "blue")
        .start();
    assert_eq!(agent.client().get("/1.0/info").await.status, 200);
    let (pri, _) = split_record(&syslog.record_containing("colour")).clone_owned();
    assert_eq!(pri, LOCAL3 * 8 + WARNING);
    // Informational records too: the agent says where it listens.
    let (pri, message) = split_record(&syslog.record_containing(" INFO ")).clone_owned();
    assert_eq!(pri, LOCAL3 * 8 + INFO, "{message}");
}

#[tokio::test]
async fn without_the_socket_records_go_to_standard_error_and_the_agent_serves() {
    let dir = tempfile::tempdir().expect("tempdir");
    let absent = dir.path().join("no-syslog-here").display().to_string();
    let agent = builder()
        .option("amphora_agent", "admin_log_targets", "192.0.2.10:10514")
        .option("amphora_agent", "syslog_socket", &absent)
        .option("amphora_agent", "colour", "blue")
        .start();
    assert_eq!(agent.client().get("/1.0/info").await.status, 200);
    let logs = agent.logs();
    assert!(logs.contains("ignoring unknown option [amphora_agent] colour"), "{logs}");
}

#[test]
fn a_malformed_log_target_stops_start_up_naming_the_option() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("amphora-agent.conf");
    std::fs::write(&path, "[amphora_agent]\namphora_id = x\nadmin_log_targets = 192.0.2.10\n").expect("write");
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_amphora-agent"))
        .arg("--config-file")
        .arg(&path)
        .output()
        .expect("run agent");
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("[amphora_agent] admin_log_targets"), "{stderr}");
    assert!(stderr.contains("not a host:port pair"), "{stderr}");
}

/// Owned copies, so a record can be split and kept.
trait CloneOwned {
    fn clone_owned(self) -> (u16, String);
}

impl CloneOwned for (u16, &str) {
    fn clone_owned(self) -> (u16, String) {
        (self.0, self.1.to_owned())
    }
}
