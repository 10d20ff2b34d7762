//! The 1.0 API router: each handler extracts and validates its inputs,
//! makes one call on a domain service and shapes the answer.

use amphora_proto::net::InterfaceLookup;
use amphora_proto::paths::v1;
use amphora_proto::{CertificateMd5, Message};
use axum::Json;
use axum::Router;
use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};

use super::AppState;
use super::error::{ApiError, Kind};
use super::extract::{PathParams, RawBody};
use crate::certs::{CertFileName, KeyRule};
use crate::ids::{AmphoraId, LbId};
use crate::lb::{Action, Outcome};
use crate::net::model::{PlugNetworkRequest, PlugVipRequest};
use crate::net::nft::RuleRequest;
use crate::{lvs, vrrp};

pub fn router() -> Router<AppState> {
    Router::new()
        .route(v1::INFO, get(info))
        .route(v1::DETAILS, get(details))
        .route(v1::LISTENERS, get(listeners))
        .route(v1::LISTENER, get(listener).delete(delete_lb))
        .route(v1::LVS_CONFIG, get(get_lvs_config))
        .route(v1::LVS_UPLOAD_CONFIG, put(upload_lvs_config))
        .route(v1::LB_CONFIG, get(get_config))
        .route(v1::LB_ACTION, put(act))
        .route(v1::LB_UPLOAD_CONFIG, put(upload_config))
        .route(v1::SERVER_CERTIFICATE, put(rotate_certificate))
        .route(v1::PLUG_VIP, post(plug_vip))
        .route(v1::PLUG_NETWORK, post(plug_network))
        .route(v1::PLUG_NETWORK_SLASH, post(plug_network))
        .route(v1::INTERFACE, get(interface))
        .route(v1::INTERFACE_RULES, put(interface_rules))
        .route(v1::VRRP_UPLOAD, put(upload_vrrp))
        .route(v1::VRRP_ACTION, put(vrrp_action))
        .route(v1::AGENT_CONFIG, put(update_config))
        .route(v1::LB_CERTIFICATE, put(upload_certificate).get(certificate_md5).delete(delete_certificate))
}

pub(super) async fn info(State(state): State<AppState>) -> Response {
    ([(header::CONTENT_TYPE, "application/json")], state.info.info_json().await).into_response()
}

async fn details(State(state): State<AppState>) -> Response {
    Json(state.info.details().await).into_response()
}

async fn listeners(State(state): State<AppState>) -> Response {
    let mut all = state.lbs.listeners().await;
    all.extend(state.lvs.statuses());
    Json(all).into_response()
}

/// `GET /1.0/listeners/{id}`: one listener with its pools and members
/// (upstream's client has `get_listener_status` for it).
async fn listener(State(state): State<AppState>, PathParams(id): PathParams<String>) -> Result<Response, ApiError> {
    Ok(Json(state.lbs.listener_detail(&id).await?).into_response())
}

pub(super) fn with_etag(mut response: Response, etag: &str) -> Response {
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

/// Whether an id names a UDP/SCTP listener rather than a load balancer
/// (upstream: `get_backend_for_lb_object`, haproxy first).
fn is_lvs(state: &AppState, id: &LbId) -> bool {
    !state.lbs.layout().config(id).is_file() && state.lvs.exists(id)
}

async fn act(
    State(state): State<AppState>,
    PathParams((lb_id, action)): PathParams<(String, String)>,
) -> Result<Response, ApiError> {
    let lb_id = LbId::parse(&lb_id)?;
    if is_lvs(&state, &lb_id) {
        return lvs_act(&state, &lb_id, &action).await;
    }
    let action = Action::parse(&action)?;
    let outcome = state.lbs.act(&lb_id, action).await.map_err(|e| ApiError::from(e).on_action_route())?;
    let details = match outcome {
        Outcome::Started => format!("Configuration file is valid\nhaproxy daemon for {lb_id} started"),
        Outcome::Stopped => format!("Listener {lb_id} stopped"),
        Outcome::Reloaded => format!("Listener {lb_id} reloaded"),
    };
    Ok((StatusCode::ACCEPTED, Json(Message::with_details("OK", details))).into_response())
}

async fn delete_lb(State(state): State<AppState>, PathParams(lb_id): PathParams<String>) -> Result<Response, ApiError> {
    let lb_id = LbId::parse(&lb_id)?;
    if is_lvs(&state, &lb_id) {
        state.lvs.delete(&lb_id).await.map_err(|e| lvs_failure("Error stopping keepalivedlvs", e))?;
    } else {
        state.lbs.delete(&lb_id).await?;
    }
    Ok(Json(Message::ok()).into_response())
}

/// `PUT /1.0/listeners/{amphora}/{listener}/udp_listener`: a UDP or SCTP
/// listener's keepalived configuration, checked by keepalived.
async fn upload_lvs_config(
    State(state): State<AppState>,
    PathParams((amphora_id, listener_id)): PathParams<(String, String)>,
    RawBody(body): RawBody,
) -> Result<Response, ApiError> {
    AmphoraId::parse(&amphora_id)?;
    let id = LbId::parse(&listener_id)?;
    let etag = state.lvs.upload(&id, &body).await.map_err(|e| match e {
        // keepalived's own words on what it refused.
        lvs::LvsError::NotUtf8 | lvs::LvsError::Invalid(_) => {
            ApiError::new(Kind::Invalid, "Invalid request").with_details(e.to_string())
        }
        e => lvs_failure("Error storing the keepalivedlvs configuration", e),
    })?;
    Ok(with_etag(Json(Message::ok()).into_response(), &etag))
}

fn lvs_not_found(id: &str) -> ApiError {
    ApiError::new(Kind::NotFound, "UDP Listener Not Found").with_details(format!("No UDP listener with UUID: {id}"))
}

/// A UDP/SCTP listener's keepalived failed: the body carries keepalived's
/// own output; a failure of the agent itself (a file, a signal) goes whole
/// to the log only.
fn lvs_failure(message: impl Into<String>, error: lvs::LvsError) -> ApiError {
    match &error {
        lvs::LvsError::Invalid(output) | lvs::LvsError::Failed(output) => {
            tracing::error!(error = %error, "keepalivedlvs failed");
            ApiError::new(Kind::Internal, message).with_details(output.clone())
        }
        _ => ApiError::internal(message, "keepalived could not be run; see the amphora agent's log", &error),
    }
}

async fn get_lvs_config(
    State(state): State<AppState>,
    PathParams(listener_id): PathParams<String>,
) -> Result<Response, ApiError> {
    let id = LbId::parse(&listener_id)?;
    let text = state.lvs.config_text(&id).ok_or_else(|| lvs_not_found(id.as_str()))?;
    Ok(([(header::CONTENT_TYPE, "text/plain; charset=utf-8")], text).into_response())
}

async fn lvs_act(state: &AppState, id: &LbId, action: &str) -> Result<Response, ApiError> {
    let action = lvs::Action::parse(action).map_err(|_| {
        ApiError::new(Kind::Invalid, "Invalid Request").with_details(format!("Unknown action: {action}"))
    })?;
    // Upstream words its answers "{systemctl verb}ed" ("stoped"). It
    // answers a reload with "restarted", as it restarts keepalived; this
    // agent reloads it (established flows stay), and says so.
    let (verb, done) = match action {
        lvs::Action::Start => ("start", "started"),
        lvs::Action::Reload => ("reload", "reloaded"),
        lvs::Action::Stop => ("stop", "stoped"),
    };
    state
        .lvs
        .act(id, action)
        .await
        .ok_or_else(|| lvs_not_found(id.as_str()))?
        .map_err(|e| lvs_failure(format!("Failed to {verb} keepalivedlvs listener {id}"), e))?;
    let details = format!("keepalivedlvs listener {id} {done}");
    Ok((StatusCode::ACCEPTED, Json(Message::with_details("OK", details))).into_response())
}

fn certificate_path(lb_id: &str, filename: &str) -> Result<(LbId, CertFileName), ApiError> {
    Ok((LbId::parse(lb_id)?, CertFileName::parse(filename)?))
}

async fn upload_certificate(
    State(state): State<AppState>,
    PathParams((lb_id, filename)): PathParams<(String, String)>,
    RawBody(body): RawBody,
) -> Result<Response, ApiError> {
    let (lb_id, name) = certificate_path(&lb_id, &filename)?;
    let md5 = state.lbs.put_certificate(&lb_id, &name, &body, KeyRule::Optional).await?;
    Ok(with_etag(Json(Message::ok()).into_response(), &md5))
}

async fn certificate_md5(
    State(state): State<AppState>,
    PathParams((lb_id, filename)): PathParams<(String, String)>,
) -> Result<Response, ApiError> {
    let (lb_id, name) = certificate_path(&lb_id, &filename)?;
    let md5sum = state.lbs.certificate_md5(&lb_id, &name)?;
    Ok(with_etag(Json(CertificateMd5 { md5sum: md5sum.clone() }).into_response(), &md5sum))
}

async fn delete_certificate(
    State(state): State<AppState>,
    PathParams((lb_id, filename)): PathParams<(String, String)>,
) -> Result<Response, ApiError> {
    let (lb_id, name) = certificate_path(&lb_id, &filename)?;
    state.lbs.delete_certificate(&lb_id, &name).await?;
    Ok(Json(Message::ok()).into_response())
}

async fn rotate_certificate(State(state): State<AppState>, RawBody(body): RawBody) -> Result<Response, ApiError> {
    let tls = state.tls.clone();
    // Parsing keys and building the TLS configuration is CPU work.
    tokio::task::spawn_blocking(move || tls.rotate(&body)).await??;
    Ok((StatusCode::ACCEPTED, Json(Message::ok())).into_response())
}

async fn update_config(State(state): State<AppState>, RawBody(body): RawBody) -> Result<Response, ApiError> {
    let report = state.settings.update(&body).await?;
    Ok((StatusCode::ACCEPTED, Json(Message::with_details("OK", report.to_string()))).into_response())
}

/// A JSON body; a malformed one is a 400 with `message`.
pub(super) fn json_body<T: serde::de::DeserializeOwned>(body: &[u8], message: &str) -> Result<T, ApiError> {
    serde_json::from_slice(body).map_err(|e| ApiError::new(Kind::Invalid, message).with_details(e.to_string()))
}

async fn plug_vip(
    State(state): State<AppState>,
    PathParams(vip): PathParams<String>,
    RawBody(body): RawBody,
) -> Result<Response, ApiError> {
    let request: PlugVipRequest = json_body(&body, "Invalid subnet information")?;
    let details =
        state.net.plug_vip(&vip, &request).await.map_err(|e| ApiError::from(e).when_internal("Error plugging VIP"))?;
    Ok((StatusCode::ACCEPTED, Json(Message::with_details("OK", details))).into_response())
}

async fn plug_network(State(state): State<AppState>, RawBody(body): RawBody) -> Result<Response, ApiError> {
    let request: PlugNetworkRequest = json_body(&body, "Invalid port information")?;
    let details =
        state.net.plug_network(&request).await.map_err(|e| ApiError::from(e).when_internal("Error plugging Port"))?;
    Ok((StatusCode::ACCEPTED, Json(Message::with_details("OK", details))).into_response())
}

async fn interface(State(state): State<AppState>, PathParams(ip): PathParams<String>) -> Result<Response, ApiError> {
    let name = state
        .net
        .interface_of(&ip)
        .await
        .map_err(|e| ApiError::from(e).when_internal("Error looking up the interface"))?;
    Ok(Json(InterfaceLookup { message: "OK".into(), interface: name }).into_response())
}

async fn interface_rules(
    State(state): State<AppState>,
    PathParams(ip): PathParams<String>,
    RawBody(body): RawBody,
) -> Result<Response, ApiError> {
    let rules: Vec<RuleRequest> = json_body(&body, "Invalid rules information")?;
    state
        .net
        .set_rules(&ip, &rules)
        .await
        .map_err(|e| ApiError::from(e).when_internal("Error loading the firewall rules"))?;
    Ok(Json(Message::ok()).into_response())
}

async fn upload_vrrp(State(state): State<AppState>, RawBody(body): RawBody) -> Result<Response, ApiError> {
    let etag = state.vrrp.upload(&body, || state.lbs.wanted_stats_sockets()).await?;
    Ok(with_etag(Json(Message::ok()).into_response(), &etag))
}

async fn vrrp_action(
    State(state): State<AppState>,
    PathParams(action): PathParams<String>,
) -> Result<Response, ApiError> {
    let action = vrrp::Action::parse(&action)?;
    let done = state
        .vrrp
        .act(action)
        .await
        .map_err(|e| ApiError::from(e).when_internal(format!("Failed to {} keepalived service", action.verb())))?;
    Ok((StatusCode::ACCEPTED, Json(Message::with_details("OK", format!("keepalived {}", done.done())))).into_response())
}
