//! Load balancer certificates: upload with real validation, md5 lookup,
//! delete, hostile names, and haproxy really serving an uploaded one.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::sync::Arc;

use amphora_proto::{CertificateMd5, Details, ListenerState, ListenerStatus, Message};
use amphora_testkit::netns::NsRuntime;
use amphora_testkit::traffic::serve_http;
use common::*;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};

const KEY: &str = include_str!("fixtures/rsa2048.key");
const CERT: &str = include_str!("fixtures/rsa2048.crt");
const CA: &str = include_str!("fixtures/ca.crt");
const CRL: &str = include_str!("fixtures/ca.crl");
const EC_CERT: &str = include_str!("fixtures/ecp256.crt");
const ENCRYPTED_KEY: &str = include_str!("fixtures/rsa2048.encrypted.key");

fn cert_path(lb: &str, name: &str) -> String {
    format!("/1.0/loadbalancer/{lb}/certificates/{name}")
}

#[tokio::test]
async fn upload_md5_and_delete() {
    let agent = agent();
    let client = agent.client();
    let pem = format!("{KEY}{CERT}{CA}");

    let reply = client.put(&cert_path(LB, "www.example.com.pem"), pem.clone()).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(reply.json::<Message>(), Message::ok());
    let md5 = amphora_testkit::md5_hex(pem.as_bytes());
    assert_eq!(reply.header("etag"), Some(md5.as_str()));

    let file = agent.cert_dir().join(LB).join("www.example.com.pem");
    assert_eq!(std::fs::read_to_string(&file).expect("stored"), pem);
    assert_eq!(std::fs::metadata(&file).expect("stat").permissions().mode() & 0o777, 0o600);

    let reply = client.get(&cert_path(LB, "www.example.com.pem")).await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.json::<CertificateMd5>(), CertificateMd5 { md5sum: md5.clone() });
    assert_eq!(reply.header("etag"), Some(md5.as_str()));
    assert!(!reply.text().contains("BEGIN"), "never the certificate itself");

    // A CA bundle without a key, and a CRL, as the controller uploads for
    // client authentication.
    assert_eq!(client.put(&cert_path(LB, "client-ca.pem"), CA).await.status, 200);
    assert_eq!(client.put(&cert_path(LB, "client-crl.pem"), CRL).await.status, 200);

    for name in ["www.example.com.pem", "client-ca.pem"] {
        let reply = client.delete(&cert_path(LB, name)).await;
        assert_eq!(reply.status, 200);
        assert_eq!(reply.json::<Message>(), Message::ok());
    }
    assert!(!file.exists());
    assert!(agent.cert_dir().join(LB).exists(), "the CRL is still there");
    assert_eq!(client.delete(&cert_path(LB, "client-crl.pem")).await.status, 200);
    assert!(!agent.cert_dir().join(LB).exists(), "an empty directory is removed");
    // Deleting again is fine, as upstream's controller expects.
    assert_eq!(client.delete(&cert_path(LB, "client-crl.pem")).await.status, 200);

    let reply = client.get(&cert_path(LB, "www.example.com.pem")).await;
    assert_eq!(reply.status, 404);
    assert_eq!(
        reply.json::<Message>(),
        Message::with_details("Certificate Not Found", "No certificate with file name: www.example.com.pem")
    );
}

#[tokio::test]
async fn bad_pem_is_refused_and_the_previous_file_kept() {
    let agent = agent();
    let client = agent.client();
    let good = format!("{KEY}{CERT}");
    assert_eq!(client.put(&cert_path(LB, "site.pem"), good.clone()).await.status, 200);

    for (body, message) in [
        (String::new(), "No certificate found"),
        ("just some text".to_owned(), "No certificate found"),
        (KEY.to_owned(), "No certificate found"),
        (format!("{KEY}{EC_CERT}"), "Certificate and key do not match"),
        (format!("{ENCRYPTED_KEY}{CERT}"), "Private key is encrypted"),
        ("-----BEGIN CERTIFICATE-----\nnot base64!\n-----END CERTIFICATE-----\n".to_owned(), "Invalid PEM data"),
    ] {
        let reply = client.put(&cert_path(LB, "site.pem"), body.clone()).await;
        assert_eq!(reply.status, 400, "{message}: {}", reply.text());
        assert_eq!(reply.json::<Message>().message, message);
    }
    let stored = std::fs::read_to_string(agent.cert_dir().join(LB).join("site.pem")).expect("kept");
    assert_eq!(stored, good);
}

#[tokio::test]
async fn hostile_file_names_never_touch_the_file_system() {
    let agent = agent();
    let client = agent.client();
    let pem = format!("{KEY}{CERT}");
    for name in
        ["cert", "cert.crt", "..%2F..%2Fescape.pem", ".hidden.pem", "a..pem", "x%0A.pem", "%2e%2e.pem", "a%00.pem"]
    {
        for reply in [
            client.put(&cert_path(LB, name), pem.clone()).await,
            client.get(&cert_path(LB, name)).await,
            client.delete(&cert_path(LB, name)).await,
        ] {
            assert_eq!(reply.status, 400, "{name}: {}", reply.text());
            assert_eq!(reply.json::<Message>().message, "Filename has wrong format");
        }
    }
    let reply = client.put(&cert_path("..", "ok.pem"), pem.clone()).await;
    assert_eq!(reply.status, 400);
    assert!(std::fs::read_dir(agent.cert_dir()).expect("cert dir").next().is_none(), "nothing written");
    assert!(!agent.dir.path().join("escape.pem").exists());
}

#[tokio::test]
async fn haproxy_serves_an_uploaded_certificate() {
    let agent = agent();
    let client = agent.client();
    let pem = format!("{KEY}{CERT}{CA}");
    assert_eq!(client.put(&cert_path(LB, "www.example.com.pem"), pem).await.status, 200);
    let cert_file = agent.cert_dir().join(LB).join("www.example.com.pem");
    let config =
        lb_config_with(&agent, LB, LISTENER, 1, &format!("127.0.0.1:8443 ssl crt {}", cert_file.display()), 1000);
    let reply = client.put(&upload_path(&agent, LB), config).await;
    assert_eq!(reply.status, 202, "{}", reply.text());
    assert_eq!(client.put(&format!("/1.0/loadbalancer/{LB}/start"), "").await.status, 202);
    let listeners: Vec<ListenerStatus> = client.get("/1.0/listeners").await.json();
    assert_eq!(listeners[0].kind, "TERMINATED_HTTPS");
    assert_eq!(listeners[0].status, ListenerState::Active);

    let ns = NsRuntime::new(agent.netns.as_deref().expect("namespace"));
    ns.spawn(async {
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", BACKEND_PORT)).await.expect("bind");
        serve_http(listener, "over tls").await;
    });
    let served = ns
        .spawn(async {
            let mut roots = rustls::RootCertStore::empty();
            roots.add(CertificateDer::from_pem_slice(CA.as_bytes()).expect("CA")).expect("root");
            let config =
                rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
                    .with_safe_default_protocol_versions()
                    .expect("versions")
                    .with_root_certificates(roots)
                    .with_no_client_auth();
            let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
            let tcp = tokio::net::TcpStream::connect("127.0.0.1:8443").await.expect("connect");
            let name = ServerName::try_from("www.example.com").expect("name");
            let mut tls = connector.connect(name, tcp).await.expect("handshake with the uploaded certificate");
            let presented = tls.get_ref().1.peer_certificates().expect("certificates")[0].clone();
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            tls.write_all(b"GET / HTTP/1.1\r\nHost: www.example.com\r\nConnection: close\r\n\r\n")
                .await
                .expect("write");
            let mut response = Vec::new();
            let _ = tls.read_to_end(&mut response).await;
            (presented, String::from_utf8_lossy(&response).into_owned())
        })
        .await
        .expect("client");
    assert_eq!(served.0, CertificateDer::from_pem_slice(CERT.as_bytes()).expect("cert"));
    assert!(served.1.starts_with("HTTP/1.1 200"), "{}", served.1);
    assert!(served.1.ends_with("over tls"), "{}", served.1);
}

/// A tmpfs mounted for the duration of a test.
struct Tmpfs(tempfile::TempDir);

impl Tmpfs {
    fn mount() -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let status = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", "size=4m,mode=0700", "tmpfs"])
            .arg(dir.path())
            .status()
            .expect("mount");
        assert!(status.success(), "mount tmpfs");
        Self(dir)
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount").arg(self.0.path()).status();
    }
}

#[tokio::test]
async fn details_say_whether_certificates_are_in_memory() {
    let agent = agent();
    let details: Details = agent.client().get("/1.0/details").await.json();
    assert!(!details.certs_in_memory, "a temporary directory on disk");

    let tmpfs = Tmpfs::mount();
    let agent = builder().option("haproxy_amphora", "base_cert_dir", &tmpfs.0.path().display().to_string()).start();
    let details: Details = agent.client().get("/1.0/details").await.json();
    assert!(details.certs_in_memory);
    drop(agent);
}
