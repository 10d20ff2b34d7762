//! A client that gives up on its request, as a controller whose read
//! timeout expires does: it sends a request (or part of its body) over
//! mutual TLS, then closes the connection before the answer and waits for
//! the server to hang up too.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;

use crate::agent::Agent;
use crate::client::{TlsVersions, connect_tls_in};

/// How long the server may take to notice the client left.
const HANG_UP_TIMEOUT: Duration = Duration::from_secs(20);

/// A request on its own connection, not yet abandoned.
#[derive(Debug)]
pub struct RawRequest {
    stream: TlsStream<TcpStream>,
}

/// What the server sent before it hung up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ending {
    /// It closed the connection without a word: the request's handler was
    /// dropped (or never called).
    HungUp,
    /// It answered first; the bytes of its answer.
    Answered(Vec<u8>),
}

impl Ending {
    /// The status line's code, when the server answered.
    pub fn status(&self) -> Option<u16> {
        match self {
            Ending::HungUp => None,
            Ending::Answered(bytes) => std::str::from_utf8(bytes).ok()?.split_whitespace().nth(1)?.parse().ok(),
        }
    }
}

impl RawRequest {
    /// Connects to `agent` with the controller's certificate and sends the
    /// head of a request announcing `body.len()` bytes, then the first
    /// `sent` bytes of the body (all of it when `None`).
    pub async fn send(
        agent: &Agent,
        method: &str,
        path: &str,
        body: &[u8],
        sent: Option<usize>,
    ) -> std::io::Result<Self> {
        let config = agent.tls_config(Some(&agent.pki.client), TlsVersions::Any);
        let mut stream = connect_tls_in(agent.vm.as_deref(), agent.addr, config, &agent.amphora_id).await?;
        let head = format!(
            "{method} {path} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: amphora-testkit-abandon\r\n\
             Content-Length: {length}\r\n\r\n",
            host = agent.amphora_id,
            length = body.len(),
        );
        stream.write_all(head.as_bytes()).await?;
        let sent = sent.unwrap_or(body.len()).min(body.len());
        // In a few writes, as a slow client would send it.
        for chunk in body[..sent].chunks(64 * 1024) {
            stream.write_all(chunk).await?;
            stream.flush().await?;
        }
        stream.flush().await?;
        Ok(Self { stream })
    }

    /// Closes the client's side of the connection (TLS close_notify, then
    /// FIN) and reads until the server hangs up. Panics if it does not
    /// within 20 seconds.
    pub async fn abandon(mut self) -> Ending {
        // Already closed by the server is fine: it hung up first.
        let _ = self.stream.shutdown().await;
        let mut received = Vec::new();
        let read = tokio::time::timeout(HANG_UP_TIMEOUT, async {
            let mut buffer = [0u8; 4096];
            loop {
                match self.stream.read(&mut buffer).await {
                    Ok(0) | Err(_) => return,
                    Ok(n) => received.extend_from_slice(&buffer[..n]),
                }
            }
        })
        .await;
        assert!(read.is_ok(), "the server kept the abandoned connection open for {HANG_UP_TIMEOUT:?}");
        if received.is_empty() { Ending::HungUp } else { Ending::Answered(received) }
    }
}
