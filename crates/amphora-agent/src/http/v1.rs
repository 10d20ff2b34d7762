//! The 1.0 API router: each handler extracts and validates its inputs,
//! makes one call on a domain service and shapes the answer.

use amphora_proto::{API_VERSION, Message, VersionDiscovery};
use axum::Json;
use axum::Router;
use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, put};

use super::AppState;
use super::error::ApiError;
use super::extract::{PathParams, RawBody};
use crate::ids::{AmphoraId, LbId};
use crate::lb::{Action, Outcome};

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/", get(version))
        .route("/info", get(info))
        .route("/1.0/info", get(info))
        .route("/1.0/details", get(details))
        .route("/1.0/listeners", get(listeners))
        .route("/1.0/listeners/{id}", delete(delete_lb))
        .route("/1.0/loadbalancer/{first}/haproxy", get(get_config))
        .route("/1.0/loadbalancer/{first}/{second}", put(act))
        .route("/1.0/loadbalancer/{first}/{second}/haproxy", put(upload_config))
}

async fn version() -> Json<VersionDiscovery> {
    Json(VersionDiscovery { api_version: API_VERSION.into() })
}

async fn info(State(state): State<AppState>) -> Response {
    Json(state.info.info()).into_response()
}

async fn details(State(state): State<AppState>) -> Response {
    Json(state.info.details()).into_response()
}

async fn listeners(State(state): State<AppState>) -> Response {
    Json(state.lbs.listeners().await).into_response()
}

fn with_etag(mut response: Response, etag: &str) -> Response {
    if let Ok(value) = HeaderValue::from_str(etag) {
        response.headers_mut().insert(header::ETAG, value);
    }
    response
}

async fn upload_config(
    State(state): State<AppState>,
    PathParams((amphora_id, lb_id)): PathParams<(String, String)>,
    RawBody(body): RawBody,
) -> Result<Response, ApiError> {
    let amphora_id = AmphoraId::parse(&amphora_id)?;
    let lb_id = LbId::parse(&lb_id)?;
    let etag = state.lbs.upload_config(&amphora_id, &lb_id, &body).await?;
    Ok(with_etag((StatusCode::ACCEPTED, Json(Message::ok())).into_response(), &etag))
}

async fn get_config(
    State(state): State<AppState>,
    PathParams(lb_id): PathParams<String>,
) -> Result<Response, ApiError> {
    let lb_id = LbId::parse(&lb_id)?;
    let (config, etag) = state.lbs.config(&lb_id)?;
    let response = ([(header::CONTENT_TYPE, "text/plain; charset=utf-8")], config).into_response();
    Ok(with_etag(response, &etag))
}

async fn act(
    State(state): State<AppState>,
    PathParams((lb_id, action)): PathParams<(String, String)>,
) -> Result<Response, ApiError> {
    let lb_id = LbId::parse(&lb_id)?;
    let action = Action::parse(&action)?;
    let outcome = state.lbs.act(&lb_id, action).await.map_err(ApiError::from_action_error)?;
    let details = match outcome {
        Outcome::Started => format!("Configuration file is valid\nhaproxy daemon for {lb_id} started"),
        Outcome::Stopped => format!("Listener {lb_id} stopped"),
        Outcome::Reloaded => format!("Listener {lb_id} reloaded"),
    };
    Ok((StatusCode::ACCEPTED, Json(Message::with_details("OK", details))).into_response())
}

async fn delete_lb(State(state): State<AppState>, PathParams(lb_id): PathParams<String>) -> Result<Response, ApiError> {
    let lb_id = LbId::parse(&lb_id)?;
    state.lbs.delete(&lb_id).await?;
    Ok(Json(Message::ok()).into_response())
}
