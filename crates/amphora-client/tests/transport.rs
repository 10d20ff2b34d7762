//! The client's transport against a scripted mTLS server (throwaway PKI):
//! the name check pinned to the amphora id, kept-alive connections, and
//! upstream's retry rules. The agent itself is exercised in
//! `amphora-agent/tests/client.rs`.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use amphora_client::{ApiErrorKind, Client, ClientError, Clients, Credentials, Timeouts};
use amphora_testkit::pki::{Identity, Pki};
use bytes::Bytes;
use http_body_util::Full;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio::net::TcpListener;

const AMPHORA: &str = "6e2bc8a0-2548-4fb7-a5f0-fb1ef4a696ce";
const INFO: &str = r#"{"hostname":"amp","uuid":"6e2bc8a0-2548-4fb7-a5f0-fb1ef4a696ce","haproxy_version":"2.6.12","api_version":"1.0","keepalived_version":null,"ipvsadm_version":null}"#;

/// What the scripted server answers to the n-th request (from 0).
type Script = fn(usize) -> (u16, &'static str, &'static str, Duration);

struct Server {
    addr: SocketAddr,
    requests: Arc<AtomicUsize>,
    connections: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Server {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn server_config(pki: &Pki, server: &Identity) -> Arc<rustls::ServerConfig> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(pki.client_ca.cert_pem().as_bytes()) {
        roots.add(cert.expect("CA")).expect("CA");
    }
    let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
        .build()
        .expect("client verifier");
    let chain =
        CertificateDer::pem_slice_iter(server.cert_pem.as_bytes()).collect::<Result<Vec<_>, _>>().expect("chain");
    let key = PrivateKeyDer::from_pem_slice(server.key_pem.as_bytes()).expect("key");
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_client_cert_verifier(verifier)
        .with_single_cert(chain, key)
        .expect("server config");
    Arc::new(config)
}

async fn serve(pki: &Pki, server: &Identity, script: Script) -> Server {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let acceptor = tokio_rustls::TlsAcceptor::from(server_config(pki, server));
    let (requests, connections) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let (counted, opened) = (requests.clone(), connections.clone());
    let task = tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else { continue };
            let (acceptor, counted) = (acceptor.clone(), counted.clone());
            opened.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(tcp).await else { return };
                let service = service_fn(move |_request: Request<hyper::body::Incoming>| {
                    let n = counted.fetch_add(1, Ordering::SeqCst);
                    async move {
                        let (status, content_type, body, delay) = script(n);
                        tokio::time::sleep(delay).await;
                        Response::builder()
                            .status(status)
                            .header("content-type", content_type)
                            .body(Full::new(Bytes::from_static(body.as_bytes())))
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(tls), service).await;
            });
        }
    });
    Server { addr, requests, connections, task }
}

fn credentials(pki: &Pki) -> Credentials {
    Credentials::from_pem(pki.server_ca.cert_pem().as_bytes(), pki.client.combined_pem().as_bytes())
        .expect("credentials")
}

fn quick(retries: u32) -> Timeouts {
    Timeouts {
        connect: Duration::from_secs(5),
        read: Duration::from_secs(5),
        connection_max_retries: retries,
        connection_retry_interval: Duration::from_millis(50),
    }
}

fn ok(_: usize) -> (u16, &'static str, &'static str, Duration) {
    (200, "application/json", INFO, Duration::ZERO)
}

#[tokio::test]
async fn requests_share_one_kept_alive_connection() {
    let pki = Pki::new(AMPHORA);
    let server = serve(&pki, &pki.server, ok).await;
    let client = Client::new(AMPHORA, server.addr, &credentials(&pki), quick(1)).expect("client");
    for _ in 0..20 {
        assert_eq!(client.info().await.expect("info").uuid, AMPHORA);
    }
    let concurrent = futures_join(&client).await;
    assert!(concurrent.iter().all(|r| r.is_ok()));
    assert_eq!(server.requests.load(Ordering::SeqCst), 24);
    assert_eq!(client.connections_opened(), server.connections.load(Ordering::SeqCst));
    assert!(client.connections_opened() <= 4, "{}", client.connections_opened());
    // After the burst, requests go back to the kept connections.
    let opened = client.connections_opened();
    for _ in 0..5 {
        client.info().await.expect("info");
    }
    assert_eq!(client.connections_opened(), opened);
}

async fn futures_join(client: &Client) -> Vec<Result<amphora_proto::Info, ClientError>> {
    let tasks: Vec<_> = (0..4)
        .map(|_| {
            let client = client.clone();
            tokio::spawn(async move { client.info().await })
        })
        .collect();
    let mut results = Vec::new();
    for task in tasks {
        results.push(task.await.expect("join"));
    }
    results
}

#[tokio::test]
async fn the_server_must_be_named_for_the_amphora_id() {
    let pki = Pki::new(AMPHORA);
    let server = serve(&pki, &pki.server, ok).await;
    let other = "0b4b3c10-cb6e-4b1b-8c36-6d4a1e4a7fb1";
    let client = Client::new(other, server.addr, &credentials(&pki), quick(5)).expect("client");
    let started = Instant::now();
    let error = client.info().await.expect_err("another amphora's certificate");
    assert!(matches!(error, ClientError::Tls { .. }), "{error:?}");
    assert!(!error.is_retried());
    assert!(started.elapsed() < Duration::from_secs(2), "a refused certificate is not retried");
    assert_eq!(server.requests.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn the_common_name_counts_only_without_dns_names() {
    let pki = Pki::new(AMPHORA);
    let cn_only = pki.server_ca.server(AMPHORA, &[]);
    let server = serve(&pki, &cn_only, ok).await;
    let client = Client::new(AMPHORA, server.addr, &credentials(&pki), quick(1)).expect("client");
    assert_eq!(client.info().await.expect("CN names the amphora").uuid, AMPHORA);

    let wrong_cn = pki.server_ca.server("another", &[]);
    let server = serve(&pki, &wrong_cn, ok).await;
    let client = Client::new(AMPHORA, server.addr, &credentials(&pki), quick(1)).expect("client");
    assert!(matches!(client.info().await, Err(ClientError::Tls { .. })));

    // A DNS name that is not the amphora's wins over a matching CN.
    let misnamed = pki.server_ca.server(AMPHORA, &["localhost"]);
    let server = serve(&pki, &misnamed, ok).await;
    let client = Client::new(AMPHORA, server.addr, &credentials(&pki), quick(1)).expect("client");
    assert!(matches!(client.info().await, Err(ClientError::Tls { .. })));

    // A certificate from another CA.
    let stranger = amphora_testkit::pki::Ca::new("stranger").server(AMPHORA, &[AMPHORA]);
    let server = serve(&pki, &stranger, ok).await;
    let client = Client::new(AMPHORA, server.addr, &credentials(&pki), quick(1)).expect("client");
    assert!(matches!(client.info().await, Err(ClientError::Tls { .. })));
}

#[tokio::test]
async fn a_refused_connection_is_retried_until_the_retries_are_spent() {
    let pki = Pki::new(AMPHORA);
    let addr = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        listener.local_addr().expect("addr")
    };
    let client = Client::new(AMPHORA, addr, &credentials(&pki), quick(3)).expect("client");
    let started = Instant::now();
    match client.info().await {
        Err(ClientError::Unavailable { attempts: 3, last, .. }) => {
            assert!(matches!(*last, ClientError::Connect { .. }), "{last:?}")
        }
        other => panic!("expected Unavailable after 3 attempts: {other:?}"),
    }
    assert!(started.elapsed() >= Duration::from_millis(100), "two pauses between three attempts");
}

fn not_ready_twice(n: usize) -> (u16, &'static str, &'static str, Duration) {
    match n {
        0 => (404, "text/html", "<h1>Not Found</h1>", Duration::ZERO),
        1 => (
            404,
            "application/json",
            r#"{"message":"No suitable network interface found","details":"No suitable network interface found (no interface has MAC 02:00:00:00:01:01)"}"#,
            Duration::ZERO,
        ),
        _ => ok(n),
    }
}

#[tokio::test]
async fn a_404_that_means_not_ready_is_retried() {
    let pki = Pki::new(AMPHORA);
    let server = serve(&pki, &pki.server, not_ready_twice).await;
    let client = Client::new(AMPHORA, server.addr, &credentials(&pki), quick(5)).expect("client");
    assert_eq!(client.info().await.expect("ready at the third attempt").uuid, AMPHORA);
    assert_eq!(server.requests.load(Ordering::SeqCst), 3);

    // Version discovery takes a 404 at its word: an agent too old for it.
    let server = serve(&pki, &pki.server, not_ready_twice).await;
    let client = Client::new(AMPHORA, server.addr, &credentials(&pki), quick(5)).expect("client");
    let error = client.versions().await.expect_err("404");
    assert_eq!(error.kind(), Some(ApiErrorKind::NotFound));
    assert_eq!(server.requests.load(Ordering::SeqCst), 1);
}

fn json_404(_: usize) -> (u16, &'static str, &'static str, Duration) {
    (
        404,
        "application/json",
        r#"{"message":"Certificate Not Found","details":"No certificate with file name: x.pem"}"#,
        Duration::ZERO,
    )
}

#[tokio::test]
async fn an_agents_own_404_is_an_answer() {
    let pki = Pki::new(AMPHORA);
    let server = serve(&pki, &pki.server, json_404).await;
    let client = Client::new(AMPHORA, server.addr, &credentials(&pki), quick(5)).expect("client");
    let error = client.certificate_md5("lb", "x.pem").await.expect_err("404");
    assert!(error.is_not_found());
    assert_eq!(error.status(), Some(404));
    assert_eq!(error.message().map(|m| m.message.as_str()), Some("Certificate Not Found"));
    assert_eq!(server.requests.load(Ordering::SeqCst), 1);
}

fn slow(_: usize) -> (u16, &'static str, &'static str, Duration) {
    (200, "application/json", INFO, Duration::from_secs(30))
}

#[tokio::test]
async fn a_read_timeout_is_retried_like_upstream() {
    let pki = Pki::new(AMPHORA);
    let server = serve(&pki, &pki.server, slow).await;
    let timeouts = Timeouts { read: Duration::from_millis(200), ..quick(2) };
    let client = Client::new(AMPHORA, server.addr, &credentials(&pki), timeouts).expect("client");
    let started = Instant::now();
    match client.info().await {
        Err(ClientError::Unavailable { attempts: 2, last, .. }) => {
            assert!(matches!(*last, ClientError::ReadTimeout { .. }), "{last:?}")
        }
        other => panic!("expected Unavailable: {other:?}"),
    }
    assert!(started.elapsed() < Duration::from_secs(5));
    assert_eq!(server.requests.load(Ordering::SeqCst), 2);
    // Per-call limits share the connections (upstream's timeout_dict).
    let patient = client.with_timeouts(Timeouts { read: Duration::from_secs(60), ..quick(1) });
    assert_eq!(patient.timeouts().read, Duration::from_secs(60));
    assert_eq!(patient.amphora_id(), AMPHORA);
}

fn garbage(_: usize) -> (u16, &'static str, &'static str, Duration) {
    (200, "application/json", r#"{"hostname": 3}"#, Duration::ZERO)
}

#[tokio::test]
async fn an_unexpected_body_is_a_decode_error_and_bad_input_is_refused_early() {
    let pki = Pki::new(AMPHORA);
    let server = serve(&pki, &pki.server, garbage).await;
    let client = Client::new(AMPHORA, server.addr, &credentials(&pki), quick(1)).expect("client");
    assert!(matches!(client.info().await, Err(ClientError::Decode { status: 200, .. })));

    assert!(matches!(
        Client::new("not a name", server.addr, &credentials(&pki), quick(1)),
        Err(ClientError::AmphoraId(_))
    ));
    assert!(matches!(
        Credentials::from_pem(b"", pki.client.combined_pem().as_bytes()),
        Err(ClientError::Credentials(_))
    ));
    assert!(matches!(
        Credentials::from_pem(pki.server_ca.cert_pem().as_bytes(), pki.client.cert_pem.as_bytes()),
        Err(ClientError::Credentials(_))
    ));
}

#[tokio::test]
async fn clients_are_kept_per_amphora_and_replaced_when_it_moves() {
    let pki = Pki::new(AMPHORA);
    let first = serve(&pki, &pki.server, ok).await;
    let second = serve(&pki, &pki.server, ok).await;
    let clients = Clients::new(credentials(&pki), quick(1));
    let client = clients.get(AMPHORA, first.addr).expect("client");
    client.info().await.expect("info");
    let same = clients.get(AMPHORA, first.addr).expect("client");
    same.info().await.expect("info");
    assert_eq!(same.connections_opened(), 1, "the same client, the same connection");
    // A failover gives the amphora id another address.
    let moved = clients.get(AMPHORA, second.addr).expect("client");
    assert_eq!(moved.info().await.expect("info").uuid, AMPHORA);
    assert_eq!(second.requests.load(Ordering::SeqCst), 1);
    assert_eq!(clients.len(), 1);
    clients.forget(AMPHORA);
    assert!(clients.is_empty());
    assert!(matches!(clients.get("not a name", first.addr), Err(ClientError::AmphoraId(_))));
}
