//! The one place where failures become HTTP responses. Every error answer
//! is JSON, `{"message": ..., "details": ...}`, with the status and wording
//! of the specification (or upstream's agent where the controller relies
//! on it).

use amphora_proto::Message;
use axum::Json;
use axum::extract::rejection::{BytesRejection, PathRejection};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

use crate::certs::{BadFileName, PemError};
use crate::ids::InvalidId;
use crate::lb::{Action, LbError};
use crate::net::NetError;
use crate::settings::UpdateError;
use crate::tls::RotateError;

#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    body: Message,
}

impl ApiError {
    pub fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Self { status, body: Message::new(message) }
    }

    pub fn status(&self) -> StatusCode {
        self.status
    }

    pub fn with_details(status: StatusCode, message: impl Into<String>, details: impl Into<String>) -> Self {
        Self { status, body: Message::with_details(message, details) }
    }

    /// The start/stop/reload route words a missing load balancer as the
    /// specification does for it.
    pub fn from_action_error(error: LbError) -> Self {
        match error {
            LbError::NotFound(id) => Self::with_details(
                StatusCode::NOT_FOUND,
                "Listener Not Found",
                format!("No loadbalancer with UUID: {id}"),
            ),
            other => other.into(),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.status, Json(self.body)).into_response()
    }
}

impl From<LbError> for ApiError {
    fn from(error: LbError) -> Self {
        match error {
            LbError::NotFound(id) => Self::with_details(
                StatusCode::NOT_FOUND,
                "Loadbalancer Not Found",
                format!("No loadbalancer with UUID: {id}"),
            ),
            LbError::NotUtf8 => Self::with_details(StatusCode::BAD_REQUEST, "Invalid request", error.to_string()),
            LbError::Invalid(output) => Self::with_details(StatusCode::BAD_REQUEST, "Invalid request", output),
            LbError::UnknownAction(action) => {
                Self::with_details(StatusCode::BAD_REQUEST, "Invalid Request", format!("Unknown action: {action}"))
            }
            LbError::Action { action, detail } => {
                let verb = match action {
                    Action::Start => "starting",
                    Action::Stop => "stopping",
                    Action::Reload => "reloading",
                };
                tracing::error!(%action, %detail, "haproxy action failed");
                Self::with_details(StatusCode::INTERNAL_SERVER_ERROR, format!("Error {verb} haproxy"), detail)
            }
            LbError::CertificateNotFound(name) => Self::with_details(
                StatusCode::NOT_FOUND,
                "Certificate Not Found",
                format!("No certificate with file name: {name}"),
            ),
            LbError::Pem(error) => error.into(),
            LbError::ListenerNotFound(id) => {
                Self::with_details(StatusCode::NOT_FOUND, "Listener Not Found", format!("No listener with UUID: {id}"))
            }
            LbError::Io { .. } => {
                tracing::error!(error = %error, "internal error");
                Self::with_details(StatusCode::INTERNAL_SERVER_ERROR, "Internal Server Error", error.to_string())
            }
        }
    }
}

impl From<PemError> for ApiError {
    fn from(error: PemError) -> Self {
        Self { status: StatusCode::BAD_REQUEST, body: Message { message: error.to_string(), details: error.details() } }
    }
}

impl From<RotateError> for ApiError {
    fn from(error: RotateError) -> Self {
        match error {
            RotateError::Pem(pem) => pem.into(),
            RotateError::Tls(tls) => {
                Self::with_details(StatusCode::BAD_REQUEST, "Invalid certificate", tls.to_string())
            }
            RotateError::Write { .. } => {
                tracing::error!(error = %error, "certificate rotation failed");
                Self::with_details(StatusCode::INTERNAL_SERVER_ERROR, "Internal Server Error", error.to_string())
            }
        }
    }
}

impl From<UpdateError> for ApiError {
    fn from(error: UpdateError) -> Self {
        tracing::error!(error = %error, "configuration update refused");
        Self::with_details(
            StatusCode::INTERNAL_SERVER_ERROR,
            "Unable to update amphora-agent configuration.",
            error.to_string(),
        )
    }
}

impl ApiError {
    /// A network failure; `failure` is the message of a 500 for this call
    /// (the specification's "Error plugging VIP" and the like).
    pub fn from_net(error: NetError, failure: &str) -> Self {
        match &error {
            NetError::Plug(plug) => {
                Self::with_details(StatusCode::BAD_REQUEST, plug.to_string(), plug.details().to_owned())
            }
            // Upstream's controller retries while the details say this.
            NetError::NoInterface(mac) => Self::with_details(
                StatusCode::NOT_FOUND,
                error.to_string(),
                format!("No suitable network interface found (no interface has MAC {mac})"),
            ),
            NetError::AlreadyPlugged(name) => Self::with_details(
                StatusCode::CONFLICT,
                error.to_string(),
                format!("the interface is already plugged as {name}"),
            ),
            NetError::InvalidIp(raw) => {
                Self::with_details(StatusCode::BAD_REQUEST, error.to_string(), format!("{raw:?} is not an IP address"))
            }
            NetError::InterfaceNotFound(ip) => {
                Self::with_details(StatusCode::NOT_FOUND, error.to_string(), format!("no interface holds {ip}"))
            }
            NetError::Rules(details) => Self::with_details(StatusCode::BAD_REQUEST, error.to_string(), details.clone()),
            NetError::NothingToPlug => Self::with_details(
                StatusCode::NOT_FOUND,
                error.to_string(),
                "No suitable network interface found (no unplugged port)",
            ),
            NetError::Ambiguous(names) => Self::with_details(
                StatusCode::BAD_REQUEST,
                error.to_string(),
                format!("unplugged ports: {}; use the 1.0 API, which names the MAC", names.join(", ")),
            ),
            NetError::NoNamespace | NetError::Netlink(_) | NetError::Firewall(_) | NetError::Persist { .. } => {
                tracing::error!(error = %error, "{failure}");
                Self::with_details(StatusCode::INTERNAL_SERVER_ERROR, failure, error.to_string())
            }
        }
    }
}

impl From<BadFileName> for ApiError {
    fn from(error: BadFileName) -> Self {
        Self::with_details(StatusCode::BAD_REQUEST, "Filename has wrong format", error.to_string())
    }
}

impl From<InvalidId> for ApiError {
    fn from(error: InvalidId) -> Self {
        Self::with_details(StatusCode::BAD_REQUEST, "Invalid request", error.to_string())
    }
}

impl From<PathRejection> for ApiError {
    fn from(rejection: PathRejection) -> Self {
        Self::with_details(StatusCode::BAD_REQUEST, "Invalid request", rejection.body_text())
    }
}

impl From<BytesRejection> for ApiError {
    fn from(rejection: BytesRejection) -> Self {
        if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
            Self::with_details(StatusCode::PAYLOAD_TOO_LARGE, "Request body too large", rejection.body_text())
        } else {
            Self::with_details(rejection.status(), "Invalid request", rejection.body_text())
        }
    }
}
