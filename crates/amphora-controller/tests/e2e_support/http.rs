//! A minimal JSON client of the controller's API over a real socket: one
//! connection per request, as the OpenStack clients' defaults do not
//! matter here. Shared by test binaries that use parts of it.

#![allow(dead_code)]

use std::net::SocketAddr;
use std::time::Duration;

use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

#[derive(Debug, Clone)]
pub struct Api {
    pub addr: SocketAddr,
}

impl Api {
    /// Sends a request; returns the status and the JSON body (`Null` when
    /// empty).
    pub async fn call(&self, method: &str, path: &str, body: Option<&Value>) -> (u16, Value) {
        let response = self.exchange(method, path, body).await.unwrap_or_else(|e| panic!("{method} {path}: {e}"));
        parse(method, path, &response)
    }

    /// [`Api::call`] to a controller that may be down or killed meanwhile:
    /// `None` when the connection fails or no whole answer comes (a
    /// controller killed after reading the request closes the connection
    /// with nothing or part of a response sent).
    pub async fn try_call(&self, method: &str, path: &str, body: Option<&Value>) -> Option<(u16, Value)> {
        let response = self.exchange(method, path, body).await.ok()?;
        let whole = String::from_utf8_lossy(&response).split_once("\r\n\r\n").is_some_and(|(head, body)| {
            let head = head.to_ascii_lowercase();
            let length = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .and_then(|n| n.trim().parse::<usize>().ok());
            match length {
                Some(n) => body.len() >= n,
                None if head.contains("transfer-encoding: chunked") => body.ends_with("0\r\n\r\n"),
                None => true,
            }
        });
        whole.then(|| parse(method, path, &response))
    }

    /// One request on a connection of its own: the raw response.
    async fn exchange(&self, method: &str, path: &str, body: Option<&Value>) -> Result<Vec<u8>, String> {
        let payload = body.map(|b| b.to_string()).unwrap_or_default();
        let mut request = format!(
            "{method} {path} HTTP/1.1\r\nHost: {}\r\nAccept: application/json\r\nConnection: close\r\n",
            self.addr
        );
        if body.is_some() {
            request.push_str(&format!("Content-Type: application/json\r\nContent-Length: {}\r\n", payload.len()));
        }
        request.push_str("\r\n");
        request.push_str(&payload);
        let exchange = async {
            let mut stream = TcpStream::connect(self.addr).await?;
            stream.write_all(request.as_bytes()).await?;
            let mut response = Vec::new();
            stream.read_to_end(&mut response).await?;
            Ok::<_, std::io::Error>(response)
        };
        match tokio::time::timeout(Duration::from_secs(30), exchange).await {
            Err(_) => Err("no answer within 30 s".to_owned()),
            Ok(result) => result.map_err(|e| e.to_string()),
        }
    }

    /// A request that must answer `expected`.
    pub async fn expect(&self, expected: u16, method: &str, path: &str, body: Option<&Value>) -> Value {
        let (status, json) = self.call(method, path, body).await;
        assert_eq!(status, expected, "{method} {path}: {json}");
        json
    }

    pub async fn get(&self, path: &str) -> Value {
        self.expect(200, "GET", path, None).await
    }
}

/// Status and JSON body (`Null` when empty) of a raw response.
fn parse(method: &str, path: &str, response: &[u8]) -> (u16, Value) {
    let text = String::from_utf8_lossy(response);
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or_else(|| panic!("{method} {path}: {text:?}"));
    let status = head.split_whitespace().nth(1).and_then(|s| s.parse().ok()).expect("status code");
    let chunked = head.to_ascii_lowercase().contains("transfer-encoding: chunked");
    let body = if chunked { dechunk(body) } else { body.to_owned() };
    let json = if body.trim().is_empty() {
        Value::Null
    } else {
        serde_json::from_str(&body).unwrap_or_else(|e| panic!("{method} {path}: {e}: {body:?}"))
    };
    (status, json)
}

fn dechunk(mut body: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = body.split_once("\r\n") {
        let Ok(n) = usize::from_str_radix(size.trim(), 16) else { break };
        if n == 0 || rest.len() < n {
            break;
        }
        out.push_str(&rest[..n]);
        body = rest[n..].trim_start_matches("\r\n");
    }
    out
}
