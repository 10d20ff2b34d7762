//! The 0.1 API (`amphora-api-0.1.rst`): one haproxy per listener in that
//! model, so a listener id plays the part of the 1.0 load balancer id. A
//! thin router over the same domain services as 1.0; where the two APIs'
//! specifications differ (201 for uploads, 404 for deleting what is not
//! there), each follows its own.

use amphora_proto::v0_1::{self, TopologyKind, TopologyResponse};
use amphora_proto::{ApiVersion, CertificateMd5, Message, Topology, TopologyStatus};
use axum::Json;
use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};

use super::AppState;
use super::error::{ApiError, Dialect, Kind, in_dialect};
use super::extract::{PathParams, RawBody};
use super::v1::{json_body, with_etag};
use crate::certs::{CertFileName, KeyRule};
use crate::ids::{AmphoraId, LbId};
use crate::lb::{Action, Outcome};
use crate::topology;

pub fn router() -> Router<AppState> {
    use amphora_proto::paths::v0_1 as path;
    Router::new()
        .route(path::TOPOLOGY, get(get_topology).post(set_topology))
        .route(path::INFO, get(info))
        .route(path::DETAILS, get(details))
        .route(path::LISTENERS, get(listeners))
        .route(path::LISTENER, get(listener).delete(delete_listener))
        .route(path::LISTENER_ACTION, put(act))
        .route(path::LISTENER_CONFIG, put(upload_config).get(get_config))
        .route(path::LISTENER_CERTIFICATE, put(upload_certificate).get(certificate_md5).delete(delete_certificate))
        .route(path::PLUG_VIP, post(plug_vip))
        .route(path::PLUG_NETWORK, post(plug_network))
        .route(path::PLUG_NETWORK_SLASH, post(plug_network))
        .layer(axum::middleware::map_response(|response| in_dialect(Dialect::V0_1, response)))
}

fn listener_id(raw: &str) -> Result<LbId, ApiError> {
    Ok(LbId::parse(raw)?)
}

fn require_listener(state: &AppState, id: &LbId) -> Result<(), ApiError> {
    if state.lbs.layout().config(id).is_file() { Ok(()) } else { Err(ApiError::lb_not_found(id)) }
}

async fn get_topology(State(state): State<AppState>) -> Response {
    let record = state.topology.record().unwrap_or_default();
    let info = state.info.info().await;
    Json(TopologyResponse {
        hostname: info.hostname,
        uuid: info.uuid,
        topology: record.topology.to_v0_1(),
        role: match record.role {
            topology::Role::Active => v0_1::Role::Active,
            topology::Role::Standby => v0_1::Role::Standby,
        },
        ha_ip: record.ha_ip.map(|ip| ip.to_string()).unwrap_or_default(),
        topology_status: TopologyStatus::from(state.topology.status()),
    })
    .into_response()
}

async fn set_topology(State(state): State<AppState>, RawBody(body): RawBody) -> Result<Response, ApiError> {
    let request: topology::Request = json_body(&body, "Invalid request")?;
    let record = topology::validate(&request)
        .map_err(|details| ApiError::new(Kind::Invalid, "Invalid request").with_details(details))?;
    let outcome = state.topology.set(record).await?;
    let status = match outcome {
        topology::SetOutcome::Unchanged => StatusCode::OK,
        topology::SetOutcome::Transition => StatusCode::ACCEPTED,
    };
    Ok((status, Json(Message::ok())).into_response())
}

async fn info(State(state): State<AppState>) -> Response {
    let mut info = state.info.info().await;
    info.api_version = ApiVersion::V0_1;
    Json(info).into_response()
}

async fn details(State(state): State<AppState>) -> Response {
    let mut details = state.info.details().await;
    details.info.api_version = ApiVersion::V0_1;
    // The 0.1 API spells topologies its own way.
    let topology = match state.topology.record() {
        Some(record) => record.topology.to_v0_1(),
        None if details.topology == Topology::ActiveStandby => TopologyKind::ActiveStandby,
        None => TopologyKind::Single,
    };
    Json(details.with_topology(topology)).into_response()
}

async fn listeners(State(state): State<AppState>) -> Response {
    Json(state.lbs.listeners().await).into_response()
}

async fn listener(
    State(state): State<AppState>,
    PathParams(listener): PathParams<String>,
) -> Result<Response, ApiError> {
    Ok(Json(state.lbs.listener_detail(&listener).await?).into_response())
}

async fn delete_listener(
    State(state): State<AppState>,
    PathParams(listener): PathParams<String>,
) -> Result<Response, ApiError> {
    let id = listener_id(&listener)?;
    require_listener(&state, &id)?;
    state.lbs.delete(&id).await?;
    Ok(Json(Message::ok()).into_response())
}

async fn act(
    State(state): State<AppState>,
    PathParams((listener, action)): PathParams<(String, String)>,
) -> Result<Response, ApiError> {
    let id = listener_id(&listener)?;
    let action = Action::parse(&action)?;
    let outcome = state.lbs.act(&id, action).await?;
    let details = match outcome {
        Outcome::Started => format!("Configuration file is valid\nhaproxy daemon for {id} started"),
        Outcome::Stopped => format!("Listener {id} stopped"),
        Outcome::Reloaded => format!("Listener {id} reloaded"),
    };
    Ok((StatusCode::ACCEPTED, Json(Message::with_details("OK", details))).into_response())
}

async fn upload_config(
    State(state): State<AppState>,
    PathParams(listener): PathParams<String>,
    RawBody(body): RawBody,
) -> Result<Response, ApiError> {
    let id = listener_id(&listener)?;
    let amphora = AmphoraId::parse(&state.settings.current().amphora_agent.amphora_id)?;
    let etag = state.lbs.upload_config(&amphora, &id, &body).await?;
    Ok(with_etag((StatusCode::CREATED, Json(Message::ok())).into_response(), &etag))
}

async fn get_config(
    State(state): State<AppState>,
    PathParams(listener): PathParams<String>,
) -> Result<Response, ApiError> {
    let id = listener_id(&listener)?;
    let (config, etag) = state.lbs.config(&id)?;
    let response = ([(header::CONTENT_TYPE, "text/plain; charset=utf-8")], config).into_response();
    Ok(with_etag(response, &etag))
}

fn certificate_path(listener: &str, filename: &str) -> Result<(LbId, CertFileName), ApiError> {
    Ok((listener_id(listener)?, CertFileName::parse(filename)?))
}

async fn upload_certificate(
    State(state): State<AppState>,
    PathParams((listener, filename)): PathParams<(String, String)>,
    RawBody(body): RawBody,
) -> Result<Response, ApiError> {
    let (id, name) = certificate_path(&listener, &filename)?;
    require_listener(&state, &id)?;
    let md5 = state.lbs.put_certificate(&id, &name, &body, KeyRule::Optional).await?;
    Ok(with_etag((StatusCode::CREATED, Json(Message::ok())).into_response(), &md5))
}

async fn certificate_md5(
    State(state): State<AppState>,
    PathParams((listener, filename)): PathParams<(String, String)>,
) -> Result<Response, ApiError> {
    let (id, name) = certificate_path(&listener, &filename)?;
    require_listener(&state, &id)?;
    let md5sum = state.lbs.certificate_md5(&id, &name)?;
    Ok(with_etag(Json(CertificateMd5 { md5sum: md5sum.clone() }).into_response(), &md5sum))
}

async fn delete_certificate(
    State(state): State<AppState>,
    PathParams((listener, filename)): PathParams<(String, String)>,
) -> Result<Response, ApiError> {
    let (id, name) = certificate_path(&listener, &filename)?;
    // 0.1 reports a missing certificate; 1.0 deletes idempotently.
    state.lbs.certificate_md5(&id, &name)?;
    state.lbs.delete_certificate(&id, &name).await?;
    Ok(Json(Message::ok()).into_response())
}

async fn plug_vip(State(state): State<AppState>, PathParams(vip): PathParams<String>) -> Result<Response, ApiError> {
    let details =
        state.net.plug_discovered_vip(&vip).await.map_err(|e| ApiError::from(e).when_internal("Error plugging VIP"))?;
    Ok((StatusCode::ACCEPTED, Json(Message::with_details("OK", details))).into_response())
}

async fn plug_network(State(state): State<AppState>) -> Result<Response, ApiError> {
    let details = state
        .net
        .plug_discovered_network()
        .await
        .map_err(|e| ApiError::from(e).when_internal("Error plugging Port"))?;
    Ok((StatusCode::ACCEPTED, Json(Message::with_details("OK", details))).into_response())
}
