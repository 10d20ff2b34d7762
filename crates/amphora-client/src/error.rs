//! What can go wrong talking to an amphora, as values: refusals by the
//! agent keep their status and body; transport failures say whether
//! upstream's driver would have retried them.

use std::net::SocketAddr;
use std::time::Duration;

use amphora_proto::Message;
use bytes::Bytes;

/// The class of an error answer, as upstream's driver classifies status
/// codes (`amphorae/drivers/haproxy/exceptions.py`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ApiErrorKind {
    /// 400 or 405.
    InvalidRequest,
    /// 401.
    Unauthorized,
    /// 403.
    Forbidden,
    /// 404.
    NotFound,
    /// 409: the port or VIP is already plugged.
    Conflict,
    /// 413.
    TooLarge,
    /// 500.
    InternalServerError,
    /// 503: a topology transition is under way.
    ServiceUnavailable,
    /// Any other status that is not a success.
    Other,
}

impl ApiErrorKind {
    pub fn of(status: u16) -> Self {
        match status {
            400 | 405 => Self::InvalidRequest,
            401 => Self::Unauthorized,
            403 => Self::Forbidden,
            404 => Self::NotFound,
            409 => Self::Conflict,
            413 => Self::TooLarge,
            500 => Self::InternalServerError,
            503 => Self::ServiceUnavailable,
            _ => Self::Other,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The amphora id cannot be checked against a certificate.
    #[error("amphora id {0:?} is not a name a certificate can carry")]
    AmphoraId(String),
    /// The CA or the client certificate and key are unusable.
    #[error("invalid TLS credentials: {0}")]
    Credentials(String),
    /// TCP connection failed (refused, unreachable...): retried.
    #[error("cannot connect to amphora {amphora} at {addr}: {source}")]
    Connect {
        amphora: String,
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    /// TCP connection and TLS handshake took longer than the connect
    /// timeout: retried.
    #[error("connecting to amphora {amphora} at {addr} timed out after {timeout:?}")]
    ConnectTimeout { amphora: String, addr: SocketAddr, timeout: Duration },
    /// The handshake failed on the way (reset, closed): retried.
    #[error("TLS handshake with amphora {amphora} at {addr} failed: {source}")]
    Handshake {
        amphora: String,
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    /// A certificate was refused, ours or the amphora's (its name is not the
    /// amphora id, an unknown CA...): not retried, waiting does not fix it.
    #[error("TLS with amphora {amphora} at {addr} refused: {source}")]
    Tls {
        amphora: String,
        addr: SocketAddr,
        #[source]
        source: rustls::Error,
    },
    /// The exchange broke after the handshake: retried.
    #[error("HTTP exchange with amphora {amphora} failed: {source}")]
    Http {
        amphora: String,
        #[source]
        source: hyper::Error,
    },
    /// No complete answer within the read timeout: retried, as upstream
    /// retries `requests.Timeout`.
    #[error("amphora {amphora} did not answer within {timeout:?}")]
    ReadTimeout { amphora: String, timeout: Duration },
    /// A 404 that says the agent or its network is not up yet: a body that
    /// is not JSON, or "No suitable network interface found". Retried.
    #[error("amphora {amphora} is not ready yet (404: {body})")]
    NotReady { amphora: String, body: String },
    /// Every attempt failed with one of the retried errors above.
    #[error("amphora {amphora} unavailable after {attempts} attempts; last: {last}")]
    Unavailable { amphora: String, attempts: u32, last: Box<ClientError> },
    /// The agent answered with an error status.
    #[error("amphora {amphora} answered {status}: {}", describe(.message.as_ref(), .body))]
    Api { amphora: String, status: u16, kind: ApiErrorKind, message: Option<Message>, body: Bytes },
    /// A success whose body is not the expected type.
    #[error("amphora {amphora} answered {status} with an unexpected body ({source}): {}", String::from_utf8_lossy(.body))]
    Decode {
        amphora: String,
        status: u16,
        #[source]
        source: serde_json::Error,
        body: Bytes,
    },
    /// A request body that cannot be serialised, or a request that cannot
    /// be built (a path or header hyper refuses).
    #[error("cannot build the request: {0}")]
    Request(String),
}

fn describe(message: Option<&Message>, body: &Bytes) -> String {
    match message {
        Some(Message { message, details: Some(details) }) => format!("{message}: {details}"),
        Some(Message { message, details: None }) => message.clone(),
        None => String::from_utf8_lossy(body).into_owned(),
    }
}

impl ClientError {
    /// Whether upstream's driver retries this (a connection problem, a
    /// timeout, an agent that is not ready).
    pub fn is_retried(&self) -> bool {
        matches!(
            self,
            ClientError::Connect { .. }
                | ClientError::ConnectTimeout { .. }
                | ClientError::Handshake { .. }
                | ClientError::Http { .. }
                | ClientError::ReadTimeout { .. }
                | ClientError::NotReady { .. }
        )
    }

    /// The HTTP status of an error answer.
    pub fn status(&self) -> Option<u16> {
        match self {
            ClientError::Api { status, .. } | ClientError::Decode { status, .. } => Some(*status),
            _ => None,
        }
    }

    /// The class of an error answer.
    pub fn kind(&self) -> Option<ApiErrorKind> {
        match self {
            ClientError::Api { kind, .. } => Some(*kind),
            _ => None,
        }
    }

    /// The agent's `{"message", "details"}` of an error answer.
    pub fn message(&self) -> Option<&Message> {
        match self {
            ClientError::Api { message, .. } => message.as_ref(),
            _ => None,
        }
    }

    pub fn is_not_found(&self) -> bool {
        self.kind() == Some(ApiErrorKind::NotFound)
    }

    pub fn is_conflict(&self) -> bool {
        self.kind() == Some(ApiErrorKind::Conflict)
    }
}
