//! The original appliance API through the real binary: plain-text answers,
//! instances backed by real haproxy processes, certificate uploads that
//! haproxy then serves, and 403 for what the API does not know.

mod common;

use std::path::Path;

use amphora_proto::Message;
use amphora_testkit::{Agent, AgentClient, wait};
use common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const RSA_KEY: &str = include_str!("fixtures/rsa2048.key");
const RSA_CERT: &str = include_str!("fixtures/rsa2048.crt");
const EC_KEY: &str = include_str!("fixtures/ecp256.key");
const EC_CERT: &str = include_str!("fixtures/ecp256.crt");
const PEM_NAME: &str = "www.example.com.pem";

/// A TLS listener on the uploaded certificate, with an admin stats socket
/// so the test can ask haproxy which certificate it loaded.
fn tls_config(agent: &Agent) -> String {
    let cert = agent.cert_dir().join(LB).join(PEM_NAME);
    format!(
        "global\n    daemon\n    user nobody\n    stats socket {socket} mode 0600 level admin\n    maxconn 100\n\
         defaults\n    mode http\n    timeout connect 1s\n    timeout client 5s\n    timeout server 5s\n\
         frontend {LISTENER}\n    bind 127.0.0.1:{FRONTEND_PORT} ssl crt {cert}\n    default_backend pool\n\
         backend pool\n    server member 127.0.0.1:{BACKEND_PORT}\n",
        socket = agent.stats_socket(LB).display(),
        cert = cert.display(),
    )
}

/// The serial of the certificate haproxy serves from `file`.
async fn served_serial(socket: &Path, file: &Path) -> String {
    let mut stream = tokio::net::UnixStream::connect(socket).await.expect("stats socket");
    stream.write_all(format!("show ssl cert {}\n", file.display()).as_bytes()).await.expect("write");
    let mut out = String::new();
    stream.read_to_string(&mut out).await.expect("read");
    out.lines()
        .find_map(|l| l.strip_prefix("Serial: "))
        .unwrap_or_else(|| panic!("no serial in {out}"))
        .trim()
        .to_owned()
}

/// The serial number of a PEM certificate, as haproxy prints it (hex).
fn serial_of(cert: &str) -> String {
    let output = std::process::Command::new("openssl")
        .args(["x509", "-noout", "-serial"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .and_then(|mut child| {
            use std::io::Write;
            child.stdin.take().expect("stdin").write_all(cert.as_bytes())?;
            child.wait_with_output()
        })
        .expect("openssl");
    String::from_utf8(output.stdout).expect("utf-8").trim().trim_start_matches("serial=").to_owned()
}

async fn text(client: &AgentClient, method: &str, path: &str, body: impl Into<String>) -> (u16, String) {
    let reply = client.request(method, path, body.into()).await.expect("request");
    assert!(
        reply.header("content-type").is_some_and(|c| c.starts_with("text/plain") || c.starts_with("application/json")),
        "{method} {path}"
    );
    (reply.status, reply.text())
}

#[tokio::test]
async fn instances_are_listed_checked_and_deleted() {
    let agent = agent();
    let client = agent.client();
    assert_eq!(text(&client, "GET", "/instances", "").await, (200, String::new()));
    assert_eq!(text(&client, "GET", "/service_status", "").await, (200, String::new()));
    assert_eq!(text(&client, "GET", &format!("/instances/{LB}"), "").await, (404, "Not Found\n".into()));
    assert_eq!(text(&client, "DELETE", &format!("/instances/{LB}"), "").await, (404, "Not Found\n".into()));
    let (status, body) = text(&client, "GET", "/instances/..%2F..%2Fetc", "").await;
    assert_eq!(status, 404, "{body}");

    let reply = client.put(&upload_path(&agent, LB), lb_config(&agent, LB, LISTENER, 1)).await;
    assert_eq!(reply.status, 202, "{}", reply.text());
    // Files alone make an instance; it is stopped until started.
    assert_eq!(text(&client, "GET", "/instances", "").await, (200, format!("{LB}\n")));
    assert_eq!(text(&client, "GET", &format!("/instances/{LB}"), "").await, (200, "OK\n".into()));
    let (_, status) = text(&client, "GET", "/service_status", "").await;
    assert!(status.starts_with(LB) && status.contains("STOPPED") && status.contains("stopped"), "{status}");

    assert_eq!(client.put(&format!("/1.0/loadbalancer/{LB}/start"), "").await.status, 202);
    let pid = agent.haproxy_pid(LB).expect("haproxy pid");
    let (_, status) = text(&client, "GET", "/service_status", "").await;
    let lines: Vec<&str> = status.lines().collect();
    assert_eq!(lines.len(), 2, "{status}");
    assert_eq!(lines[0].split_whitespace().collect::<Vec<_>>(), vec![LB, "OK"]);
    assert_eq!(lines[1], format!("  haproxy          running (pid {pid})"));
    let appliance: serde_json::Value = client.get("/status").await.json();
    assert_eq!(appliance["haproxy_count"], "1");

    assert_eq!(
        text(&client, "DELETE", &format!("/instances/{LB}"), "").await,
        (200, format!("OK\nhaproxy daemon {LB} killed.\n"))
    );
    wait::until("haproxy to exit", WAIT, || async {
        (nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None).is_err()).then_some(())
    })
    .await;
    assert!(!agent.base_path().join(LB).exists(), "the instance directory is gone");
    assert_eq!(text(&client, "GET", "/instances", "").await, (200, String::new()));
    assert_eq!(text(&client, "DELETE", &format!("/instances/{LB}"), "").await, (404, "Not Found\n".into()));
}

#[tokio::test]
async fn status_reports_the_appliance() {
    let agent = agent();
    let client = agent.client();
    let status: serde_json::Value = client.get("/status").await.json();
    let details: serde_json::Value = client.get("/1.0/details").await.json();
    assert_eq!(status["hostname"], details["hostname"]);
    assert_eq!(status["haproxy_count"], "0");
    assert_eq!(status["stunnel_count"], "0");
    assert_eq!(status["active_node"], 1, "a SINGLE amphora is active");
    assert_eq!(status["fencing_daemon_status"], "N/A", "no keepalived runs");
    for key in ["network_tx", "network_rx", "user_cpu", "system_cpu", "software_irq"] {
        assert!(status[key].is_number(), "{key}: {status}");
    }
    let load = status["load"].as_array().expect("load");
    assert_eq!(load.len(), 3);
    assert!(load.iter().all(|l| l.as_str().is_some_and(|l| l.parse::<f64>().is_ok())), "{status}");
}

#[tokio::test]
async fn certificates_are_checked_stored_and_served() {
    let agent = agent();
    let client = agent.client();
    let path = format!("/instances/{LB}/certificates/{PEM_NAME}");
    for (body, expected) in [
        ("junk".to_owned(), "No certificate found\n"),
        (RSA_CERT.to_owned(), "No RSA key found\n"),
        (format!("{RSA_KEY}{EC_CERT}"), "Certificate and key do not match\n"),
    ] {
        assert_eq!(text(&client, "PUT", &path, body).await, (409, expected.into()));
    }
    let (status, body) =
        text(&client, "PUT", &format!("/instances/{LB}/certificates/www.example.com.txt"), RSA_KEY).await;
    assert_eq!((status, body.as_str()), (409, "Filename has wrong format\n"));
    assert!(!agent.cert_dir().join(LB).exists(), "nothing stored for a refused upload");

    assert_eq!(text(&client, "PUT", &path, format!("{RSA_KEY}{RSA_CERT}")).await, (201, "OK\n".into()));
    let reply = client.put(&upload_path(&agent, LB), tls_config(&agent)).await;
    assert_eq!(reply.status, 202, "{}", reply.text());
    assert_eq!(client.put(&format!("/1.0/loadbalancer/{LB}/start"), "").await.status, 202);
    let socket = agent.stats_socket(LB);
    let file = agent.cert_dir().join(LB).join(PEM_NAME);
    assert_eq!(served_serial(&socket, &file).await, serial_of(RSA_CERT));

    // A new certificate on a running instance: stored, then served.
    assert_eq!(
        text(&client, "PUT", &path, format!("{EC_KEY}{EC_CERT}")).await,
        (201, format!("OK\nhaproxy daemon {LB} reloaded.\n"))
    );
    wait::until("haproxy to serve the new certificate", WAIT, || async {
        (served_serial(&socket, &file).await == serial_of(EC_CERT)).then_some(())
    })
    .await;
    // A refused one leaves the served one alone.
    assert_eq!(text(&client, "PUT", &path, RSA_CERT).await.0, 409);
    assert_eq!(std::fs::read_to_string(&file).expect("stored"), format!("{EC_KEY}{EC_CERT}"));
}

#[tokio::test]
async fn unknown_methods_are_forbidden() {
    let agent = agent();
    let client = agent.client();
    for (method, path) in [
        ("POST", "/instances".to_owned()),
        ("PUT", "/status".to_owned()),
        ("DELETE", "/service_status".to_owned()),
        ("POST", format!("/instances/{LB}")),
        ("GET", format!("/instances/{LB}/certificates/{PEM_NAME}")),
    ] {
        let (status, body) = text(&client, method, &path, "").await;
        assert_eq!(status, 403, "{method} {path}");
        assert_eq!(body, format!("Invalid Request: {method} {path}\n"));
    }
    // Outside the appliance's paths the agent's JSON 404 applies.
    let reply = client.get("/instances-nope").await;
    assert_eq!(reply.status, 404);
    assert_eq!(reply.json::<Message>().message, "Not Found");
}
