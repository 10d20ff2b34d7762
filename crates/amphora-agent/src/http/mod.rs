//! The HTTPS server: mutual-TLS accept loop, HTTP/1.1 with keep-alive, the
//! routers, request logging, and JSON answers for unknown routes and
//! methods (upstream's controller takes a non-JSON 404 for "agent not
//! ready" and keeps retrying).
//!
//! Every stage of a request has a time limit (handshake, headers, body), and
//! a request is handled only once it has fully arrived. The number of open
//! connections is capped: at the cap, a new client takes the slot of the
//! oldest connection that has no request being handled (one still in its
//! handshake, idle between requests, or sending a request), so clients that
//! hold connections open cannot lock the controller out, and no handler is
//! ever cut half-way. A mutating request that fully arrived runs to
//! completion even if its client goes away before the answer
//! ([`operations`]).

mod appliance;
mod error;
mod extract;
#[cfg(test)]
pub(crate) mod openapi;
mod operations;
#[cfg(test)]
mod router_tests;
mod v0_1;
mod v1;

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use amphora_proto::{ApiVersion, Versions, paths};
use axum::Json;
use axum::Router;
use axum::body::{Body, HttpBody};
use axum::extract::State;
use axum::extract::{DefaultBodyLimit, Request};
use axum::http::{HeaderValue, Method, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use bytes::{Bytes, BytesMut};
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Notify;
use tokio_rustls::TlsAcceptor;
use tower::ServiceExt;

pub use error::{ApiError, Kind};
pub use operations::Operations;

use crate::info::InfoService;
use crate::lb::LbService;
use crate::lvs::LvsService;
use crate::net::NetService;
use crate::settings::LiveConfig;
use crate::tls::TlsState;
use crate::topology::TopologyService;
use crate::vrrp::Vrrp;

/// What handlers reach.
#[derive(Debug, Clone)]
pub struct AppState {
    pub lbs: Arc<LbService>,
    pub info: Arc<InfoService>,
    pub tls: Arc<TlsState>,
    pub settings: Arc<LiveConfig>,
    pub net: Arc<NetService>,
    pub vrrp: Arc<Vrrp>,
    pub lvs: Arc<LvsService>,
    pub topology: Arc<TopologyService>,
    /// The API versions served (configuration `api_versions`).
    pub versions: Arc<Vec<ApiVersion>>,
}

/// The complete application: the enabled API surfaces over one state.
pub fn app(state: AppState, max_body: usize) -> Router {
    let enabled = |v: ApiVersion| state.versions.contains(&v);
    let mut router = Router::new().route(paths::ROOT, get(version_discovery));
    if enabled(ApiVersion::V1_0) || enabled(ApiVersion::V0_1) {
        // Both specifications call /info the one unversioned route.
        router = router.route(paths::INFO, get(v1::info));
    }
    if enabled(ApiVersion::V1_0) {
        router = router.merge(v1::router());
    }
    if enabled(ApiVersion::V0_1) {
        router = router.merge(v0_1::router());
    }
    if enabled(ApiVersion::Appliance) {
        router = router.merge(appliance::router());
    }
    router
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(max_body))
        .layer(middleware::from_fn_with_state(state.clone(), topology_gate))
        .layer(middleware::from_fn(log_request))
        .with_state(state)
}

/// `GET /`: upstream's controller reads `api_version`; `versions` lists
/// everything served.
async fn version_discovery(State(state): State<AppState>) -> Json<Versions> {
    let api_version = [ApiVersion::V1_0, ApiVersion::V0_1, ApiVersion::Appliance]
        .into_iter()
        .find(|v| state.versions.contains(v))
        .unwrap_or(ApiVersion::V1_0);
    Json(Versions { api_version, versions: state.versions.as_ref().clone() })
}

fn is_mutating(method: &Method) -> bool {
    matches!(*method, Method::PUT | Method::POST | Method::DELETE | Method::PATCH)
}

/// While the topology changes, every mutating call of every API waits its
/// turn: 503, as the specification says.
async fn topology_gate(State(state): State<AppState>, request: Request, next: Next) -> Response {
    if is_mutating(request.method()) && state.topology.changing() {
        return ApiError::new(Kind::Unavailable, "Topology transition in progress").into_response();
    }
    next.run(request).await
}

async fn not_found(request: Request) -> ApiError {
    ApiError::new(Kind::NotFound, "Not Found").with_details(format!(
        "No such resource: {} {}",
        request.method(),
        request.uri().path()
    ))
}

async fn method_not_allowed(request: Request) -> ApiError {
    ApiError::new(Kind::MethodNotAllowed, "Method Not Allowed").with_details(format!(
        "{} is not allowed on {}",
        request.method(),
        request.uri().path()
    ))
}

/// One line per request: method, path, status, duration.
async fn log_request(request: Request, next: Next) -> Response {
    let started = Instant::now();
    let method = request.method().clone();
    // The URI shares its buffer: no copy of the path.
    let uri = request.uri().clone();
    let path = uri.path();
    let response = next.run(request).await;
    let status = response.status().as_u16();
    let millis = Millis(started.elapsed());
    if response.status().is_server_error() {
        tracing::warn!(%method, path, status, duration_ms = %millis, "request");
    } else {
        tracing::info!(%method, path, status, duration_ms = %millis, "request");
    }
    response
}

/// A duration in milliseconds with one decimal, formatted straight into
/// the log line.
struct Millis(Duration);

impl std::fmt::Display for Millis {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:.1}", self.0.as_secs_f64() * 1000.0)
    }
}

/// Collapses runs of slashes in the path before routing, as upstream's
/// Flask does: its controller asks for version discovery at `//`.
fn merge_slashes<B>(mut request: hyper::Request<B>) -> hyper::Request<B> {
    let path = request.uri().path();
    if !path.contains("//") {
        return request;
    }
    let mut merged = String::with_capacity(path.len());
    for c in path.chars() {
        if !(c == '/' && merged.ends_with('/')) {
            merged.push(c);
        }
    }
    if let Some(query) = request.uri().query() {
        merged.push('?');
        merged.push_str(query);
    }
    let mut parts = request.uri().clone().into_parts();
    if let Ok(path_and_query) = merged.parse() {
        parts.path_and_query = Some(path_and_query);
        if let Ok(uri) = axum::http::Uri::from_parts(parts) {
            *request.uri_mut() = uri;
        }
    }
    request
}

/// Limits of client connections.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// For the TLS handshake.
    pub handshake: Duration,
    /// For a request's headers, for its body (counted from the end of the
    /// headers), and for an idle keep-alive connection.
    pub read: Duration,
    /// Connections open at once.
    pub max_connections: usize,
    /// The largest request body (`max_request_body_size`).
    pub max_body: usize,
}

/// One client connection, as the connection table sees it.
#[derive(Debug, Default)]
struct Connection {
    /// A request that fully arrived is being handled: the connection must
    /// not be cut, or the operation would stop half-way.
    working: AtomicBool,
    /// Asks the connection to make room for a new client.
    evict: Notify,
}

/// Open connections, oldest first.
#[derive(Debug, Default)]
struct Connections {
    open: Mutex<BTreeMap<u64, Arc<Connection>>>,
}

impl Connections {
    /// Admits a new connection, evicting the oldest one that is not
    /// working when all `max` slots are taken. `None` when every
    /// connection is working.
    fn admit(&self, id: u64, max: usize) -> Option<Arc<Connection>> {
        let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        if open.len() >= max {
            let victim = open.iter().find(|(_, c)| !c.working.load(Ordering::SeqCst)).map(|(id, _)| *id)?;
            if let Some(evicted) = open.remove(&victim) {
                evicted.evict.notify_one();
            }
        }
        let connection = Arc::new(Connection::default());
        open.insert(id, connection.clone());
        Some(connection)
    }

    fn release(&self, id: u64) {
        self.open.lock().unwrap_or_else(|e| e.into_inner()).remove(&id);
    }
}

/// Reads a request body whole, within the time and size limits.
async fn read_body(mut body: Incoming, limits: &Limits) -> Result<Bytes, ApiError> {
    let too_large = || {
        ApiError::new(Kind::TooLarge, "Request body too large")
            .with_details(format!("the limit is {} bytes", limits.max_body))
    };
    // Most requests (every GET) have no body: no timer, no buffer.
    if body.is_end_stream() {
        return Ok(Bytes::new());
    }
    let deadline = tokio::time::Instant::now() + limits.read;
    let mut data = BytesMut::new();
    loop {
        let frame = std::future::poll_fn(|cx| Pin::new(&mut body).poll_frame(cx));
        match tokio::time::timeout_at(deadline, frame).await {
            Err(_) => {
                return Err(ApiError::new(Kind::TimedOut, "Request Timeout")
                    .with_details(format!("the request body did not arrive within {:?}", limits.read)));
            }
            Ok(None) => return Ok(data.freeze()),
            Ok(Some(Err(e))) => {
                return Err(ApiError::new(Kind::Invalid, "Invalid request").with_details(e.to_string()));
            }
            Ok(Some(Ok(frame))) => {
                if let Ok(chunk) = frame.into_data() {
                    if data.len() + chunk.len() > limits.max_body {
                        return Err(too_large());
                    }
                    data.extend_from_slice(&chunk);
                }
            }
        }
    }
}

/// Accepts connections until `shutdown` resolves. Each connection is
/// verified by mutual TLS, then serves any number of requests; mutating
/// ones run as `operations`, to completion.
pub async fn serve(
    listener: TcpListener,
    tls: Arc<TlsState>,
    app: Router,
    limits: Limits,
    operations: Operations,
    shutdown: impl Future<Output = ()>,
) {
    tokio::pin!(shutdown);
    let connections = Arc::new(Connections::default());
    let mut next_id = 0u64;
    loop {
        let (tcp, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(connection) => connection,
                Err(e) => {
                    // Out of descriptors and the like: pause rather than spin.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => return,
        };
        next_id += 1;
        let id = next_id;
        let Some(connection) = connections.admit(id, limits.max_connections) else {
            tracing::warn!(%peer, max = limits.max_connections, "every connection is busy; refusing a new one");
            continue;
        };
        let _ = tcp.set_nodelay(true);
        let acceptor = TlsAcceptor::from(tls.current());
        let app = app.clone();
        let connections = connections.clone();
        let operations = operations.clone();
        tokio::spawn(async move {
            serve_connection(tcp, peer, acceptor, app, limits, connection, operations).await;
            connections.release(id);
        });
    }
}

/// One request: its body read whole within the limits, then routed.
async fn handle(
    request: hyper::Request<Incoming>,
    app: Router,
    limits: Limits,
    peer: std::net::SocketAddr,
    connection: Arc<Connection>,
) -> Response {
    let (parts, body) = merge_slashes(request).into_parts();
    let body = match read_body(body, &limits).await {
        Ok(body) => body,
        Err(error) => {
            let timed_out = error.kind() == Kind::TimedOut;
            let mut response = error.into_response();
            let status = response.status().as_u16();
            tracing::warn!(%peer, method = %parts.method, path = parts.uri.path(), status, "request refused");
            if timed_out {
                // The rest of a late body would be taken for the next
                // request: the connection ends here.
                response.headers_mut().insert(header::CONNECTION, HeaderValue::from_static("close"));
            }
            return response;
        }
    };
    connection.working.store(true, Ordering::SeqCst);
    let response = match app.oneshot(Request::from_parts(parts, Body::from(body))).await {
        Ok(response) => response,
        Err(infallible) => match infallible {},
    };
    connection.working.store(false, Ordering::SeqCst);
    response
}

async fn serve_connection(
    tcp: TcpStream,
    peer: std::net::SocketAddr,
    acceptor: TlsAcceptor,
    app: Router,
    limits: Limits,
    connection: Arc<Connection>,
    operations: Operations,
) {
    let stream = tokio::select! {
        handshake = tokio::time::timeout(limits.handshake, acceptor.accept(tcp)) => match handshake {
            Ok(Ok(stream)) => stream,
            Ok(Err(e)) => {
                tracing::warn!(%peer, error = %e, "TLS handshake refused");
                return;
            }
            Err(_) => {
                tracing::warn!(%peer, "TLS handshake timed out");
                return;
            }
        },
        () = connection.evict.notified() => {
            tracing::info!(%peer, "connection closed during its handshake to make room for a new one");
            return;
        }
    };
    let state = connection.clone();
    let service = hyper::service::service_fn(move |request: hyper::Request<Incoming>| {
        let mutating = is_mutating(request.method());
        let (method, path) = (request.method().clone(), request.uri().path().to_owned());
        let handling = handle(request, app.clone(), limits, peer, state.clone());
        // Started here, not when hyper first polls the answer: hyper may
        // drop the answer unpolled when the client's close arrives with
        // its request.
        let answer: Pin<Box<dyn Future<Output = Response> + Send>> = if !mutating {
            Box::pin(handling)
        } else {
            match operations.spawn(handling) {
                Ok(operation) => Box::pin(async move {
                    operation.output().await.unwrap_or_else(|e| {
                        tracing::error!(%peer, %method, path, error = %e, "request handler failed");
                        ApiError::new(Kind::Internal, "Internal Server Error").into_response()
                    })
                }),
                Err(e) => Box::pin(std::future::ready(ApiError::new(Kind::Unavailable, e.to_string()).into_response())),
            }
        };
        async move { Ok::<_, Infallible>(answer.await) }
    });
    let served = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .keep_alive(true)
        .header_read_timeout(limits.read)
        .serve_connection(TokioIo::new(stream), service);
    tokio::pin!(served);
    let outcome = tokio::select! {
        outcome = served.as_mut() => outcome,
        () = connection.evict.notified() => {
            if !connection.working.load(Ordering::SeqCst) {
                tracing::info!(%peer, "idle connection closed to make room for a new one");
                return;
            }
            // A request is being handled: finish it, then close.
            served.as_mut().graceful_shutdown();
            served.await
        }
    };
    if let Err(e) = outcome {
        tracing::debug!(%peer, error = %e, "connection ended with an error");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn path_after(uri: &str) -> String {
        let request = hyper::Request::builder().uri(uri).body(()).expect("request");
        merge_slashes(request).uri().to_string()
    }

    #[test]
    fn repeated_slashes_are_merged() {
        assert_eq!(path_after("//"), "/");
        assert_eq!(path_after("/1.0//info"), "/1.0/info");
        assert_eq!(path_after("///1.0/details?x=1"), "/1.0/details?x=1");
        assert_eq!(path_after("/1.0/info"), "/1.0/info");
    }
}
