//! Mutual TLS: only clients whose certificate chains to agent_server_ca and
//! is currently valid get an answer; the minimum protocol is configurable.

mod common;

use amphora_testkit::client::{AgentClient, TlsVersions};
use amphora_testkit::pki::Ca;
use common::*;

async fn refused(client: AgentClient) -> String {
    match client.request("GET", "/1.0/info", "").await {
        Ok(reply) => panic!("expected the connection to be refused, got {} {}", reply.status, reply.text()),
        Err(e) => format!("{e:#}"),
    }
}

#[tokio::test]
async fn a_client_without_a_certificate_is_refused() {
    let agent = agent();
    let config = agent.tls_config(None, TlsVersions::Any);
    refused(AgentClient::new(agent.addr, config, &agent.amphora_id)).await;
    // TLS 1.2 fails in the handshake itself.
    let config = agent.tls_config(None, TlsVersions::Only12);
    refused(AgentClient::new(agent.addr, config, &agent.amphora_id)).await;
    assert!(agent.logs().contains("TLS handshake refused"), "{}", agent.logs());
}

#[tokio::test]
async fn a_certificate_from_another_ca_is_refused() {
    let agent = agent();
    let stranger = Ca::new("Some other CA").client("octavia-controller");
    let config = agent.tls_config(Some(&stranger), TlsVersions::Any);
    refused(AgentClient::new(agent.addr, config, &agent.amphora_id)).await;
}

#[tokio::test]
async fn an_expired_certificate_is_refused() {
    let agent = agent();
    let expired = agent.pki.client_ca.expired_client("octavia-controller");
    let config = agent.tls_config(Some(&expired), TlsVersions::Any);
    refused(AgentClient::new(agent.addr, config, &agent.amphora_id)).await;
}

#[tokio::test]
async fn the_server_certificate_is_valid_for_the_amphora_id() {
    // Upstream's controller checks the certificate against the amphora id.
    let agent = agent();
    let config = agent.tls_config(Some(&agent.pki.client), TlsVersions::Any);
    let client = AgentClient::new(agent.addr, config.clone(), &agent.amphora_id);
    assert_eq!(client.get("/1.0/info").await.status, 200);
    // ... and the client really checks it.
    let wrong = AgentClient::new(agent.addr, config, "not-this-amphora");
    assert!(wrong.request("GET", "/1.0/info", "").await.is_err());
}

#[tokio::test]
async fn tls_1_2_is_accepted_by_default() {
    let agent = agent();
    let config = agent.tls_config(Some(&agent.pki.client), TlsVersions::Only12);
    let client = AgentClient::new(agent.addr, config, &agent.amphora_id);
    assert_eq!(client.get("/1.0/info").await.status, 200);
}

#[tokio::test]
async fn a_tls_1_3_minimum_refuses_tls_1_2() {
    let agent = builder().option("amphora_agent", "agent_tls_protocol", "TLSv1.3").start();
    let old = agent.tls_config(Some(&agent.pki.client), TlsVersions::Only12);
    refused(AgentClient::new(agent.addr, old, &agent.amphora_id)).await;
    let new = agent.tls_config(Some(&agent.pki.client), TlsVersions::Only13);
    let client = AgentClient::new(agent.addr, new, &agent.amphora_id);
    assert_eq!(client.get("/1.0/info").await.status, 200);
}
