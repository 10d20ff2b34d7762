//! The HTTPS server: mutual-TLS accept loop, HTTP/1.1 with keep-alive, the
//! routers, request logging, and JSON answers for unknown routes and
//! methods (upstream's controller takes a non-JSON 404 for "agent not
//! ready" and keeps retrying).

mod appliance;
mod error;
mod extract;
mod v0_1;
mod v1;

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use amphora_proto::{ApiVersion, Versions, paths};
use axum::Json;
use axum::Router;
use axum::extract::State;
use axum::extract::{DefaultBodyLimit, Request};
use axum::http::{Method, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

pub use error::ApiError;

use crate::info::InfoService;
use crate::lb::LbService;
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

/// While the topology changes, every mutating call of every API waits its
/// turn: 503, as the specification says.
async fn topology_gate(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let mutating = matches!(*request.method(), Method::PUT | Method::POST | Method::DELETE | Method::PATCH);
    if mutating && state.topology.changing() {
        return ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "Topology transition in progress").into_response();
    }
    next.run(request).await
}

async fn not_found(request: Request) -> ApiError {
    ApiError::with_details(
        StatusCode::NOT_FOUND,
        "Not Found",
        format!("No such resource: {} {}", request.method(), request.uri().path()),
    )
}

async fn method_not_allowed(request: Request) -> ApiError {
    ApiError::with_details(
        StatusCode::METHOD_NOT_ALLOWED,
        "Method Not Allowed",
        format!("{} is not allowed on {}", request.method(), request.uri().path()),
    )
}

/// One line per request: method, path, status, duration.
async fn log_request(request: Request, next: Next) -> Response {
    let started = Instant::now();
    let method = request.method().clone();
    let path = request.uri().path().to_owned();
    let response = next.run(request).await;
    let status = response.status().as_u16();
    let millis = started.elapsed().as_secs_f64() * 1000.0;
    if response.status().is_server_error() {
        tracing::warn!(%method, path, status, duration_ms = format!("{millis:.1}"), "request");
    } else {
        tracing::info!(%method, path, status, duration_ms = format!("{millis:.1}"), "request");
    }
    response
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

/// Time limits of client connections.
#[derive(Debug, Clone, Copy)]
pub struct Timeouts {
    /// For the TLS handshake.
    pub handshake: Duration,
    /// For a request's headers, and for an idle keep-alive connection.
    pub read: Duration,
}

/// Accepts connections until `shutdown` resolves. Each connection is
/// verified by mutual TLS, then serves any number of requests.
pub async fn serve(
    listener: TcpListener,
    tls: Arc<TlsState>,
    app: Router,
    timeouts: Timeouts,
    shutdown: impl Future<Output = ()>,
) {
    tokio::pin!(shutdown);
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
        let _ = tcp.set_nodelay(true);
        let acceptor = TlsAcceptor::from(tls.current());
        let app = app.clone();
        tokio::spawn(async move {
            let stream = match tokio::time::timeout(timeouts.handshake, acceptor.accept(tcp)).await {
                Ok(Ok(stream)) => stream,
                Ok(Err(e)) => {
                    tracing::warn!(%peer, error = %e, "TLS handshake refused");
                    return;
                }
                Err(_) => {
                    tracing::warn!(%peer, "TLS handshake timed out");
                    return;
                }
            };
            let service =
                TowerToHyperService::new(tower::ServiceBuilder::new().map_request(merge_slashes).service(app));
            let served = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .keep_alive(true)
                .header_read_timeout(timeouts.read)
                .serve_connection(TokioIo::new(stream), service)
                .await;
            if let Err(e) = served {
                tracing::debug!(%peer, error = %e, "connection ended with an error");
            }
        });
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
