//! The health role (upstream's health manager):
//!
//! - a UDP receiver on `[health_manager] bind_ip`:`bind_port` verifies each
//!   heartbeat's HMAC with `heartbeat_key` before decompressing it (bounded)
//!   and hands it to a bounded queue; bad packets are counted and dropped;
//! - updaters (one on SQLite; `health_update_threads` on PostgreSQL, each
//!   amphora's heartbeats always to the same one) gather what their queue
//!   holds (up to [`BATCH`] messages, for up to a tenth of the interval) and
//!   apply it in one transaction: health rows, operating statuses that
//!   changed, listener statistics (`update.rs`, `status.rs`);
//! - a scanner, from `heartbeat_timeout` after start and then every
//!   `health_check_interval`, queues one failover job per stale amphora, or
//!   stops them all at `failover_threshold` (`stale.rs`).

pub mod stale;
pub mod status;
pub mod update;

use std::hash::{BuildHasher, RandomState};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use amphora_proto::heartbeat::{self, EnvelopeError, RECEIVER_BUFFER};
use tokio::net::UdpSocket;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;

use crate::config::Config;
use crate::db::{Backend, Db};
use update::{Outcome, Received};

/// Heartbeats waiting for the updater; past this they are dropped (and
/// counted) rather than queued without bound.
pub const QUEUE: usize = 8192;
/// Most heartbeats applied in one transaction.
pub const BATCH: usize = 512;
/// Bound on a decompressed heartbeat (a real one is a few kilobytes).
pub const MAX_DECOMPRESSED: usize = 2 * 1024 * 1024;
/// The amphora driver that runs no amphora: nothing heartbeats.
pub const NOOP_AMPHORA_DRIVER: &str = "amphora_noop_driver";
/// Longest the updater gathers heartbeats into one batch.
const LINGER: Duration = Duration::from_millis(100);
/// At most one log line per kind of dropped packet in this period.
const LOG_EVERY: Duration = Duration::from_secs(10);

/// A monotonically increasing count.
#[derive(Debug, Default)]
pub struct Counter(AtomicU64);

impl Counter {
    pub fn inc(&self) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }

    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// What the role has seen and done since it started.
#[derive(Debug, Default)]
pub struct Counters {
    /// Datagrams received.
    pub received: Counter,
    /// Dropped: too short, or the HMAC does not match (or no key is set).
    pub bad_signature: Counter,
    /// Dropped: signed, but not a heartbeat (compression, size, JSON).
    pub malformed: Counter,
    /// Dropped: the updater's queue was full.
    pub queue_full: Counter,
    /// Heartbeats that refreshed their amphora's health.
    pub applied: Counter,
    /// Heartbeats of amphorae the database does not know (or DELETED).
    pub unknown_amphora: Counter,
    /// Heartbeats whose listener count did not match (health not refreshed).
    pub listener_count_mismatch: Counter,
    /// Heartbeats older than `heartbeat_interval` when processed.
    pub too_slow: Counter,
    /// Heartbeats whose transaction failed.
    pub failed: Counter,
    /// Batch transactions committed.
    pub batches: Counter,
    /// Stale scans run.
    pub scans: Counter,
    /// Failover jobs queued for stale amphorae.
    pub failovers_queued: Counter,
    /// Scans that tripped the circuit breaker.
    pub circuit_breaker_trips: Counter,
}

impl Counters {
    pub fn count(&self, outcome: Outcome) {
        match outcome {
            Outcome::Applied => self.applied.inc(),
            Outcome::UnknownAmphora => self.unknown_amphora.inc(),
            Outcome::ListenerCountMismatch => self.listener_count_mismatch.inc(),
            Outcome::TooSlow => self.too_slow.inc(),
        }
    }
}

/// Lets one log line through per period and says how many it held back.
#[derive(Debug)]
pub struct Limiter {
    every: Duration,
    last: Option<Instant>,
    held: u64,
}

impl Limiter {
    pub fn new(every: Duration) -> Self {
        Self { every, last: None, held: 0 }
    }

    /// Some(lines held back since the last one) when this one may be logged.
    pub fn allow(&mut self) -> Option<u64> {
        let now = Instant::now();
        if self.last.is_some_and(|t| now.duration_since(t) < self.every) {
            self.held += 1;
            return None;
        }
        self.last = Some(now);
        Some(std::mem::take(&mut self.held))
    }
}

/// A running health role.
#[derive(Debug)]
pub struct Health {
    /// Where it receives heartbeats (the OS's choice for port 0).
    pub addr: SocketAddr,
    pub counters: Arc<Counters>,
    tasks: JoinSet<anyhow::Result<()>>,
}

impl Health {
    /// Waits until every task of the role ended (after shutdown); the first
    /// error, if any.
    pub async fn wait(mut self) -> anyhow::Result<()> {
        while let Some(result) = self.tasks.join_next().await {
            result??;
        }
        Ok(())
    }
}

/// Binds the heartbeat socket and starts the receiver, the updater and
/// (unless the amphora driver is the noop one) the stale scanner.
pub async fn start(db: Db, config: Arc<Config>, shutdown: watch::Receiver<bool>) -> anyhow::Result<Health> {
    let hm = &config.health;
    let bind = SocketAddr::new(hm.bind_ip, hm.bind_port);
    let socket = UdpSocket::bind(bind)
        .await
        .map_err(|e| anyhow::anyhow!("[health_manager] cannot receive heartbeats on {bind}: {e}"))?;
    let addr = socket.local_addr()?;
    let buffer = receive_buffer(&socket, hm.sock_rlimit);
    tracing::info!(%addr, receive_buffer = buffer, "health manager receiving heartbeats");
    if hm.heartbeat_key.is_none() {
        tracing::warn!("[health_manager] heartbeat_key is not set: every heartbeat will be dropped as unverifiable");
    }
    let counters = Arc::new(Counters::default());
    let updaters = updaters(&db, hm.health_update_threads);
    let mut tasks = JoinSet::new();
    let interval = Duration::from_secs(hm.heartbeat_interval);
    let mut queues = Vec::with_capacity(updaters);
    for _ in 0..updaters {
        let (queue, batches) = mpsc::channel(QUEUE / updaters);
        queues.push(queue);
        tasks.spawn(apply(db.clone(), batches, interval, counters.clone()));
    }
    let key = hm.heartbeat_key.clone();
    tasks.spawn(receive(socket, key, queues, counters.clone(), shutdown.clone()));
    if config.worker.amphora_driver == NOOP_AMPHORA_DRIVER {
        tracing::info!("amphora_noop_driver: no amphora heartbeats, so no stale-amphora detection");
    } else {
        tasks.spawn(detect(db, config.clone(), counters.clone(), shutdown));
    }
    Ok(Health { addr, counters, tasks })
}

/// Sizes the heartbeat socket's receive buffer (`sock_rlimit`, or ours
/// when 0) and returns the size the kernel granted (it caps the request at
/// `net.core.rmem_max` and doubles it for its bookkeeping). The default
/// buffer of about 200 KiB holds a few milliseconds of 10,000 heartbeats
/// per second: any pause of the receiving thread drops heartbeats, and each
/// dropped one ages its amphora's health by an interval.
///
/// With CAP_NET_ADMIN (a controller running as root) the size is forced
/// past `rmem_max`, as the operator (or our default) asked; without it the
/// kernel's cap holds.
fn receive_buffer(socket: &UdpSocket, sock_rlimit: usize) -> usize {
    use nix::sys::socket::sockopt::{RcvBuf, RcvBufForce};
    use nix::sys::socket::{getsockopt, setsockopt};
    let asked = if sock_rlimit > 0 { sock_rlimit } else { crate::config::DEFAULT_HEARTBEAT_RCVBUF };
    if setsockopt(socket, RcvBufForce, &asked).is_err()
        && let Err(e) = setsockopt(socket, RcvBuf, &asked)
    {
        tracing::warn!(error = %e, asked, "cannot size the heartbeat socket's receive buffer");
    }
    getsockopt(socket, RcvBuf).unwrap_or_default()
}

/// The role until shutdown (`run --roles health`).
pub async fn run(db: Db, config: Arc<Config>, shutdown: watch::Receiver<bool>) -> anyhow::Result<()> {
    start(db, config, shutdown).await?.wait().await
}

async fn receive(
    socket: UdpSocket,
    key: Option<String>,
    queues: Vec<mpsc::Sender<Received>>,
    counters: Arc<Counters>,
    shutdown: watch::Receiver<bool>,
) -> anyhow::Result<()> {
    let shards = RandomState::new();
    let stop = crate::stopped(shutdown);
    tokio::pin!(stop);
    let mut buf = vec![0u8; RECEIVER_BUFFER];
    let mut decoder = heartbeat::Decoder::new();
    let (mut bad_log, mut full_log, mut io_log) =
        (Limiter::new(LOG_EVERY), Limiter::new(LOG_EVERY), Limiter::new(LOG_EVERY));
    loop {
        let (len, from) = tokio::select! {
            r = socket.recv_from(&mut buf) => match r {
                Ok(r) => r,
                Err(e) => {
                    if io_log.allow().is_some() {
                        tracing::warn!(error = %e, "receiving a heartbeat failed");
                    }
                    continue;
                }
            },
            _ = &mut stop => return Ok(()),
        };
        let at = Instant::now();
        counters.received.inc();
        let decoded = match &key {
            Some(key) => decoder.decode::<status::Message>(&buf[..len], key, MAX_DECOMPRESSED),
            None => Err(EnvelopeError::BadSignature),
        };
        let message = match decoded {
            Ok(message) => message,
            Err(e) => {
                match e {
                    EnvelopeError::BadSignature | EnvelopeError::TooShort(_) => counters.bad_signature.inc(),
                    _ => counters.malformed.inc(),
                }
                if let Some(held) = bad_log.allow() {
                    tracing::warn!(%from, error = %e, similar_dropped_before = held, "heartbeat dropped");
                }
                continue;
            }
        };
        // An amphora's heartbeats all go to one updater, in order.
        let queue = &queues[(shards.hash_one(&message.id) % queues.len() as u64) as usize];
        match queue.try_send(Received { message, at, from }) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(_)) => {
                counters.queue_full.inc();
                if let Some(held) = full_log.allow() {
                    tracing::warn!(
                        similar_dropped_before = held,
                        "heartbeat dropped: the database updates fall behind"
                    );
                }
            }
            Err(mpsc::error::TrySendError::Closed(_)) => return Ok(()),
        }
    }
}

async fn apply(
    db: Db,
    mut batches: mpsc::Receiver<Received>,
    heartbeat_interval: Duration,
    counters: Arc<Counters>,
) -> anyhow::Result<()> {
    let mut batch = Vec::with_capacity(BATCH);
    let mut unknown_log = Limiter::new(LOG_EVERY);
    let linger = linger(heartbeat_interval);
    // Ends once the receiver stopped and the queue is drained.
    while batches.recv_many(&mut batch, BATCH).await > 0 {
        // Gather what arrives for a moment: one transaction for many
        // heartbeats costs far less than one each (statements, commits and
        // thread hand-offs), and a heartbeat has a whole interval to be
        // applied. Without it, a controller that keeps up applies nearly
        // every heartbeat alone.
        let deadline = tokio::time::Instant::now() + linger;
        while batch.len() < BATCH {
            let room = BATCH - batch.len();
            match tokio::time::timeout_at(deadline, batches.recv_many(&mut batch, room)).await {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            }
        }
        update::apply_and_count(&db, &batch, heartbeat_interval, &counters, &mut unknown_log).await;
        batch.clear();
    }
    Ok(())
}

/// Updaters applying batches side by side: `health_update_threads` (one
/// per CPU when unset) on PostgreSQL, where each runs its own transactions;
/// one on SQLite, whose single writer would only make them queue. Two
/// updaters touch the same rows only for the two amphorae of one
/// ACTIVE_STANDBY load balancer changing its statuses at the same moment;
/// should PostgreSQL then pick one as a deadlock victim, that batch is
/// applied again one heartbeat at a time.
fn updaters(db: &Db, configured: Option<usize>) -> usize {
    match db.backend {
        Backend::Sqlite => 1,
        Backend::Postgres => {
            configured.unwrap_or_else(|| std::thread::available_parallelism().map_or(1, usize::from)).max(1)
        }
    }
}

/// How long the updater gathers heartbeats before applying them: a tenth
/// of the interval, at most 100 ms.
fn linger(heartbeat_interval: Duration) -> Duration {
    (heartbeat_interval / 10).min(LINGER)
}

/// Whether an error means the database is out of reach.
fn unreachable(e: &sqlx::Error) -> bool {
    matches!(e, sqlx::Error::Io(_) | sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed | sqlx::Error::Tls(_))
}

async fn detect(
    db: Db,
    config: Arc<Config>,
    counters: Arc<Counters>,
    shutdown: watch::Receiver<bool>,
) -> anyhow::Result<()> {
    let hm = &config.health;
    let timeout = Duration::from_secs(hm.heartbeat_timeout);
    let stop = crate::stopped(shutdown);
    tokio::pin!(stop);
    // Amphorae get a full timeout to check in after a (re)start.
    tokio::select! {
        _ = tokio::time::sleep(timeout) => {}
        _ = &mut stop => return Ok(()),
    }
    let mut tick = tokio::time::interval(Duration::from_secs(hm.health_check_interval));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut hold_until: Option<Instant> = None;
    let mut deferred_log = Limiter::new(LOG_EVERY);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = &mut stop => return Ok(()),
        }
        if hold_until.is_some_and(|t| Instant::now() < t) {
            continue;
        }
        hold_until = None;
        counters.scans.inc();
        match stale::scan(&db, i64::try_from(timeout.as_millis()).unwrap_or(i64::MAX), hm.failover_threshold).await {
            Ok(scan) => {
                if scan.stopped.is_some() {
                    counters.circuit_breaker_trips.inc();
                }
                for amp in &scan.failed_over {
                    counters.failovers_queued.inc();
                    tracing::warn!(amphora = %amp, "stale amphora: failover queued");
                }
                if !scan.deferred.is_empty()
                    && let Some(held) = deferred_log.allow()
                {
                    tracing::warn!(
                        deferred = ?scan.deferred,
                        similar_before = held,
                        "stale amphorae whose load balancer is immutable: failover deferred"
                    );
                }
            }
            Err(e) if unreachable(&e) => {
                // Heartbeats could not be recorded either: give the amphorae
                // a full timeout once the database is back (as upstream).
                tracing::warn!(error = %e, "stale-amphora scan: database unreachable; holding failovers");
                hold_until = Some(Instant::now() + timeout);
            }
            Err(e) => tracing::warn!(error = %e, "stale-amphora scan failed"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Linux doubles a granted SO_RCVBUF for its own bookkeeping; the tests
    // run as root, so the size is forced past net.core.rmem_max.
    #[tokio::test]
    async fn the_heartbeat_socket_gets_the_receive_buffer_sock_rlimit_asks_for() {
        let socket = UdpSocket::bind("127.0.0.1:0").await.expect("bind");
        assert_eq!(receive_buffer(&socket, 3 << 20), 2 * (3 << 20));
    }

    #[tokio::test]
    async fn an_unset_sock_rlimit_gets_a_four_mebibyte_buffer_not_the_kernels_default() {
        let socket = UdpSocket::bind("127.0.0.1:0").await.expect("bind");
        assert_eq!(receive_buffer(&socket, 0), 2 * 4 * 1024 * 1024);
    }
}
