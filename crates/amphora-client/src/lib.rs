//! The async client of the amphora agent API, for a controller: the 1.0
//! API, and the 0.1 and appliance APIs through [`Client::v0_1`] and
//! [`Client::appliance`].
//!
//! One [`Client`] per amphora ([`Clients`] keeps them by amphora id): it
//! pins the server certificate's name to the amphora id, keeps its
//! connections alive between requests, and retries
//! with the rules of upstream's driver
//! (`octavia/amphorae/drivers/haproxy/rest_api_driver.py`): a refused or
//! broken connection, a timeout, and a 404 that is not JSON or that says
//! "No suitable network interface found" mean "not ready yet", tried again
//! every `connection_retry_interval`, `connection_max_retries` times in
//! all. Bodies are the `amphora-proto` types; every failure is a
//! [`ClientError`].

mod appliance;
mod clients;
mod conn;
mod error;
mod tls;
mod v0_1;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use amphora_proto::net::{InterfaceLookup, PlugNetworkRequest, PlugVipRequest, RuleRequest};
use amphora_proto::{Action, CertificateMd5, Details, Info, ListenerDetail, ListenerStatus, Message, Versions, paths};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::header::{self, HeaderMap, HeaderValue};
use hyper::{Method, Request};
use serde::Serialize;
use serde::de::DeserializeOwned;

pub use crate::appliance::Appliance;
pub use crate::clients::Clients;
pub use crate::error::{ApiErrorKind, ClientError};
pub use crate::tls::Credentials;
pub use crate::v0_1::V0_1;

use crate::conn::Connections;
use crate::tls::refusal;

const USER_AGENT: &str = concat!("amphora-client/", env!("CARGO_PKG_VERSION"));

/// Time limits and retries, with upstream's names and defaults
/// (`[haproxy_amphora]`). Upstream's per-call `timeout_dict` is
/// [`Client::with_timeouts`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    /// `rest_request_conn_timeout`: TCP connection and TLS handshake.
    pub connect: Duration,
    /// `rest_request_read_timeout`: from sending a request to its whole
    /// answer.
    pub read: Duration,
    /// `connection_max_retries`: attempts in all (at least one).
    pub connection_max_retries: u32,
    /// `connection_retry_interval`: the pause after a failed attempt.
    pub connection_retry_interval: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Self {
            connect: Duration::from_secs(10),
            read: Duration::from_secs(60),
            connection_max_retries: 120,
            connection_retry_interval: Duration::from_secs(5),
        }
    }
}

/// A stored file's answer: the agent's message and the md5 of what it
/// stored (`ETag`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stored {
    pub message: Message,
    pub etag: Option<String>,
}

/// A load balancer's haproxy configuration as stored, with its md5.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HaproxyConfig {
    pub text: String,
    pub etag: Option<String>,
}

/// The client of one amphora. Clones share the connections.
#[derive(Debug, Clone)]
pub struct Client {
    inner: Arc<Inner>,
    timeouts: Timeouts,
}

#[derive(Debug)]
struct Inner {
    amphora_id: String,
    addr: SocketAddr,
    host: HeaderValue,
    connections: Connections,
}

enum Body {
    Empty,
    Raw(Bytes),
    Json(Bytes),
}

/// A complete answer.
struct Answer {
    status: u16,
    headers: HeaderMap,
    body: Bytes,
}

impl Answer {
    fn etag(&self) -> Option<String> {
        self.headers.get(header::ETAG).and_then(|v| v.to_str().ok()).map(str::to_owned)
    }

    fn is_json(&self) -> bool {
        self.headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|t| t.contains("application/json"))
    }

    /// Upstream's test for "the agent or its network is not up yet".
    fn not_ready(&self) -> bool {
        if self.status != 404 {
            return false;
        }
        if !self.is_json() {
            return true;
        }
        serde_json::from_slice::<serde_json::Value>(&self.body)
            .ok()
            .and_then(|v| v.get("details").and_then(|d| d.as_str().map(str::to_owned)))
            .is_some_and(|d| d.contains("No suitable network interface found"))
    }
}

impl Client {
    /// A client of the agent of amphora `amphora_id` listening at `addr`
    /// (its `lb_network_ip` and `bind_port`). No connection is made yet.
    pub fn new(
        amphora_id: &str,
        addr: SocketAddr,
        credentials: &Credentials,
        timeouts: Timeouts,
    ) -> Result<Self, ClientError> {
        let config = credentials.client_config(amphora_id)?;
        let host = HeaderValue::from_str(&addr.to_string()).map_err(|e| ClientError::Request(e.to_string()))?;
        let connections = Connections::new(amphora_id, addr, config);
        Ok(Self { inner: Arc::new(Inner { amphora_id: amphora_id.to_owned(), addr, host, connections }), timeouts })
    }

    pub fn amphora_id(&self) -> &str {
        &self.inner.amphora_id
    }

    pub fn addr(&self) -> SocketAddr {
        self.inner.addr
    }

    pub fn timeouts(&self) -> Timeouts {
        self.timeouts
    }

    /// The same client, connections included, with other limits for the
    /// calls made through the returned value.
    pub fn with_timeouts(&self, timeouts: Timeouts) -> Self {
        Self { inner: self.inner.clone(), timeouts }
    }

    /// How many connections (TLS handshakes) this client has opened.
    pub fn connections_opened(&self) -> usize {
        self.inner.connections.opened()
    }

    // ---- one method per route -------------------------------------------

    /// `GET /`: the API versions served. A 404 is not retried: upstream
    /// takes it for an agent too old for version discovery.
    pub async fn versions(&self) -> Result<Versions, ClientError> {
        let answer = self.call_with(Method::GET, paths::ROOT, Body::Empty, false).await?;
        self.json(answer)
    }

    /// `GET /1.0/info`.
    pub async fn info(&self) -> Result<Info, ClientError> {
        self.get_json(paths::v1::INFO).await
    }

    /// `GET /1.0/details`.
    pub async fn details(&self) -> Result<Details, ClientError> {
        self.get_json(paths::v1::DETAILS).await
    }

    /// `GET /1.0/listeners`: every listener with its status.
    pub async fn listeners(&self) -> Result<Vec<ListenerStatus>, ClientError> {
        self.get_json(paths::v1::LISTENERS).await
    }

    /// `GET /1.0/listeners/{id}`: one listener with its pools and members.
    pub async fn listener_status(&self, listener_id: &str) -> Result<ListenerDetail, ClientError> {
        self.get_json(&paths::v1::listener(listener_id)).await
    }

    /// `PUT /1.0/loadbalancer/{amphora}/{lb}/haproxy`: stores (after
    /// haproxy checked it) a load balancer's configuration.
    pub async fn upload_config(&self, lb_id: &str, config: impl Into<Bytes>) -> Result<Stored, ClientError> {
        let path = paths::v1::lb_upload_config(&self.inner.amphora_id, lb_id);
        self.stored(self.call(Method::PUT, &path, Body::Raw(config.into())).await?)
    }

    /// `GET /1.0/loadbalancer/{lb}/haproxy`.
    pub async fn get_config(&self, lb_id: &str) -> Result<HaproxyConfig, ClientError> {
        self.text(&paths::v1::lb_config(lb_id)).await
    }

    /// `PUT /1.0/listeners/{amphora}/{listener}/udp_listener`: stores
    /// (after `keepalived --config-test`) a UDP or SCTP listener's keepalived
    /// LVS configuration.
    pub async fn upload_lvs_config(&self, listener_id: &str, config: impl Into<Bytes>) -> Result<Stored, ClientError> {
        let path = paths::v1::lvs_upload_config(&self.inner.amphora_id, listener_id);
        self.stored(self.call(Method::PUT, &path, Body::Raw(config.into())).await?)
    }

    /// `GET /1.0/listeners/{listener}/udp_listener`.
    pub async fn get_lvs_config(&self, listener_id: &str) -> Result<HaproxyConfig, ClientError> {
        self.text(&paths::v1::lvs_config(listener_id)).await
    }

    /// `DELETE /1.0/listeners/{listener}`: stops and removes a UDP or SCTP
    /// listener (the route that removes a load balancer's haproxy).
    pub async fn delete_lvs_listener(&self, listener_id: &str) -> Result<Message, ClientError> {
        self.delete_load_balancer(listener_id).await
    }

    /// The 0.1 API of this amphora.
    pub fn v0_1(&self) -> V0_1<'_> {
        V0_1 { client: self }
    }

    /// The appliance API of this amphora.
    pub fn appliance(&self) -> Appliance<'_> {
        Appliance { client: self }
    }

    /// `PUT /1.0/loadbalancer/{lb}/{start|stop|reload}`.
    pub async fn act(&self, lb_id: &str, action: Action) -> Result<Message, ClientError> {
        self.message(Method::PUT, &paths::v1::lb_action(lb_id, action), Body::Empty).await
    }

    pub async fn start(&self, lb_id: &str) -> Result<Message, ClientError> {
        self.act(lb_id, Action::Start).await
    }

    pub async fn stop(&self, lb_id: &str) -> Result<Message, ClientError> {
        self.act(lb_id, Action::Stop).await
    }

    pub async fn reload(&self, lb_id: &str) -> Result<Message, ClientError> {
        self.act(lb_id, Action::Reload).await
    }

    /// `DELETE /1.0/listeners/{lb}`: stops and removes a load balancer.
    pub async fn delete_load_balancer(&self, lb_id: &str) -> Result<Message, ClientError> {
        self.message(Method::DELETE, &paths::v1::listener(lb_id), Body::Empty).await
    }

    /// `PUT /1.0/loadbalancer/{lb}/certificates/{filename}`.
    pub async fn upload_certificate(
        &self,
        lb_id: &str,
        filename: &str,
        pem: impl Into<Bytes>,
    ) -> Result<Stored, ClientError> {
        let path = paths::v1::lb_certificate(lb_id, filename);
        self.stored(self.call(Method::PUT, &path, Body::Raw(pem.into())).await?)
    }

    /// `GET /1.0/loadbalancer/{lb}/certificates/{filename}`.
    pub async fn certificate_md5(&self, lb_id: &str, filename: &str) -> Result<CertificateMd5, ClientError> {
        self.get_json(&paths::v1::lb_certificate(lb_id, filename)).await
    }

    /// `DELETE /1.0/loadbalancer/{lb}/certificates/{filename}`.
    pub async fn delete_certificate(&self, lb_id: &str, filename: &str) -> Result<Message, ClientError> {
        self.message(Method::DELETE, &paths::v1::lb_certificate(lb_id, filename), Body::Empty).await
    }

    /// `PUT /1.0/certificate`: replaces the agent's own server certificate
    /// (key and certificate in one PEM text).
    pub async fn rotate_server_certificate(&self, pem: impl Into<Bytes>) -> Result<Message, ClientError> {
        self.message(Method::PUT, paths::v1::SERVER_CERTIFICATE, Body::Raw(pem.into())).await
    }

    /// `POST /1.0/plug/vip/{vip}`.
    pub async fn plug_vip(&self, vip: &str, request: &PlugVipRequest) -> Result<Message, ClientError> {
        self.message(Method::POST, &paths::v1::plug_vip(vip), self.json_body(request)?).await
    }

    /// `POST /1.0/plug/network`.
    pub async fn plug_network(&self, request: &PlugNetworkRequest) -> Result<Message, ClientError> {
        self.message(Method::POST, paths::v1::PLUG_NETWORK, self.json_body(request)?).await
    }

    /// `GET /1.0/interface/{ip}`: the interface that holds an address.
    pub async fn interface(&self, ip: &str) -> Result<InterfaceLookup, ClientError> {
        self.get_json(&paths::v1::interface(ip)).await
    }

    /// `PUT /1.0/interface/{ip}/rules`: the firewall of that interface.
    pub async fn set_interface_rules(&self, ip: &str, rules: &[RuleRequest]) -> Result<Message, ClientError> {
        self.message(Method::PUT, &paths::v1::interface_rules(ip), self.json_body(rules)?).await
    }

    /// `PUT /1.0/vrrp/upload`: keepalived's configuration.
    pub async fn upload_vrrp_config(&self, config: impl Into<Bytes>) -> Result<Stored, ClientError> {
        self.stored(self.call(Method::PUT, paths::v1::VRRP_UPLOAD, Body::Raw(config.into())).await?)
    }

    /// `PUT /1.0/vrrp/{start|stop|reload}`.
    pub async fn vrrp(&self, action: Action) -> Result<Message, ClientError> {
        self.message(Method::PUT, &paths::v1::vrrp_action(action), Body::Empty).await
    }

    /// `PUT /1.0/config`: the agent's configuration file.
    pub async fn update_agent_config(&self, config: impl Into<Bytes>) -> Result<Message, ClientError> {
        self.message(Method::PUT, paths::v1::AGENT_CONFIG, Body::Raw(config.into())).await
    }

    // ---- answers ----------------------------------------------------------

    /// A text answer (a stored haproxy configuration) with its ETag.
    async fn text(&self, path: &str) -> Result<HaproxyConfig, ClientError> {
        let answer = self.success(self.call(Method::GET, path, Body::Empty).await?)?;
        let etag = answer.etag();
        let text = String::from_utf8(answer.body.to_vec()).map_err(|e| ClientError::Decode {
            amphora: self.inner.amphora_id.clone(),
            status: answer.status,
            source: serde::de::Error::custom(e),
            body: answer.body.clone(),
        })?;
        Ok(HaproxyConfig { text, etag })
    }

    async fn get_json<T: DeserializeOwned>(&self, path: &str) -> Result<T, ClientError> {
        let answer = self.call(Method::GET, path, Body::Empty).await?;
        self.json(answer)
    }

    async fn message(&self, method: Method, path: &str, body: Body) -> Result<Message, ClientError> {
        let answer = self.call(method, path, body).await?;
        self.json(answer)
    }

    fn stored(&self, answer: Answer) -> Result<Stored, ClientError> {
        let etag = answer.etag();
        Ok(Stored { message: self.json(answer)?, etag })
    }

    fn json_body<T: Serialize + ?Sized>(&self, value: &T) -> Result<Body, ClientError> {
        serde_json::to_vec(value).map(|v| Body::Json(v.into())).map_err(|e| ClientError::Request(e.to_string()))
    }

    fn success(&self, answer: Answer) -> Result<Answer, ClientError> {
        if (200..300).contains(&answer.status) {
            return Ok(answer);
        }
        Err(ClientError::Api {
            amphora: self.inner.amphora_id.clone(),
            status: answer.status,
            kind: ApiErrorKind::of(answer.status),
            message: serde_json::from_slice(&answer.body).ok(),
            body: answer.body,
        })
    }

    fn json<T: DeserializeOwned>(&self, answer: Answer) -> Result<T, ClientError> {
        let answer = self.success(answer)?;
        serde_json::from_slice(&answer.body).map_err(|source| ClientError::Decode {
            amphora: self.inner.amphora_id.clone(),
            status: answer.status,
            source,
            body: answer.body,
        })
    }

    // ---- transport ------------------------------------------------------

    async fn call(&self, method: Method, path: &str, body: Body) -> Result<Answer, ClientError> {
        self.call_with(method, path, body, true).await
    }

    /// One request with upstream's retries.
    async fn call_with(&self, method: Method, path: &str, body: Body, retry_404: bool) -> Result<Answer, ClientError> {
        let attempts = self.timeouts.connection_max_retries.max(1);
        let mut attempt = 0;
        loop {
            attempt += 1;
            let error = match self.exchange(&method, path, &body).await {
                Ok(answer) if retry_404 && answer.not_ready() => ClientError::NotReady {
                    amphora: self.inner.amphora_id.clone(),
                    body: String::from_utf8_lossy(&answer.body).chars().take(200).collect(),
                },
                Ok(answer) => return Ok(answer),
                Err(e) if e.is_retried() => e,
                Err(e) => return Err(e),
            };
            if attempt >= attempts {
                tracing::error!(amphora = %self.inner.amphora_id, attempts, error = %error, "amphora unavailable");
                return Err(ClientError::Unavailable {
                    amphora: self.inner.amphora_id.clone(),
                    attempts,
                    last: Box::new(error),
                });
            }
            tracing::warn!(amphora = %self.inner.amphora_id, %method, path, attempt, error = %error, "could not reach the amphora; retrying");
            tokio::time::sleep(self.timeouts.connection_retry_interval).await;
        }
    }

    /// One attempt. A kept-alive connection the agent closed meanwhile is
    /// replaced by a new one at once, without counting as an attempt.
    async fn exchange(&self, method: &Method, path: &str, body: &Body) -> Result<Answer, ClientError> {
        let connections = &self.inner.connections;
        let mut reused = connections.take_idle();
        loop {
            let was_reused = reused.is_some();
            let mut sender = match reused.take() {
                Some(sender) => sender,
                None => connections.open(self.timeouts.connect).await?,
            };
            let request = self.request(method, path, body)?;
            let exchange = async {
                let response = sender.send_request(request).await?;
                let (parts, body) = response.into_parts();
                let body = body.collect().await?.to_bytes();
                Ok::<_, hyper::Error>((parts, body))
            };
            match tokio::time::timeout(self.timeouts.read, exchange).await {
                Err(_) => {
                    return Err(ClientError::ReadTimeout {
                        amphora: self.inner.amphora_id.clone(),
                        timeout: self.timeouts.read,
                    });
                }
                Ok(Ok((parts, body))) => {
                    connections.put_back(sender);
                    return Ok(Answer { status: parts.status.as_u16(), headers: parts.headers, body });
                }
                Ok(Err(e)) if was_reused && (e.is_canceled() || e.is_closed() || e.is_incomplete_message()) => {
                    tracing::debug!(amphora = %self.inner.amphora_id, error = %e, "kept-alive connection was closed");
                    continue;
                }
                Ok(Err(source)) => {
                    return Err(match refusal(&source) {
                        Some(tls) => ClientError::Tls {
                            amphora: self.inner.amphora_id.clone(),
                            addr: self.inner.addr,
                            source: tls,
                        },
                        None => ClientError::Http { amphora: self.inner.amphora_id.clone(), source },
                    });
                }
            }
        }
    }

    fn request(&self, method: &Method, path: &str, body: &Body) -> Result<Request<Full<Bytes>>, ClientError> {
        let builder = Request::builder()
            .method(method.clone())
            .uri(path)
            .header(header::HOST, self.inner.host.clone())
            .header(header::USER_AGENT, USER_AGENT)
            .header(header::ACCEPT, "application/json");
        let (builder, bytes) = match body {
            Body::Empty => (builder, Bytes::new()),
            Body::Raw(bytes) => (builder, bytes.clone()),
            Body::Json(bytes) => (builder.header(header::CONTENT_TYPE, "application/json"), bytes.clone()),
        };
        builder.body(Full::new(bytes)).map_err(|e| ClientError::Request(e.to_string()))
    }
}
