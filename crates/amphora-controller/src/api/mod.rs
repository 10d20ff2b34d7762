//! The Octavia v2 API: the root version document, the amphora admin API
//! (`/v2/octavia/amphorae`) and the load-balancer API (`/v2/lbaas/...`),
//! served under both `/v2` and `/v2.0` as upstream does.
//!
//! Handlers parse and check a request, call the database or queue a job,
//! and render; errors have one shape (`error.rs`).

pub mod amphora;
pub mod error;
pub mod lbaas;
pub mod listing;
pub mod network;
pub mod root;

use std::sync::Arc;

use axum::Router;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, Method, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use futures_util::future::BoxFuture;
use serde_json::Value;
use tokio::sync::Notify;

use crate::auth::Context;
use crate::config::Config;
use crate::db::Db;
use error::{ApiError, ApiResult};
use listing::ListSettings;

/// Turns a request's headers into a caller (noauth or Keystone).
pub trait Authenticate: Send + Sync + std::fmt::Debug {
    fn authenticate<'a>(&'a self, headers: &'a HeaderMap) -> BoxFuture<'a, ApiResult<Context>>;

    /// The `WWW-Authenticate` value sent with a 401.
    fn challenge(&self) -> Option<axum::http::HeaderValue> {
        None
    }
}

/// upstream's `noauth`: everyone is an administrator.
#[derive(Debug)]
pub struct NoAuth;

impl Authenticate for NoAuth {
    fn authenticate<'a>(&'a self, headers: &'a HeaderMap) -> BoxFuture<'a, ApiResult<Context>> {
        Box::pin(async move { Ok(Context::noauth(headers)) })
    }
}

/// What every handler can reach.
#[derive(Debug, Clone)]
pub struct AppState {
    pub db: Db,
    pub config: Arc<Config>,
    pub auth: Arc<dyn Authenticate>,
    /// Wakes the worker of this process when a job is queued.
    pub jobs_queued: Arc<Notify>,
}

impl AppState {
    pub fn list_settings(&self) -> ListSettings {
        let a = &self.config.api;
        ListSettings {
            max_limit: a.pagination_max_limit,
            allow_filtering: a.allow_filtering,
            allow_sorting: a.allow_sorting,
            allow_pagination: a.allow_pagination,
            allow_field_selection: a.allow_field_selection,
        }
    }

    /// The URL of `path` as links should show it: `api_base_uri` or the
    /// request's own host.
    pub fn url(&self, headers: &HeaderMap, path: &str) -> String {
        match &self.config.api.api_base_uri {
            Some(base) => format!("{base}{path}"),
            None => {
                let host = headers.get(header::HOST).and_then(|h| h.to_str().ok()).unwrap_or("localhost");
                let scheme = headers.get("x-forwarded-proto").and_then(|h| h.to_str().ok()).unwrap_or("http");
                format!("{scheme}://{host}{path}")
            }
        }
    }
}

/// The whole router; `/v2.0` and `/v2` are one API.
pub fn app(state: AppState) -> Router {
    let v2 = Router::new()
        .merge(amphora::routes())
        .merge(lbaas::routes())
        .merge(network::routes())
        .route("/", axum::routing::get(|| async { axum::Json(Value::String("v2".into())) }))
        .fallback(no_route)
        .layer(middleware::from_fn_with_state(state.clone(), authenticate));
    Router::new()
        .route("/", axum::routing::get(root::versions))
        .nest("/v2", v2.clone())
        .nest("/v2.0", v2)
        .fallback(no_route)
        .layer(middleware::from_fn(accept_json))
        .layer(axum::extract::DefaultBodyLimit::max(state.config.api.max_request_body_size))
        .with_state(state)
}

async fn no_route(method: Method) -> ApiError {
    // Upstream (pecan) answers 405 for a method its controller lacks and
    // 404 for a path nobody serves; our routers say which applies.
    let _ = method;
    ApiError::NoRoute
}

/// 406 when the client will not take JSON (upstream's ContentTypeHook).
async fn accept_json(request: Request, next: Next) -> Response {
    if let Some(accept) = request.headers().get(header::ACCEPT).and_then(|v| v.to_str().ok())
        && !accept.trim().is_empty()
        && !accept.split(',').any(|part| {
            let media = part.split(';').next().unwrap_or("").trim().to_ascii_lowercase();
            matches!(media.as_str(), "*/*" | "application/*" | "application/json")
        })
    {
        return ApiError::NotAcceptable.into_response();
    }
    let mut response = next.run(request).await;
    if response.status() == axum::http::StatusCode::METHOD_NOT_ALLOWED
        && response.headers().get(header::CONTENT_TYPE).is_none_or(|c| c != "application/json")
    {
        response = ApiError::MethodNotAllowed.into_response();
    }
    response
}

async fn authenticate(State(state): State<AppState>, mut request: Request, next: Next) -> Response {
    match state.auth.authenticate(request.headers()).await {
        Ok(ctx) => {
            request.extensions_mut().insert(ctx);
            next.run(request).await
        }
        Err(ApiError::Unauthorized) => {
            // keystonemiddleware's rejection, which clients recognise.
            let body = serde_json::json!({"error": {
                "code": 401, "title": "Unauthorized",
                "message": "The request you have made requires authentication."}});
            let mut response = (axum::http::StatusCode::UNAUTHORIZED, axum::Json(body)).into_response();
            if let Some(challenge) = state.auth.challenge() {
                response.headers_mut().insert(header::WWW_AUTHENTICATE, challenge);
            }
            response
        }
        Err(e) => e.into_response(),
    }
}

/// The body of a 2xx answer without content.
pub fn accepted() -> Response {
    axum::http::StatusCode::ACCEPTED.into_response()
}

/// Parses a JSON body into `T`, answering upstream's 400 for what does not fit.
pub fn json_body<T: serde::de::DeserializeOwned>(body: &[u8]) -> ApiResult<T> {
    serde_json::from_slice(body).map_err(|e| ApiError::BadRequest(format!("Invalid input for field/attribute. {e}")))
}
