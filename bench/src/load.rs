//! Load generation: concurrent clients, each on its own kept-alive mTLS
//! connection (a new one whenever the server closes it), recording the
//! latency of every request.

use std::sync::Arc;
use std::time::{Duration, Instant};

use amphora_testkit::AgentClient;

use crate::target::request;

#[derive(Debug, Clone, Copy)]
pub struct Throughput {
    pub requests_per_second: f64,
    pub p50: Duration,
    pub p99: Duration,
    pub errors: u64,
}

/// Runs `clients` loops of `GET path` for `duration`.
pub async fn run(make_client: impl Fn() -> AgentClient, path: &str, clients: usize, duration: Duration) -> Throughput {
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..clients {
        let client = Arc::new(make_client());
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
