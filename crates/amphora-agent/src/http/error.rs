//! The one place where failures become HTTP responses.
//!
//! Every failure is classified once, into a [`Kind`], when it becomes an
//! [`ApiError`] (the `From` conversions below, one per domain error). Each
//! API dialect then renders it with one function: [`render_1_0`] (JSON
//! `{"message", "details"}`, the 1.0 specification and upstream's agent),
//! [`render_0_1`] (the same shape, a missing load balancer worded as the
//! listener 0.1 calls it) and [`render_appliance`] (plain text, the
//! appliance's own status codes).
//!
//! A body says what the specification defines: the spec's message, and in
//! `details` what the request sent or a process's own output (haproxy's
//! configuration check, keepalived's). An internal failure's body is a
//! short, fixed description; its cause, with file paths and OS errors, goes
//! to the log and never to the client.
//!
//! Handlers return `Result<_, ApiError>`. [`ApiError`]'s `IntoResponse`
//! renders the 1.0 form, which every surface outside the 0.1 and appliance
//! routers uses (version discovery, `/info`, unknown paths, refusals before
//! routing), and keeps the error in the response's extensions; the 0.1 and
//! appliance routers re-render it in their form with [`in_dialect`].

use std::fmt;

use amphora_proto::Message;
use axum::Json;
use axum::extract::rejection::{BytesRejection, PathRejection};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};

use crate::certs::{BadFileName, PemError};
use crate::config::ConfigError;
use crate::haproxy::HaproxyError;
use crate::ids::{InvalidId, LbId};
use crate::lb::{Action, LbError};
use crate::net::NetError;
use crate::settings::UpdateError;
use crate::tls::{RotateError, TlsError};
use crate::vrrp::VrrpError;

/// What kind of failure, whatever the API that reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// What the request names does not exist.
    NotFound,
    /// The request is malformed, or names something that cannot exist.
    Invalid,
    /// The request contradicts the current state (an interface already
    /// plugged).
    Conflict,
    /// The agent takes no such request now (a topology transition, the
    /// agent shutting down).
    Unavailable,
    /// The agent failed to do what was asked.
    Internal,
    /// HTTP refusals, before any handler: a method the path does not have,
    /// a body over the size limit, a body that did not arrive in time.
    MethodNotAllowed,
    TooLarge,
    TimedOut,
}

/// A failure as the API reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    kind: Kind,
    /// The specification's message ("Listener Not Found", "Error starting
    /// haproxy").
    message: String,
    /// What the body may carry beyond the message: never a file path or an
    /// OS error.
    details: Option<String>,
    /// The load balancer that does not exist, for dialects that word it
    /// their own way.
    missing_lb: Option<LbId>,
}

impl ApiError {
    pub fn new(kind: Kind, message: impl Into<String>) -> Self {
        Self { kind, message: message.into(), details: None, missing_lb: None }
    }

    pub fn with_details(mut self, details: impl Into<String>) -> Self {
        self.details = Some(details.into());
        self
    }

    pub fn kind(&self) -> Kind {
        self.kind
    }

    /// An internal failure: the body says `message` and the short
    /// `details`; the log has `cause` whole.
    pub fn internal(message: impl Into<String>, details: impl Into<String>, cause: &dyn std::error::Error) -> Self {
        let error = Self::new(Kind::Internal, message).with_details(details);
        tracing::error!(error = %Chain(cause), answer = error.message, "request failed");
        error
    }

    /// A load balancer that does not exist (1.0 wording; 0.1 calls it a
    /// listener).
    pub fn lb_not_found(id: &LbId) -> Self {
        let mut error = Self::new(Kind::NotFound, "Loadbalancer Not Found")
            .with_details(format!("No loadbalancer with UUID: {id}"));
        error.missing_lb = Some(id.clone());
        error
    }

    /// The route's own message for an internal failure, as its
    /// specification words it ("Error plugging VIP"); other kinds keep
    /// theirs.
    pub fn when_internal(mut self, message: impl Into<String>) -> Self {
        if self.kind == Kind::Internal {
            self.message = message.into();
        }
        self
    }

    /// The 1.0 start/stop/reload route calls a missing load balancer a
    /// listener, and still says "loadbalancer" in the details.
    pub fn on_action_route(mut self) -> Self {
        if self.missing_lb.is_some() {
            self.message = "Listener Not Found".into();
        }
        self
    }

    fn body(&self) -> Message {
        Message { message: self.message.clone(), details: self.details.clone() }
    }
}

/// The status a JSON dialect (1.0, 0.1) gives each kind.
fn json_status(kind: Kind) -> StatusCode {
    match kind {
        Kind::NotFound => StatusCode::NOT_FOUND,
        Kind::Invalid => StatusCode::BAD_REQUEST,
        Kind::Conflict => StatusCode::CONFLICT,
        Kind::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        Kind::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        Kind::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
        Kind::TooLarge => StatusCode::PAYLOAD_TOO_LARGE,
        Kind::TimedOut => StatusCode::REQUEST_TIMEOUT,
    }
}

/// The 1.0 API (and every surface outside the 0.1 and appliance routers):
/// `{"message": ..., "details": ...}`.
pub fn render_1_0(error: &ApiError) -> Response {
    (json_status(error.kind), Json(error.body())).into_response()
}

/// The 0.1 API: the 1.0 shape; a missing load balancer is the listener 0.1
/// names in its paths.
pub fn render_0_1(error: &ApiError) -> Response {
    match &error.missing_lb {
        Some(id) => (
            json_status(error.kind),
            Json(Message::with_details("Listener Not Found", format!("No listener with UUID: {id}"))),
        )
            .into_response(),
        None => render_1_0(error),
    }
}

/// The appliance API: the message as a line of plain text; 403 for a
/// method it does not know and 409 for a bad upload ("a problem with a PUT
/// data file").
pub fn render_appliance(error: &ApiError) -> Response {
    let status = match error.kind {
        Kind::Invalid | Kind::Conflict => StatusCode::CONFLICT,
        Kind::MethodNotAllowed => StatusCode::FORBIDDEN,
        other => json_status(other),
    };
    (status, [(header::CONTENT_TYPE, "text/plain; charset=utf-8")], format!("{}\n", error.message)).into_response()
}

/// An API whose routes render their errors their own way.
#[derive(Debug, Clone, Copy)]
pub enum Dialect {
    V0_1,
    Appliance,
}

/// Re-renders an error answer of a route of `dialect` (a router layer:
/// `map_response(|r| in_dialect(Dialect::V0_1, r))`).
pub async fn in_dialect(dialect: Dialect, mut response: Response) -> Response {
    match response.extensions_mut().remove::<ApiError>() {
        Some(error) => match dialect {
            Dialect::V0_1 => render_0_1(&error),
            Dialect::Appliance => render_appliance(&error),
        },
        None => response,
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut response = render_1_0(&self);
        response.extensions_mut().insert(self);
        response
    }
}

/// An error with its sources, for the log.
struct Chain<'a>(&'a dyn std::error::Error);

impl fmt::Display for Chain<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)?;
        let mut source = self.0.source();
        while let Some(cause) = source {
            write!(f, ": {cause}")?;
            source = cause.source();
        }
        Ok(())
    }
}

/// What the body of an internal failure says; the log has the rest.
const SEE_LOG: &str = "see the amphora agent's log";

impl From<LbError> for ApiError {
    fn from(error: LbError) -> Self {
        match error {
            LbError::NotFound(id) => Self::lb_not_found(&id),
            LbError::NotUtf8 => Self::new(Kind::Invalid, "Invalid request").with_details(error.to_string()),
            LbError::Invalid(output) => Self::new(Kind::Invalid, "Invalid request").with_details(output),
            LbError::UnknownAction(action) => {
                Self::new(Kind::Invalid, "Invalid Request").with_details(format!("Unknown action: {action}"))
            }
            LbError::Action { action, ref source } => {
                let message = match action {
                    Action::Start => "Error starting haproxy",
                    Action::Stop => "Error stopping haproxy",
                    Action::Reload => "Error reloading haproxy",
                };
                Self::internal(message, haproxy_details(source), &error)
            }
            LbError::CertificateNotFound(name) => Self::new(Kind::NotFound, "Certificate Not Found")
                .with_details(format!("No certificate with file name: {name}")),
            LbError::Pem(error) => error.into(),
            LbError::ListenerNotFound(id) => {
                Self::new(Kind::NotFound, "Listener Not Found").with_details(format!("No listener with UUID: {id}"))
            }
            LbError::Io { .. } => Self::internal("Internal Server Error", SEE_LOG, &error),
        }
    }
}

/// What a 500 of a haproxy action says: haproxy's own output, as the
/// specification has it, or a short description when haproxy could not
/// be run at all.
fn haproxy_details(error: &HaproxyError) -> String {
    match error {
        HaproxyError::Invalid(output)
        | HaproxyError::StartFailed(output)
        | HaproxyError::ReloadFailed(output)
        | HaproxyError::StopFailed(output) => output.clone(),
        HaproxyError::NoMaster { log, .. } => format!("haproxy exited successfully but no master runs: {log}"),
        HaproxyError::Timeout { timeout, .. } => format!("haproxy did not finish within {timeout:?}"),
        HaproxyError::Signal { pid, .. } => format!("haproxy {pid} could not be signalled; {SEE_LOG}"),
        HaproxyError::MasterCli { .. } => format!("the haproxy master did not answer; {SEE_LOG}"),
        HaproxyError::Spawn { .. } | HaproxyError::Io { .. } => format!("haproxy could not be run; {SEE_LOG}"),
    }
}

impl From<PemError> for ApiError {
    fn from(error: PemError) -> Self {
        let details = error.details();
        let refused = Self::new(Kind::Invalid, error.to_string());
        match details {
            Some(details) => refused.with_details(details),
            None => refused,
        }
    }
}

impl From<RotateError> for ApiError {
    fn from(error: RotateError) -> Self {
        match error {
            RotateError::Pem(pem) => pem.into(),
            RotateError::Tls(TlsError::Content { ref detail, .. }) => {
                Self::new(Kind::Invalid, "Invalid certificate").with_details(detail.clone())
            }
            RotateError::Tls(_) | RotateError::Write { .. } => {
                Self::internal("Internal Server Error", format!("the certificate was not installed; {SEE_LOG}"), &error)
            }
        }
    }
}

/// The specification defines one failure for a configuration update, a
/// 500 whose details are the exception's: what is wrong with the uploaded
/// text, without the file it would have replaced.
impl From<UpdateError> for ApiError {
    fn from(error: UpdateError) -> Self {
        const MESSAGE: &str = "Unable to update amphora-agent configuration.";
        let details = match &error {
            UpdateError::NotUtf8 => error.to_string(),
            UpdateError::Invalid(ConfigError::Syntax { line, column, message, .. }) => {
                format!("line {line}, column {column}: malformed configuration: {message}")
            }
            UpdateError::Invalid(ConfigError::Invalid { section, key, value, reason, .. }) => {
                format!("[{section}] {key} = {value:?}: {reason}")
            }
            UpdateError::Invalid(ConfigError::Missing { section, key, .. }) => {
                format!("missing required option [{section}] {key}")
            }
            UpdateError::Invalid(ConfigError::Read { .. }) | UpdateError::Write { .. } => {
                return Self::internal(
                    MESSAGE,
                    format!("the configuration files could not be read or written; {SEE_LOG}"),
                    &error,
                );
            }
        };
        tracing::warn!(%details, "configuration update refused");
        Self::new(Kind::Internal, MESSAGE).with_details(details)
    }
}

/// keepalived: the specification defines a 500 for every failure to
/// install its configuration (keepalived's own test rejecting it
/// included) or to act on it, with keepalived's output as details.
impl From<VrrpError> for ApiError {
    fn from(error: VrrpError) -> Self {
        const MESSAGE: &str = "Failed to upload keepalived configuration.";
        match error {
            VrrpError::UnknownAction(action) => {
                Self::new(Kind::Invalid, "Invalid Request").with_details(format!("Unknown action: {action}"))
            }
            VrrpError::NotUtf8 | VrrpError::Invalid(_) | VrrpError::Failed(_) => {
                let details = match &error {
                    VrrpError::Invalid(output) | VrrpError::Failed(output) => output.clone(),
                    _ => error.to_string(),
                };
                tracing::error!(error = %error, "keepalived refused");
                Self::new(Kind::Internal, MESSAGE).with_details(details)
            }
            VrrpError::Spawn { .. } | VrrpError::Signal { .. } | VrrpError::Io { .. } => {
                Self::internal(MESSAGE, format!("keepalived could not be run or configured; {SEE_LOG}"), &error)
            }
        }
    }
}

/// A network failure. The specification's 500 message depends on the
/// route ("Error plugging VIP"): the handler sets it with
/// [`ApiError::when_internal`].
impl From<NetError> for ApiError {
    fn from(error: NetError) -> Self {
        let message = error.to_string();
        match error {
            NetError::Plug(plug) => Self::new(Kind::Invalid, plug.to_string()).with_details(plug.details()),
            // Upstream's controller retries while the details say this.
            NetError::NoInterface(mac) => Self::new(Kind::NotFound, message)
                .with_details(format!("No suitable network interface found (no interface has MAC {mac})")),
            NetError::AlreadyPlugged(name) => {
                Self::new(Kind::Conflict, message).with_details(format!("the interface is already plugged as {name}"))
            }
            NetError::InvalidIp(raw) => {
                Self::new(Kind::Invalid, message).with_details(format!("{raw:?} is not an IP address"))
            }
            NetError::InterfaceNotFound(ip) => {
                Self::new(Kind::NotFound, message).with_details(format!("no interface holds {ip}"))
            }
            NetError::Rules(details) => Self::new(Kind::Invalid, message).with_details(details),
            NetError::NothingToPlug => Self::new(Kind::NotFound, message)
                .with_details("No suitable network interface found (no unplugged port)"),
            NetError::Ambiguous(names) => Self::new(Kind::Invalid, message)
                .with_details(format!("unplugged ports: {}; use the 1.0 API, which names the MAC", names.join(", "))),
            NetError::NoNamespace => {
                Self::internal("Internal Server Error", "the agent runs without an amphora network namespace", &error)
            }
            NetError::Netlink(_) | NetError::Firewall(_) | NetError::Persist { .. } => Self::internal(
                "Internal Server Error",
                format!("the network could not be configured; {SEE_LOG}"),
                &error,
            ),
        }
    }
}

impl From<BadFileName> for ApiError {
    fn from(error: BadFileName) -> Self {
        Self::new(Kind::Invalid, "Filename has wrong format").with_details(error.to_string())
    }
}

impl From<InvalidId> for ApiError {
    fn from(error: InvalidId) -> Self {
        Self::new(Kind::Invalid, "Invalid request").with_details(error.to_string())
    }
}

impl From<PathRejection> for ApiError {
    fn from(rejection: PathRejection) -> Self {
        Self::new(Kind::Invalid, "Invalid request").with_details(rejection.body_text())
    }
}

impl From<BytesRejection> for ApiError {
    fn from(rejection: BytesRejection) -> Self {
        if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
            Self::new(Kind::TooLarge, "Request body too large").with_details(rejection.body_text())
        } else {
            Self::new(Kind::Invalid, "Invalid request").with_details(rejection.body_text())
        }
    }
}

/// A task that did not complete (it panicked, or the runtime is shutting
/// down).
impl From<tokio::task::JoinError> for ApiError {
    fn from(error: tokio::task::JoinError) -> Self {
        Self::internal("Internal Server Error", SEE_LOG, &error)
    }
}

/// The topology record could not be stored.
impl From<std::io::Error> for ApiError {
    fn from(error: std::io::Error) -> Self {
        Self::internal("Internal Server Error", SEE_LOG, &error)
    }
}
