//! An HTTPS client for the agent that presents a client certificate and
//! keeps one HTTP/1.1 connection alive across requests, as a controller
//! should. Paths are sent exactly as given, so tests can send hostile ones.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use hyper::header::HeaderMap;
use hyper_util::rt::TokioIo;
use rustls::ClientConfig;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use serde::de::DeserializeOwned;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

use crate::pki::Identity;

/// A complete response.
#[derive(Debug, Clone)]
pub struct Reply {
    pub status: u16,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Reply {
    /// The body as JSON; panics with the body text when it is not.
    pub fn json<T: DeserializeOwned>(&self) -> T {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("response {} is not the expected JSON ({e}): {}", self.status, self.text()))
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

/// Which TLS versions a test client offers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TlsVersions {
    Any,
    Only12,
    Only13,
}

/// TLS settings for talking to an agent.
pub fn client_config(server_ca_pem: &str, identity: Option<&Identity>, versions: TlsVersions) -> Arc<ClientConfig> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(server_ca_pem.as_bytes()) {
        roots.add(cert.expect("CA PEM")).expect("CA certificate");
    }
    let versions: &[&'static rustls::SupportedProtocolVersion] = match versions {
        TlsVersions::Any => &[&rustls::version::TLS13, &rustls::version::TLS12],
        TlsVersions::Only12 => &[&rustls::version::TLS12],
        TlsVersions::Only13 => &[&rustls::version::TLS13],
    };
    let builder = ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(versions)
        .expect("protocol versions")
        .with_root_certificates(roots);
    let config = match identity {
        Some(identity) => {
            let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(identity.cert_pem.as_bytes())
                .collect::<Result<_, _>>()
                .expect("client certificate");
            let key = PrivateKeyDer::from_pem_slice(identity.key_pem.as_bytes()).expect("client key");
            builder.with_client_auth_cert(chain, key).expect("client auth")
        }
        None => builder.with_no_client_auth(),
    };
    Arc::new(config)
}

/// Opens a TLS connection (handshake included).
pub async fn connect_tls(
    addr: SocketAddr,
    config: Arc<ClientConfig>,
    server_name: &str,
) -> std::io::Result<TlsStream<TcpStream>> {
    connect_tls_in(None, addr, config, server_name).await
}

/// Opens a TLS connection from inside a namespace when one is given.
pub async fn connect_tls_in(
    netns: Option<&str>,
    addr: SocketAddr,
    config: Arc<ClientConfig>,
    server_name: &str,
) -> std::io::Result<TlsStream<TcpStream>> {
    let tcp = match netns {
        Some(name) => crate::netns::tcp_connect_in(name, addr).await?,
        None => TcpStream::connect(addr).await?,
    };
    tcp.set_nodelay(true)?;
    let name = ServerName::try_from(server_name.to_owned()).map_err(std::io::Error::other)?;
    TlsConnector::from(config).connect(name, tcp).await
}

#[derive(Debug)]
pub struct AgentClient {
    addr: SocketAddr,
    server_name: String,
    config: Arc<ClientConfig>,
    connection: tokio::sync::Mutex<Option<SendRequest<Full<Bytes>>>>,
    opened: AtomicUsize,
    netns: Option<String>,
    check_contract: bool,
}

impl AgentClient {
    pub fn new(addr: SocketAddr, config: Arc<ClientConfig>, server_name: &str) -> Self {
        Self {
            addr,
            server_name: server_name.to_owned(),
            config,
            connection: tokio::sync::Mutex::new(None),
            opened: AtomicUsize::new(0),
            netns: None,
            check_contract: false,
        }
    }

    /// Fails every request whose JSON answer drifts from its
    /// `amphora-proto` type (see [`crate::contract`]); for our own agent.
    pub fn checking_contract(mut self) -> Self {
        self.check_contract = true;
        self
    }

    /// Connects from inside a namespace (an agent running in one).
    pub fn in_netns(mut self, name: Option<&str>) -> Self {
        self.netns = name.map(str::to_owned);
        self
    }

    /// How many connections (TLS handshakes) this client has made.
    pub fn connections_opened(&self) -> usize {
        self.opened.load(Ordering::SeqCst)
    }

    async fn connect(&self) -> anyhow::Result<SendRequest<Full<Bytes>>> {
        let stream = connect_tls_in(self.netns.as_deref(), self.addr, self.config.clone(), &self.server_name).await?;
        let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
        tokio::spawn(async move {
            let _ = connection.await;
        });
        self.opened.fetch_add(1, Ordering::SeqCst);
        Ok(sender)
    }

    /// Sends one request, reusing the open connection when the server kept
    /// it alive.
    pub async fn request(&self, method: &str, path: &str, body: impl Into<Bytes>) -> anyhow::Result<Reply> {
        let body = body.into();
        let mut slot = self.connection.lock().await;
        let reusable = match slot.as_mut() {
            Some(sender) => sender.ready().await.is_ok(),
            None => false,
        };
        if !reusable {
            *slot = Some(self.connect().await?);
        }
        let sender = slot.as_mut().expect("connected");
        let request = hyper::Request::builder()
            .method(method)
            .uri(path)
            .header(hyper::header::HOST, &self.server_name)
            .header(hyper::header::USER_AGENT, "amphora-testkit")
            .body(Full::new(body))?;
        let response = sender.send_request(request).await?;
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let body = response.into_body().collect().await?.to_bytes();
        if self.check_contract {
            let content_type = headers.get(hyper::header::CONTENT_TYPE).and_then(|v| v.to_str().ok());
            crate::contract::check(method, path, status, content_type, &body).map_err(anyhow::Error::msg)?;
        }
        Ok(Reply { status, headers, body })
    }

    pub async fn get(&self, path: &str) -> Reply {
        self.request("GET", path, Bytes::new()).await.unwrap_or_else(|e| panic!("GET {path}: {e:#}"))
    }

    pub async fn put(&self, path: &str, body: impl Into<Bytes>) -> Reply {
        self.request("PUT", path, body).await.unwrap_or_else(|e| panic!("PUT {path}: {e:#}"))
    }

    pub async fn post(&self, path: &str, body: impl Into<Bytes>) -> Reply {
        self.request("POST", path, body).await.unwrap_or_else(|e| panic!("POST {path}: {e:#}"))
    }

    pub async fn delete(&self, path: &str) -> Reply {
        self.request("DELETE", path, Bytes::new()).await.unwrap_or_else(|e| panic!("DELETE {path}: {e:#}"))
    }
}
