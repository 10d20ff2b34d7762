//! The kept-alive HTTP/1.1 connections to one amphora: idle connections
//! wait in a small stack and are reused while the agent keeps them open;
//! concurrent requests open further ones.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use rustls::ClientConfig;
use rustls::pki_types::ServerName;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

use crate::error::ClientError;
use crate::tls::refusal;

/// Idle connections kept per amphora.
const MAX_IDLE: usize = 4;

pub(crate) type Sender = SendRequest<Full<Bytes>>;

#[derive(Debug)]
pub(crate) struct Connections {
    amphora_id: String,
    addr: SocketAddr,
    tls: Arc<ClientConfig>,
    idle: Mutex<Vec<Sender>>,
    opened: AtomicUsize,
}

impl Connections {
    pub(crate) fn new(amphora_id: &str, addr: SocketAddr, config: Arc<ClientConfig>) -> Self {
        Self {
            amphora_id: amphora_id.to_owned(),
            addr,
            tls: config,
            idle: Mutex::new(Vec::new()),
            opened: AtomicUsize::new(0),
        }
    }

    pub(crate) fn opened(&self) -> usize {
        self.opened.load(Ordering::Relaxed)
    }

    /// An idle connection the agent has not closed, if any.
    pub(crate) fn take_idle(&self) -> Option<Sender> {
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        while let Some(sender) = idle.pop() {
            if sender.is_ready() {
                return Some(sender);
            }
        }
        None
    }

    /// Returns a connection after a complete exchange.
    pub(crate) fn put_back(&self, sender: Sender) {
        if sender.is_closed() {
            return;
        }
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        if idle.len() < MAX_IDLE {
            idle.push(sender);
        }
    }

    /// Opens a connection: TCP, then the TLS handshake, within `timeout`.
    pub(crate) async fn open(&self, timeout: Duration) -> Result<Sender, ClientError> {
        let timed_out = || ClientError::ConnectTimeout { amphora: self.amphora_id.clone(), addr: self.addr, timeout };
        let tcp = tokio::time::timeout(timeout, TcpStream::connect(self.addr))
            .await
            .map_err(|_| timed_out())?
            .map_err(|source| ClientError::Connect { amphora: self.amphora_id.clone(), addr: self.addr, source })?;
        let _ = tcp.set_nodelay(true);
        // The verifier checks the amphora id; an address sends no SNI.
        let dialled = ServerName::IpAddress(self.addr.ip().into());
        let tls = tokio::time::timeout(timeout, TlsConnector::from(self.tls.clone()).connect(dialled, tcp))
            .await
            .map_err(|_| timed_out())?
            .map_err(|source| match refusal(&source) {
                Some(tls) => ClientError::Tls { amphora: self.amphora_id.clone(), addr: self.addr, source: tls },
                None => ClientError::Handshake { amphora: self.amphora_id.clone(), addr: self.addr, source },
            })?;
        let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
            .await
            .map_err(|source| ClientError::Http { amphora: self.amphora_id.clone(), source })?;
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::debug!(error = %e, "amphora connection ended with an error");
            }
        });
        self.opened.fetch_add(1, Ordering::Relaxed);
        Ok(sender)
    }
}
