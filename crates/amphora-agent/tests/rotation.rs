//! `PUT /1.0/certificate`: the agent's own certificate is replaced while it
//! keeps serving; new connections get the new certificate, open ones finish.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use amphora_proto::Message;
use amphora_testkit::client::{AgentClient, TlsVersions, connect_tls};
use amphora_testkit::pki::Identity;
use common::*;
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;

async fn presented_certificate(agent: &amphora_testkit::Agent) -> CertificateDer<'static> {
    let config = agent.tls_config(Some(&agent.pki.client), TlsVersions::Any);
    let stream = connect_tls(agent.addr, config, &agent.amphora_id).await.expect("handshake");
    stream.get_ref().1.peer_certificates().expect("certificates")[0].clone().into_owned()
}

fn der(identity: &Identity) -> CertificateDer<'static> {
    CertificateDer::from_pem_slice(identity.cert_pem.as_bytes()).expect("certificate")
}

#[tokio::test]
async fn rotation_under_load_fails_no_request() {
    let agent = agent();
    let original = presented_certificate(&agent).await;
    assert_eq!(original, der(&agent.pki.server));
    let replacement = agent.pki.server_ca.server(&agent.amphora_id, &[&agent.amphora_id, "127.0.0.1"]);

    // One client keeps its connection; others open a new one per request,
    // so handshakes straddle the swap.
    let kept = Arc::new(agent.client());
    assert_eq!(kept.get("/1.0/info").await.status, 200);
    let stop = Arc::new(AtomicBool::new(false));
    let ok = Arc::new(AtomicU64::new(0));
    let failures = Arc::new(std::sync::Mutex::new(Vec::new()));
    let mut tasks = Vec::new();
    for _ in 0..4 {
        let (stop, ok, failures) = (stop.clone(), ok.clone(), failures.clone());
        let config = agent.tls_config(Some(&agent.pki.client), TlsVersions::Any);
        let (addr, name) = (agent.addr, agent.amphora_id.clone());
        tasks.push(tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                let fresh = AgentClient::new(addr, config.clone(), &name);
                match fresh.request("GET", "/1.0/info", "").await {
                    Ok(reply) if reply.status == 200 => {
                        ok.fetch_add(1, Ordering::Relaxed);
                    }
                    Ok(reply) => failures.lock().expect("lock").push(format!("status {}", reply.status)),
                    Err(e) => failures.lock().expect("lock").push(format!("{e:#}")),
                }
            }
        }));
    }
    wait_for_requests(&ok, 20).await;

    let reply = agent.client().put("/1.0/certificate", replacement.combined_pem()).await;
    assert_eq!(reply.status, 202, "{}", reply.text());
    assert_eq!(reply.json::<Message>(), Message::ok());
    let after = ok.load(Ordering::Relaxed);
    wait_for_requests(&ok, after + 20).await;
    stop.store(true, Ordering::Relaxed);
    for task in tasks {
        task.await.expect("task");
    }
    let failures = failures.lock().expect("lock").clone();
    assert!(failures.is_empty(), "{failures:?}");

    assert_eq!(presented_certificate(&agent).await, der(&replacement));
    // The kept connection was never dropped.
    assert_eq!(kept.get("/1.0/info").await.status, 200);
    assert_eq!(kept.connections_opened(), 1);
    let stored = std::fs::read_to_string(agent.dir.path().join("server.pem")).expect("stored");
    assert_eq!(stored, replacement.combined_pem());
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(agent.dir.path().join("server.pem")).expect("stat").permissions().mode();
    assert_eq!(mode & 0o777, 0o600);
}

async fn wait_for_requests(ok: &AtomicU64, at_least: u64) {
    amphora_testkit::wait::until("requests to succeed", WAIT, || async {
        (ok.load(Ordering::Relaxed) >= at_least).then_some(())
    })
    .await;
}

#[tokio::test]
async fn a_rotated_certificate_survives_a_restart() {
    let mut agent = agent();
    let replacement = agent.pki.server_ca.server(&agent.amphora_id, &[&agent.amphora_id, "127.0.0.1"]);
    assert_eq!(agent.client().put("/1.0/certificate", replacement.combined_pem()).await.status, 202);
    agent.terminate();
    agent.restart();
    assert_eq!(presented_certificate(&agent).await, der(&replacement));
}

#[tokio::test]
async fn invalid_certificates_change_nothing() {
    let agent = agent();
    let client = agent.client();
    let replacement = agent.pki.server_ca.server(&agent.amphora_id, &[&agent.amphora_id]);
    let other = agent.pki.server_ca.server(&agent.amphora_id, &[&agent.amphora_id]);
    for (body, message) in [
        (replacement.cert_pem.clone(), "No RSA key found"),
        (String::new(), "No certificate found"),
        (format!("{}{}", other.key_pem, replacement.cert_pem), "Certificate and key do not match"),
    ] {
        let reply = client.put("/1.0/certificate", body).await;
        assert_eq!(reply.status, 400, "{message}");
        assert_eq!(reply.json::<Message>().message, message);
    }
    assert_eq!(presented_certificate(&agent).await, der(&agent.pki.server));
    let stored = std::fs::read_to_string(agent.dir.path().join("server.pem")).expect("stored");
    assert_eq!(stored, agent.pki.server.combined_pem());
}
