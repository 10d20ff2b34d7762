//! Load generation: concurrent clients, each on its own kept-alive
//! connection (a new one whenever the server closes it), mTLS for the agent
//! and plain HTTP for the controller, recording the latency of every request.

use std::sync::Arc;
use std::time::{Duration, Instant};

use amphora_testkit::AgentClient;

use crate::target::request;

#[derive(Debug, Clone, Copy)]
pub struct Throughput {
    pub requests_per_second: f64,
    pub p50: Duration,
    pub p99: Duration,
    pub max: Duration,
    pub requests: u64,
    pub errors: u64,
}

/// Runs `clients` loops of `GET path` for `duration`.
pub async fn run(make_client: impl Fn() -> AgentClient, path: &str, clients: usize, duration: Duration) -> Throughput {
    run_with((0..clients).map(|_| Arc::new(make_client())).collect(), path, duration).await
}

/// Runs one loop of `GET path` for `duration` on each of `clients` (which
/// may already hold open connections).
pub async fn run_with(clients: Vec<Arc<AgentClient>>, path: &str, duration: Duration) -> Throughput {
    let started = Instant::now();
    let mut tasks = Vec::new();
    for client in clients {
        let path = path.to_owned();
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            let mut errors = 0u64;
            while started.elapsed() < duration {
                let t = Instant::now();
                match request(&client, "GET", &path, bytes::Bytes::new()).await {
                    Ok(reply) if reply.status == 200 => latencies.push(t.elapsed()),
                    _ => errors += 1,
                }
            }
            (latencies, errors)
        }));
    }
    gather(tasks, started).await
}

/// The clients' latencies and error counts as one figure, over the time
/// since `started`.
async fn gather(tasks: Vec<tokio::task::JoinHandle<(Vec<Duration>, u64)>>, started: Instant) -> Throughput {
    let mut latencies = Vec::new();
    let mut errors = 0;
    for task in tasks {
        let (l, e) = task.await.expect("load task");
        latencies.extend(l);
        errors += e;
    }
    let elapsed = started.elapsed().as_secs_f64();
    latencies.sort();
    Throughput {
        requests_per_second: latencies.len() as f64 / elapsed,
        p50: percentile(&latencies, 0.50),
        p99: percentile(&latencies, 0.99),
        max: latencies.last().copied().unwrap_or_default(),
        requests: latencies.len() as u64,
        errors,
    }
}

pub fn percentile(sorted: &[Duration], q: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let index = ((sorted.len() as f64 - 1.0) * q).round() as usize;
    sorted[index.min(sorted.len() - 1)]
}

pub fn median(values: &mut [f64]) -> f64 {
    if values.is_empty() {
        return f64::NAN;
    }
    values.sort_by(f64::total_cmp);
    let mid = values.len() / 2;
    if values.len().is_multiple_of(2) { (values[mid - 1] + values[mid]) / 2.0 } else { values[mid] }
}

/// A plain-HTTP/1.1 client on one kept-alive connection, reconnecting when
/// the server closes it (upstream's gunicorn sync workers close every one).
#[derive(Debug)]
pub struct HttpClient {
    addr: std::net::SocketAddr,
    sender: Option<hyper::client::conn::http1::SendRequest<http_body_util::Full<bytes::Bytes>>>,
}

#[derive(Debug)]
pub struct HttpReply {
    pub status: u16,
    pub body: bytes::Bytes,
}

impl HttpClient {
    pub fn new(addr: std::net::SocketAddr) -> Self {
        Self { addr, sender: None }
    }

    async fn connect(
        &self,
    ) -> anyhow::Result<hyper::client::conn::http1::SendRequest<http_body_util::Full<bytes::Bytes>>> {
        let stream = tokio::net::TcpStream::connect(self.addr).await?;
        stream.set_nodelay(true)?;
        let (sender, conn) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream)).await?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        Ok(sender)
    }

    async fn once(&mut self, method: &str, path: &str, body: Option<&str>) -> anyhow::Result<HttpReply> {
        use http_body_util::BodyExt;
        let mut sender = match self.sender.take() {
            Some(s) if !s.is_closed() => s,
            _ => self.connect().await?,
        };
        sender.ready().await?;
        let mut req = hyper::Request::builder()
            .method(method)
            .uri(path)
            .header("host", self.addr.to_string())
            .header("accept", "application/json");
        if body.is_some() {
            req = req.header("content-type", "application/json");
        }
        let req = req.body(http_body_util::Full::new(bytes::Bytes::from(body.unwrap_or("").to_owned())))?;
        let resp = sender.send_request(req).await?;
        let status = resp.status().as_u16();
        let close = resp.headers().get("connection").is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"close"));
        let body = resp.into_body().collect().await?.to_bytes();
        if !close {
            self.sender = Some(sender);
        }
        Ok(HttpReply { status, body })
    }

    /// Sends a request, retrying once on a fresh connection when a reused
    /// one failed.
    pub async fn request(&mut self, method: &str, path: &str, body: Option<&str>) -> anyhow::Result<HttpReply> {
        let reused = self.sender.is_some();
        match self.once(method, path, body).await {
            Ok(reply) => Ok(reply),
            Err(_) if reused => self.once(method, path, body).await,
            Err(e) => Err(e),
        }
    }
}

/// Runs `clients` loops of `GET` over `paths` (each client starting at its
/// own offset) on plain HTTP for `duration`, and until each client has made
/// `min_requests`; every body is read whole. Client `c` talks to
/// `addrs[c % addrs.len()]`, so the clients spread evenly over several
/// servers of one API.
pub async fn run_http(
    addrs: &[std::net::SocketAddr],
    paths: Arc<Vec<String>>,
    clients: usize,
    duration: Duration,
    min_requests: usize,
) -> Throughput {
    let started = Instant::now();
    let mut tasks = Vec::new();
    for c in 0..clients {
        let paths = paths.clone();
        let addr = addrs[c % addrs.len()];
        tasks.push(tokio::spawn(async move {
            let mut client = HttpClient::new(addr);
            let mut latencies = Vec::new();
            let mut errors = 0u64;
            let mut i = c * paths.len() / clients.max(1);
            while started.elapsed() < duration || latencies.len() < min_requests {
                let path = &paths[i % paths.len()];
                i += 1;
                let t = Instant::now();
                match client.request("GET", path, None).await {
                    Ok(reply) if reply.status == 200 => latencies.push(t.elapsed()),
                    _ => {
                        errors += 1;
                        if errors > 1000 && latencies.is_empty() {
                            break;
                        }
                    }
                }
                if started.elapsed() > duration * 20 {
                    break;
                }
            }
            (latencies, errors)
        }));
    }
    gather(tasks, started).await
}
