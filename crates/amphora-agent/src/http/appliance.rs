//! The original appliance API (`appliance-api.md`): unversioned paths,
//! plain-text answers, an "instance" being a load balancer. A thin router
//! over the same domain services; its error conventions are its own (409
//! for a bad certificate file, 403 for a method it does not know), applied
//! by [`super::error::render_appliance`].

use amphora_proto::appliance::ApplianceStatus;
use amphora_proto::paths::appliance;
use axum::Json;
use axum::Router;
use axum::extract::{Request, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

use super::AppState;
use super::error::{ApiError, Dialect, Kind, in_dialect};
use super::extract::{PathParams, RawBody};
use crate::certs::{CertFileName, KeyRule};
use crate::ids::LbId;

pub fn router() -> Router<AppState> {
    Router::new()
        .route(appliance::STATUS, get(status).fallback(invalid))
        .route(appliance::SERVICE_STATUS, get(service_status).fallback(invalid))
        .route(appliance::INSTANCES, get(instances).fallback(invalid))
        .route(appliance::INSTANCE, get(instance).delete(delete_instance).fallback(invalid))
        .route(appliance::INSTANCE_CERTIFICATE, axum::routing::put(upload_certificate).fallback(invalid))
        .layer(axum::middleware::map_response(|response| in_dialect(Dialect::Appliance, response)))
}

fn text(status: StatusCode, body: impl Into<String>) -> Response {
    (status, [(header::CONTENT_TYPE, "text/plain; charset=utf-8")], body.into()).into_response()
}

/// "403 Invalid Request - API script does not recognize the specified URL
/// or HTTP method."
async fn invalid(request: Request) -> ApiError {
    ApiError::new(Kind::MethodNotAllowed, format!("Invalid Request: {} {}", request.method(), request.uri().path()))
}

/// An instance id; one that cannot exist is not found.
fn instance_id(raw: &str) -> Result<LbId, ApiError> {
    LbId::parse(raw).map_err(|e| ApiError::new(Kind::NotFound, "Not Found").with_details(e.to_string()))
}

fn not_found() -> ApiError {
    ApiError::new(Kind::NotFound, "Not Found")
}

async fn status(State(state): State<AppState>) -> Response {
    let details = state.info.details().await;
    let processes = state.lbs.processes();
    Json(ApplianceStatus {
        hostname: details.info.hostname,
        network_tx: details.network_tx,
        network_rx: details.network_rx,
        active_node: u8::from(details.active),
        haproxy_count: processes.iter().filter(|(_, pid, _)| pid.is_some()).count().to_string(),
        stunnel_count: "0".into(),
        fencing_daemon_status: if state.vrrp.running_pid().is_some() { "OK" } else { "N/A" }.into(),
        user_cpu: details.cpu.user,
        system_cpu: details.cpu.system,
        software_irq: details.cpu.soft_irq,
        load: details.load.iter().map(|l| format!("{l:.2}")).collect(),
    })
    .into_response()
}

async fn service_status(State(state): State<AppState>) -> Response {
    let mut out = String::new();
    for (id, pid, wanted) in state.lbs.processes() {
        let (overall, line) = match (pid, wanted) {
            (Some(pid), _) => ("OK", format!("running (pid {pid})")),
            (None, true) => ("ERROR", "not running".to_owned()),
            (None, false) => ("STOPPED", "stopped".to_owned()),
        };
        out.push_str(&format!("{:<52}{overall}\n  {:<17}{line}\n", id.as_str(), "haproxy"));
    }
    text(StatusCode::OK, out)
}

async fn instances(State(state): State<AppState>) -> Response {
    let list: String = state.lbs.layout().load_balancers().iter().map(|id| format!("{id}\n")).collect();
    text(StatusCode::OK, list)
}

async fn instance(
    State(state): State<AppState>,
    PathParams(instance): PathParams<String>,
) -> Result<Response, ApiError> {
    let id = instance_id(&instance)?;
    if state.lbs.has_files(&id) { Ok(text(StatusCode::OK, "OK\n")) } else { Err(not_found()) }
}

async fn delete_instance(
    State(state): State<AppState>,
    PathParams(instance): PathParams<String>,
) -> Result<Response, ApiError> {
    let id = instance_id(&instance)?;
    if !state.lbs.has_files(&id) {
        return Err(not_found());
    }
    let was_running = state.lbs.processes().iter().any(|(lb, pid, _)| *lb == id && pid.is_some());
    state.lbs.delete(&id).await?;
    if was_running {
        Ok(text(StatusCode::OK, format!("OK\nhaproxy daemon {id} killed.\n")))
    } else {
        Ok(text(StatusCode::OK, "OK\n"))
    }
}

async fn upload_certificate(
    State(state): State<AppState>,
    PathParams((instance, filename)): PathParams<(String, String)>,
    RawBody(body): RawBody,
) -> Result<Response, ApiError> {
    let id = instance_id(&instance)?;
    let name = CertFileName::parse(&filename)?;
    // The appliance takes a key, certificate and chain in one file, and
    // restarts the instance's haproxy to serve it.
    state.lbs.put_certificate(&id, &name, &body, KeyRule::Required).await?;
    if state.lbs.reload_if_running(&id).await? {
        Ok(text(StatusCode::CREATED, format!("OK\nhaproxy daemon {id} reloaded.\n")))
    } else {
        Ok(text(StatusCode::CREATED, "OK\n"))
    }
}
