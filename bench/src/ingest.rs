//! Heartbeat ingest at fleet scale: synthetic amphorae send signed version
//! 3 heartbeats (one listener, one pool with 1, 10 or 50 members, counters
//! as deltas) to a controller running only its health role, at a rate that
//! steps up until the controller no longer keeps up.
//!
//! Each cell seeds its database with the amphorae and everything their
//! heartbeats name (statuses already ONLINE, so a steady fleet causes no
//! status writes), then sends each amphora's heartbeat once per
//! `heartbeat_interval`, evenly spread. The controller keeps up when,
//! after one interval of warm-up, every amphora's health row stays younger
//! than two intervals for the whole measurement: a heartbeat dropped at
//! the socket or the queue, or applied later than one interval (the
//! updater's guard then ignores it, as upstream's does), leaves its row two
//! intervals old. Measured from outside, through the database, the same
//! way for any receiver.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use amphora_controller::db::{Db, format_time, now_millis};
use serde_json::json;
use sqlx::Row;

use crate::controller::{
    AMPHORA_COLUMNS, LB_COLUMNS, Val, free_port, id, insert_batch, load_average, postgres_database, splice_between, t,
};
use crate::hot::cpu_seconds;

const KEY: &str = "bench-heartbeat-key";
/// Upstream's `sock_rlimit` in its configuration: the receive buffer ours
/// asks for when its own is unset, so neither side loses datagrams to the
/// kernel's default buffer.
const SOCK_RLIMIT: usize = amphora_controller::config::DEFAULT_HEARTBEAT_RCVBUF;
const BEGIN: &str = "<!-- ingest-bench:begin -->";
const END: &str = "<!-- ingest-bench:end -->";

#[derive(Debug, clap::Args)]
pub struct IngestArgs {
    /// A PostgreSQL server (`postgres://user@host:port/db`): each series
    /// gets a database of its own on it. Without it, SQLite only.
    #[arg(long)]
    postgres: Option<String>,
    /// Database engines to measure.
    #[arg(long, value_delimiter = ',', default_values_t = ["sqlite".to_owned(), "postgresql".to_owned()])]
    backends: Vec<String>,
    /// Heartbeats per second to try, ascending; a series stops at the
    /// first rate the controller does not keep up with. Upstream keeps up
    /// with a few hundred here: bench/run-ingest.sh starts at 100, so that
    /// ours / upstream is a ratio rather than a bound.
    #[arg(long, value_delimiter = ',', default_values_t = [2_000u64, 5_000, 10_000, 15_000, 20_000])]
    rates: Vec<u64>,
    /// Members per pool in the heartbeats (one series each).
    #[arg(long, value_delimiter = ',', default_values_t = [1usize, 10, 50])]
    members: Vec<usize>,
    /// `heartbeat_interval`, seconds: a rate R means R x interval amphorae.
    #[arg(long, default_value_t = 1)]
    interval: u64,
    /// Seconds measured per rate (after one interval of warm-up).
    #[arg(long, default_value_t = 10)]
    duration: u64,
    #[arg(long, default_value = "target/release/amphora-controller")]
    controller: PathBuf,
    /// Receivers to measure: ours (`amphora-controller run --roles
    /// health`) and upstream's (`octavia-health-manager` from the pinned
    /// package, PostgreSQL only), each driven by the same generator.
    #[arg(long, value_delimiter = ',', value_parser = ["ours", "upstream"],
          default_values_t = ["ours".to_owned(), "upstream".to_owned()])]
    sides: Vec<String>,
    /// The python of the venv with upstream Octavia (scripts/upstream-venv.sh).
    #[arg(long, default_value = "target/upstream-venv/bin/python")]
    python: PathBuf,
    #[arg(long, default_value = "bench/upstream")]
    upstream_dir: PathBuf,
    /// Where to write the report.
    #[arg(long, default_value = "bench/RESULTS.md")]
    output: PathBuf,
}

/// One rate of one series.
#[derive(Debug, Clone)]
struct Cell {
    /// "ours" or "upstream".
    side: &'static str,
    backend: String,
    members: usize,
    rate: u64,
    /// Heartbeats sent per second, as achieved by the generator.
    sent_rate: f64,
    kept_up: bool,
    /// Oldest health row seen during the measurement, in intervals.
    worst_age: f64,
    /// Fewest health rows seen (should be every amphora).
    fewest_rows: i64,
    /// Cores the receiver used (every process of it).
    receiver_cpu: f64,
    /// Cores its busiest process used: near one, that process bounds it.
    busiest_cpu: f64,
    /// Cores the PostgreSQL server used (its every process).
    database_cpu: Option<f64>,
    /// Resident memory of the receiver's processes, summed.
    rss_mib: f64,
    /// Their proportional set size, summed: pages shared between forked
    /// processes counted once.
    pss_mib: f64,
}

pub fn main(args: &IngestArgs) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    let controller = std::fs::canonicalize(&args.controller)?;
    let load_before = load_average();
    let started = time::OffsetDateTime::now_utc();
    let mut cells = Vec::new();
    for backend in &args.backends {
        if backend == "postgresql" && args.postgres.is_none() {
            eprintln!("== skipping postgresql: no --postgres server");
            continue;
        }
        for &members in &args.members {
            eprintln!("== {backend}, {members} member(s) per pool");
            match runtime.block_on(series(args, &controller, backend, members)) {
                Ok(mut series) => cells.append(&mut series),
                Err(e) => eprintln!("   series failed: {e:#}"),
            }
        }
    }
    let section = render(args, &cells, &load_before, &load_average(), started);
    let previous = std::fs::read_to_string(&args.output).unwrap_or_default();
    std::fs::write(&args.output, splice_between(&previous, BEGIN, END, &section))?;
    println!("{section}");
    Ok(())
}

/// A synthetic fleet: per amphora its heartbeat, ready to send.
struct Fleet {
    datagrams: Vec<Vec<u8>>,
    /// When asked for: the seeded ids and addresses as JSON, for
    /// bench/upstream/ingest_db.py to seed upstream's database with the
    /// same fleet, so the same heartbeats name rows on both sides.
    manifest: Option<String>,
}

/// Seeds `amphorae` load balancers, each with one amphora, an HTTP
/// listener, its pool and `members` members, all ACTIVE/ONLINE; returns
/// each amphora's signed heartbeat (and, with `manifest`, what was seeded).
async fn seed(url: &str, amphorae: usize, members: usize, manifest: bool) -> anyhow::Result<Fleet> {
    let db = Db::open(url).await?;
    let now = format_time(time::OffsetDateTime::now_utc());
    let project = uuid::Uuid::new_v4().simple().to_string();
    let mut datagrams = Vec::with_capacity(amphorae);
    let mut records = manifest.then(|| format!("{{\"project\": {}, \"amphorae\": [", json!(project)));
    const BATCH: usize = 200;
    let mut rows: [Vec<Vec<Val>>; 5] = Default::default();
    let listener_columns = [
        "id",
        "project_id",
        "load_balancer_id",
        "protocol",
        "protocol_port",
        "connection_limit",
        "default_pool_id",
        "enabled",
        "provisioning_status",
        "operating_status",
        "created_at",
    ];
    let pool_columns = [
        "id",
        "project_id",
        "load_balancer_id",
        "protocol",
        "lb_algorithm",
        "enabled",
        "provisioning_status",
        "operating_status",
        "created_at",
    ];
    let member_columns = [
        "id",
        "project_id",
        "pool_id",
        "address",
        "protocol_port",
        "weight",
        "backup",
        "enabled",
        "provisioning_status",
        "operating_status",
        "created_at",
    ];
    for i in 0..amphorae {
        let (lb, listener, pool, amphora) = (id(), id(), id(), id());
        let (vip_port, subnet, network, compute) = (id(), id(), id(), id());
        let vip = format!("10.{}.{}.{}", (i / 62_500) % 128, (i / 250) % 250, i % 250 + 1);
        rows[0].push(vec![
            t(lb.clone()),
            t(project.clone()),
            t(format!("lb-{i}")),
            Val::Text(None),
            t("ACTIVE"),
            t("ONLINE"),
            Val::Bool(true),
            t("SINGLE"),
            Val::Text(None),
            t("amphora"),
            t(vip.clone()),
            t(vip_port.clone()),
            t(subnet.clone()),
            t(network.clone()),
            t("[]"),
            t(now.clone()),
            t(now.clone()),
        ]);
        rows[1].push(vec![
            t(pool.clone()),
            t(project.clone()),
            t(lb.clone()),
            t("HTTP"),
            t("ROUND_ROBIN"),
            Val::Bool(true),
            t("ACTIVE"),
            t("ONLINE"),
            t(now.clone()),
        ]);
        rows[2].push(vec![
            t(listener.clone()),
            t(project.clone()),
            t(lb.clone()),
            t("HTTP"),
            Val::Int(Some(80)),
            Val::Int(Some(-1)),
            t(pool.clone()),
            Val::Bool(true),
            t("ACTIVE"),
            t("ONLINE"),
            t(now.clone()),
        ]);
        let mut member_states = serde_json::Map::new();
        let mut member_records = Vec::new();
        for m in 0..members {
            let member = id();
            let address = format!("192.168.{}.{}", m / 250, m % 250 + 1);
            if records.is_some() {
                member_records.push(json!({"id": &member, "address": &address}));
            }
            rows[3].push(vec![
                t(member.clone()),
                t(project.clone()),
                t(pool.clone()),
                t(address),
                Val::Int(Some(8080)),
                Val::Int(Some(1)),
                Val::Bool(false),
                Val::Bool(true),
                t("ACTIVE"),
                t("ONLINE"),
                t(now.clone()),
            ]);
            member_states.insert(member, json!("UP"));
        }
        let n = i + 2;
        let lb_network_ip = format!("172.{}.{}.{}", 16 + (n / 65_536) % 16, (n / 256) % 256, n % 256);
        if let Some(records) = records.as_mut() {
            let record = json!({
                "amphora": &amphora, "compute": &compute, "lb": &lb, "listener": &listener, "pool": &pool,
                "vip": &vip, "vip_port": &vip_port, "subnet": &subnet, "network": &network,
                "lb_network_ip": &lb_network_ip, "members": member_records,
            });
            if i > 0 {
                records.push_str(",\n");
            }
            records.push_str(&record.to_string());
        }
        rows[4].push(vec![
            t(amphora.clone()),
            t(lb.clone()),
            t(compute),
            t(lb_network_ip),
            Val::Text(None),
            t(vip),
            Val::Text(None),
            Val::Text(None),
            Val::Text(None),
            Val::Bool(false),
            t("STANDALONE"),
            t("ALLOCATED"),
            Val::Text(None),
            Val::Int(None),
            Val::Int(None),
            Val::Text(None),
            Val::Text(None),
            Val::Text(None),
            t(now.clone()),
            t(now.clone()),
        ]);
        let message = json!({
            "id": amphora, "seq": 1, "ver": 3,
            "listeners": {&listener: {"status": "OPEN",
                "stats": {"tx": 12_000, "rx": 3_000, "conns": 4, "totconns": 9, "ereq": 0}}},
            "pools": {format!("{pool}:{listener}"): {"status": "UP", "members": member_states}},
        });
        datagrams.push(amphora_proto::heartbeat::encode(&message, KEY)?);
        if rows[0].len() == BATCH || i + 1 == amphorae {
            let tables = [
                ("load_balancer", LB_COLUMNS),
                ("pool", &pool_columns[..]),
                ("listener", &listener_columns[..]),
                ("member", &member_columns[..]),
                ("amphora", AMPHORA_COLUMNS),
            ];
            for ((table, columns), batch) in tables.into_iter().zip(rows.iter_mut()) {
                while !batch.is_empty() {
                    let rest = batch.split_off(batch.len().min(BATCH));
                    insert_batch(&db, table, columns, std::mem::replace(batch, rest)).await?;
                }
            }
        }
    }
    // Planner statistics, as a database in service has them (PostgreSQL
    // would otherwise plan the first minutes' queries for empty tables).
    sqlx::query("ANALYZE").execute(&db.pool).await?;
    db.pool.close().await;
    Ok(Fleet { datagrams, manifest: records.map(|r| r + "]}") })
}

/// A heartbeat receiver under test, in a process group of its own: our
/// controller's health role, or upstream's health manager (its listener,
/// its health check process and the listener's two process pools).
struct Receiver {
    side: &'static str,
    child: Child,
    addr: SocketAddr,
    log: PathBuf,
}

impl Receiver {
    fn spawn(side: &'static str, mut command: Command, dir: &Path, port: u16) -> anyhow::Result<Receiver> {
        let log = dir.join(format!("{side}-receiver.log"));
        let file = std::fs::File::create(&log)?;
        std::os::unix::process::CommandExt::process_group(&mut command, 0);
        let child = command.stdin(Stdio::null()).stdout(file.try_clone()?).stderr(file).spawn()?;
        Ok(Receiver { side, child, addr: SocketAddr::from(([127, 0, 0, 1], port)), log })
    }

    /// Our controller, running only its health role.
    fn ours(controller: &Path, dir: &Path, url: &str, interval: u64) -> anyhow::Result<Receiver> {
        let port = free_port();
        let config = format!(
            "[api_settings]\nauth_strategy = noauth\n\n[database]\nconnection = {url}\n\n\
             [health_manager]\nbind_ip = 127.0.0.1\nbind_port = {port}\nheartbeat_key = {KEY}\n\
             heartbeat_interval = {interval}\nheartbeat_timeout = 600\nhealth_check_interval = 3\n\n\
             [controller_worker]\namphora_driver = amphora_haproxy_rest_driver\n"
        );
        let path = dir.join("octavia.conf");
        std::fs::write(&path, config)?;
        let mut command = Command::new(controller);
        command.arg("--config-file").arg(&path).args(["run", "--roles", "health"]);
        Receiver::spawn("ours", command, dir, port)
    }

    /// Upstream's `octavia-health-manager` on `url` (SQLAlchemy's form),
    /// with two processes each for health and stats updates (this machine
    /// has two cores), the receive buffer ours asks for by default and a
    /// heartbeat timeout long enough that its health check never starts a
    /// failover.
    fn upstream(venv_bin: &Path, dir: &Path, url: &str, interval: u64) -> anyhow::Result<Receiver> {
        let port = free_port();
        let config = format!(
            "[DEFAULT]\ndebug = False\n\n[database]\nconnection = {url}\n\n\
             [health_manager]\nbind_ip = 127.0.0.1\nbind_port = {port}\nheartbeat_key = {KEY}\n\
             heartbeat_interval = {interval}\nheartbeat_timeout = 86400\nhealth_check_interval = 3\n\
             health_update_threads = 2\nstats_update_threads = 2\nsock_rlimit = {SOCK_RLIMIT}\n"
        );
        let path = dir.join("upstream-octavia.conf");
        std::fs::write(&path, config)?;
        let mut command = Command::new(venv_bin.join("octavia-health-manager"));
        command.arg("--config-file").arg(&path);
        Receiver::spawn("upstream", command, dir, port)
    }

    /// Waits until the receiver listens on its UDP port.
    async fn ready(&mut self) -> anyhow::Result<()> {
        let waiting = Instant::now();
        loop {
            let listening = match self.side {
                "ours" => std::fs::read_to_string(&self.log).unwrap_or_default().contains("receiving heartbeats"),
                // The port is taken once upstream's listener has bound it.
                _ => std::net::UdpSocket::bind(self.addr).is_err(),
            };
            if listening {
                return Ok(());
            }
            if let Some(status) = self.child.try_wait()? {
                anyhow::bail!("the {} receiver exited with {status}:\n{}", self.side, self.log_tail());
            }
            anyhow::ensure!(
                waiting.elapsed() < Duration::from_secs(60),
                "the {} receiver did not start receiving:\n{}",
                self.side,
                self.log_tail()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    fn log_tail(&self) -> String {
        let log = std::fs::read_to_string(&self.log).unwrap_or_default();
        let tail: Vec<&str> = log.lines().rev().take(20).collect();
        tail.into_iter().rev().collect::<Vec<_>>().join("\n")
    }

    fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    /// Every live process of the receiver's process group.
    fn processes(&self) -> Vec<i32> {
        let Ok(entries) = std::fs::read_dir("/proc") else { return Vec::new() };
        entries
            .flatten()
            .filter_map(|e| e.file_name().to_string_lossy().parse::<i32>().ok())
            .filter(|pid| {
                // After the command: state is field 3, pgrp 5.
                let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
                stat.rsplit_once(')').and_then(|(_, rest)| rest.split_whitespace().nth(2)?.parse::<i32>().ok())
                    == Some(self.pid())
            })
            .collect()
    }

    /// CPU seconds (user + system) of each of the receiver's processes.
    fn cpu(&self) -> Vec<(i32, f64)> {
        self.processes().into_iter().filter_map(|pid| Some((pid, cpu_seconds(pid).ok().map(|(u, s)| u + s)?))).collect()
    }

    /// The sum over the receiver's processes of `field` (in kB) of
    /// `/proc/PID/{file}`, in MiB.
    fn memory_mib(&self, file: &str, field: &str) -> f64 {
        self.processes()
            .into_iter()
            .map(|pid| {
                let text = std::fs::read_to_string(format!("/proc/{pid}/{file}")).unwrap_or_default();
                text.lines()
                    .find_map(|l| l.strip_prefix(field))
                    .and_then(|v| v.split_whitespace().next()?.parse::<f64>().ok())
                    .map_or(0.0, |kib| kib / 1024.0)
            })
            .sum()
    }

    /// Lines of the receiver's log that tell of an error, and the first.
    fn errors(&self) -> (usize, Option<String>) {
        let log = std::fs::read_to_string(&self.log).unwrap_or_default();
        let mut errors =
            log.lines().filter(|l| l.contains(" ERROR ") || l.contains(" CRITICAL ") || l.starts_with("Traceback"));
        let first = errors.next().map(str::to_owned);
        (first.iter().count() + errors.count(), first)
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        let _ = nix::sys::signal::killpg(nix::unistd::Pid::from_raw(self.pid()), nix::sys::signal::SIGKILL);
        let _ = self.child.wait();
    }
}

/// The PostgreSQL server behind `db`: its postmaster, the parent of the
/// backend serving this connection. None on SQLite.
async fn postmaster(db: &Db, backend: &str) -> anyhow::Result<Option<i32>> {
    if backend != "postgresql" {
        return Ok(None);
    }
    let backend_pid: i32 = sqlx::query("SELECT pg_backend_pid()").fetch_one(&db.pool).await?.try_get(0)?;
    Ok(Some(parent(backend_pid).ok_or_else(|| anyhow::anyhow!("no parent for PostgreSQL backend {backend_pid}"))?))
}

fn parent(pid: i32) -> Option<i32> {
    // After the command: state is field 3, ppid 4.
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat.rsplit_once(')')?.1.split_whitespace().nth(1)?.parse().ok()
}

/// CPU seconds of a PostgreSQL server: its postmaster and every process
/// it started (backends, writers, autovacuum), not other servers on the
/// machine.
fn postgres_cpu(postmaster: Option<i32>) -> f64 {
    let Some(postmaster) = postmaster else { return 0.0 };
    let Ok(entries) = std::fs::read_dir("/proc") else { return 0.0 };
    let mut total = 0.0;
    for entry in entries.flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else { continue };
        if (pid == postmaster || parent(pid) == Some(postmaster))
            && let Ok((user, system)) = cpu_seconds(pid)
        {
            total += user + system;
        }
    }
    total
}

/// Sends each amphora's heartbeat once per interval, evenly spread, until
/// `stop`; counts what it sent.
fn generate(
    fleet: Arc<Fleet>,
    amphorae: usize,
    rate: u64,
    to: SocketAddr,
    stop: Arc<AtomicBool>,
    sent: Arc<AtomicU64>,
) {
    let socket = std::net::UdpSocket::bind("127.0.0.1:0").expect("a sending socket");
    let started = Instant::now();
    let mut n = 0u64;
    while !stop.load(Ordering::Relaxed) {
        let due = (started.elapsed().as_secs_f64() * rate as f64) as u64;
        while n < due {
            let _ = socket.send_to(&fleet.datagrams[(n % amphorae as u64) as usize], to);
            n += 1;
        }
        sent.store(n, Ordering::Relaxed);
        std::thread::sleep(Duration::from_micros(500));
    }
}

/// (health rows, oldest row's age in ms). Ours keeps `last_update` as
/// milliseconds since the epoch; upstream as a naive UTC timestamp, whose
/// epoch PostgreSQL takes as UTC.
async fn health_rows(db: &Db, side: &str) -> anyhow::Result<(i64, i64)> {
    let query = match side {
        "ours" => "SELECT COUNT(*), COALESCE(MIN(last_update), 0) FROM amphora_health",
        _ => {
            "SELECT COUNT(*), COALESCE(CAST(EXTRACT(EPOCH FROM MIN(last_update)) * 1000 AS BIGINT), 0) \
              FROM amphora_health"
        }
    };
    let row = sqlx::query(query).fetch_one(&db.pool).await?;
    Ok((row.try_get(0)?, now_millis() - row.try_get::<i64, _>(1)?))
}

/// `postgres://...` as SQLAlchemy names it with psycopg2.
pub(crate) fn sqlalchemy_url(url: &str) -> String {
    let rest = url.strip_prefix("postgresql://").or_else(|| url.strip_prefix("postgres://")).unwrap_or(url);
    format!("postgresql+psycopg2://{rest}")
}

/// Seeds upstream's schema (in a database of its own on the same server)
/// with `fleet`, through bench/upstream/ingest_db.py; returns the
/// database's URL.
async fn seed_upstream(args: &IngestArgs, python: &Path, fleet: &Fleet) -> anyhow::Result<String> {
    let manifest = fleet.manifest.as_deref().ok_or_else(|| anyhow::anyhow!("the fleet was seeded without ids"))?;
    let url = postgres_database(args.postgres.as_deref().unwrap_or_default()).await?;
    let script = std::fs::canonicalize(&args.upstream_dir)?.join("ingest_db.py");
    let mut child = Command::new(python)
        .arg(&script)
        .arg("--db")
        .arg(sqlalchemy_url(&url))
        .stdin(Stdio::piped())
        .stdout(Stdio::inherit())
        .stderr(Stdio::inherit())
        .spawn()?;
    let mut stdin = child.stdin.take().ok_or_else(|| anyhow::anyhow!("no stdin to the seeder"))?;
    let (written, status) = tokio::task::block_in_place(|| {
        let written = std::io::Write::write_all(&mut stdin, manifest.as_bytes());
        drop(stdin);
        (written, child.wait())
    });
    let status = status?;
    anyhow::ensure!(status.success(), "seeding upstream's database failed: {status}");
    written?;
    Ok(url)
}

async fn series(args: &IngestArgs, controller: &Path, backend: &str, members: usize) -> anyhow::Result<Vec<Cell>> {
    let dir = tempfile::Builder::new().prefix("ingest-bench.").tempdir()?;
    let url = match backend {
        "sqlite" => format!("sqlite:///{}/octavia.db", dir.path().display()),
        _ => postgres_database(args.postgres.as_deref().unwrap_or_default()).await?,
    };
    let ours = args.sides.iter().any(|s| s == "ours");
    let upstream = args.sides.iter().any(|s| s == "upstream") && backend == "postgresql";
    // Seeded before the controller starts (Db::open applies the schema).
    // Our seed also makes the fleet's ids, which upstream's seed reuses.
    let most = args.rates.iter().copied().max().unwrap_or(0) as usize * args.interval as usize;
    let seeding = Instant::now();
    let fleet = Arc::new(seed(&url, most, members, upstream).await?);
    eprintln!("   seeded {most} amphorae with {members} member(s) each in {:.1?}", seeding.elapsed());
    let mut cells = Vec::new();
    if ours {
        let db = Db::connect(&url).await?;
        let receiver = Receiver::ours(controller, dir.path(), &url, args.interval)?;
        let measured = measure(args, receiver, &db, &fleet, backend, members).await;
        db.pool.close().await;
        cells.append(&mut measured?);
    }
    if upstream {
        // Absolute but not resolved: the venv's python is a symlink.
        let python = std::path::absolute(&args.python)?;
        let bin = python.parent().ok_or_else(|| anyhow::anyhow!("no directory for {}", python.display()))?;
        let seeding = Instant::now();
        let url = seed_upstream(args, &python, &fleet).await?;
        eprintln!("   seeded upstream's schema in {:.1?}", seeding.elapsed());
        let db = Db::connect(&url).await?;
        let receiver = Receiver::upstream(bin, dir.path(), &sqlalchemy_url(&url), args.interval)?;
        let measured = measure(args, receiver, &db, &fleet, backend, members).await;
        db.pool.close().await;
        match measured {
            Ok(mut measured) => cells.append(&mut measured),
            // Ours stays reported when upstream's side fails.
            Err(e) => eprintln!("   upstream's series failed: {e:#}"),
        }
    }
    Ok(cells)
}

/// Drives `receiver` at each rate in turn, until one it does not keep up
/// with.
async fn measure(
    args: &IngestArgs,
    mut receiver: Receiver,
    db: &Db,
    fleet: &Arc<Fleet>,
    backend: &str,
    members: usize,
) -> anyhow::Result<Vec<Cell>> {
    receiver.ready().await?;
    let side = receiver.side;
    let server = postmaster(db, backend).await?;
    eprintln!("   {side}: receiving");
    let mut cells = Vec::new();
    let interval_ms = args.interval as f64 * 1000.0;
    for &rate in &args.rates {
        let amphorae = rate as usize * args.interval as usize;
        let (stop, sent) = (Arc::new(AtomicBool::new(false)), Arc::new(AtomicU64::new(0)));
        let generator = {
            let (fleet, stop, sent, to) = (fleet.clone(), stop.clone(), sent.clone(), receiver.addr);
            std::thread::spawn(move || generate(fleet, amphorae, rate, to, stop, sent))
        };
        tokio::time::sleep(Duration::from_millis(args.interval * 1000 + 1000)).await;
        let (cpu0, db0, sent0, t0) =
            (receiver.cpu(), postgres_cpu(server), sent.load(Ordering::Relaxed), Instant::now());
        let (mut worst_age, mut fewest_rows) = (0i64, i64::MAX);
        while t0.elapsed() < Duration::from_secs(args.duration) {
            let (rows, age) = health_rows(db, side).await?;
            worst_age = worst_age.max(age);
            fewest_rows = fewest_rows.min(rows);
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        let window = t0.elapsed().as_secs_f64();
        let (cpu1, db1, sent1) = (receiver.cpu(), postgres_cpu(server), sent.load(Ordering::Relaxed));
        let (rss, pss) = (receiver.memory_mib("status", "VmRSS:"), receiver.memory_mib("smaps_rollup", "Pss:"));
        stop.store(true, Ordering::Relaxed);
        let _ = generator.join();
        let kept_up = fewest_rows >= amphorae as i64 && (worst_age as f64) < 2.0 * interval_ms;
        if let Some(status) = receiver.child.try_wait()? {
            anyhow::bail!("the {side} receiver exited with {status}:\n{}", receiver.log_tail());
        }
        let cell = Cell {
            side,
            backend: backend.to_owned(),
            members,
            rate,
            sent_rate: (sent1 - sent0) as f64 / window,
            kept_up,
            worst_age: worst_age as f64 / interval_ms,
            fewest_rows,
            receiver_cpu: (cpu1.iter().map(|(_, c)| c).sum::<f64>() - cpu0.iter().map(|(_, c)| c).sum::<f64>())
                / window,
            busiest_cpu: cpu1
                .iter()
                .map(|(pid, c)| c - cpu0.iter().find(|(p, _)| p == pid).map_or(0.0, |(_, c0)| *c0))
                .fold(0.0, f64::max)
                / window,
            database_cpu: (backend == "postgresql").then(|| (db1 - db0) / window),
            rss_mib: rss,
            pss_mib: pss,
        };
        eprintln!("   {cell:?}");
        cells.push(cell);
        if !kept_up {
            break;
        }
        // Let the queue drain before the next rate.
        tokio::time::sleep(Duration::from_secs(args.interval)).await;
    }
    if let (errors @ 1.., Some(first)) = receiver.errors() {
        eprintln!("   {side}: {errors} error line(s) in its log, the first: {first}");
    }
    // Upstream's own word for falling behind: a heartbeat dropped because
    // it waited longer than one interval.
    let late = std::fs::read_to_string(&receiver.log).unwrap_or_default().matches("processed too slowly").count();
    if late > 0 {
        eprintln!("   {side}: {late} heartbeat(s) dropped as processed too slowly");
    }
    Ok(cells)
}

fn render(
    args: &IngestArgs,
    cells: &[Cell],
    load_before: &str,
    load_after: &str,
    started: time::OffsetDateTime,
) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "## Heartbeat ingest (health receivers: ours and upstream's)\n");
    let _ = writeln!(
        out,
        "Run {}, `amphora-bench ingest --interval {} --duration {}` (rates {:?}, members {:?}, sides {:?}). \
         Load average (1, 5, 15 min) {load_before} before and {load_after} after.\n",
        crate::controller::run_time(started),
        args.interval,
        args.duration,
        args.rates,
        args.members,
        args.sides,
    );
    out.push_str(
        "Synthetic amphorae (one load balancer each: an HTTP listener, its pool with N members, all ONLINE) send \
         signed version 3 heartbeats (counters as deltas) from one process over loopback; each amphora once per \
         interval, evenly spread, so a rate R is R x interval amphorae. Ours: the release `amphora-controller run \
         --roles health`. Upstream: `octavia-health-manager` from the pinned octavia 19.0.0 package (its UDP \
         listener process hands each heartbeat to two process pools, `UpdateHealthDb.update_health` and the \
         stats updater, with `health_update_threads` and `stats_update_threads` = 2 for this machine's 2 cores, \
         and `sock_rlimit` = 4 MiB, the receive buffer ours takes by default), \
         on PostgreSQL only, over its own schema (from its models: its migrations stop on PostgreSQL; foreign \
         key columns indexed as MySQL does implicitly) seeded with the same ids, so both receive the very same \
         datagrams from the same generator, one after the other. Kept up: after one interval of warm-up, every \
         amphora's health row stayed younger than two intervals for the whole measurement (read through the \
         database every 250 ms; upstream, like ours, drops a heartbeat it gets to later than one interval). \
         Cores: CPU time over wall time (every process of the receiver; every process of the PostgreSQL \
         server). Memory: RSS and PSS summed over the receiver's processes at the end of the measurement \
         (upstream's forked processes share pages: RSS counts them in each, PSS once).\n\n",
    );
    out.push_str(
        "| side | database | members per pool | heartbeats/s asked | sent | kept up | oldest row (intervals) | \
         receiver cores | its busiest process | database cores | receiver RSS | receiver PSS |\n\
         |---|---|---|---|---|---|---|---|---|---|---|---|\n",
    );
    for c in cells {
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {:.0} | {} | {:.2} | {:.2} | {:.2} | {} | {:.1} MiB | {:.1} MiB |",
            c.side,
            c.backend,
            c.members,
            c.rate,
            c.sent_rate,
            if c.kept_up {
                "yes"
            } else if c.fewest_rows < (c.rate * args.interval) as i64 {
                "no (rows missing)"
            } else {
                "no"
            },
            c.worst_age,
            c.receiver_cpu,
            c.busiest_cpu,
            c.database_cpu.map_or("in process".to_owned(), |v| format!("{v:.2}")),
            c.rss_mib,
            c.pss_mib,
        );
    }
    out.push('\n');
    for line in summary(cells) {
        let _ = writeln!(out, "- {line}");
    }
    if cells.iter().any(|c| c.side == "upstream") {
        out.push_str(
            "\nWhat bounds upstream (read from its code): one listener process receives every datagram, checks \
             its HMAC, decompresses and decodes it, and pickles it to each pool (once for health, once for stats), \
             all under one Python GIL, so that process can never use more than one core. Each health update \
             opens a database session of its own per heartbeat: the join of amphora, load balancer, listener, \
             pool and member in one transaction, the amphora_health upsert (a count, then an update) in \
             another, and one more transaction per pool to compare statuses; each stats update a further \
             session with a count, a locking read and an update per listener. Nothing is batched across \
             heartbeats, so per-heartbeat Python and database round trips bound it, with two workers per pool \
             sharing the two cores with the listener and PostgreSQL. A heartbeat that waits in the pools' queue \
             longer than one interval is dropped with a warning, which is how falling behind shows. The busiest \
             process column tells which bound a run hit: near one core, the listener; well under, with the \
             receiver's total near what PostgreSQL leaves of the two cores, the pool workers.\n",
        );
    }
    out
}

/// Per (database, members): each side's highest kept-up rate, and ours
/// over upstream's where both were measured.
fn summary(cells: &[Cell]) -> Vec<String> {
    let mut series: Vec<(String, usize)> = Vec::new();
    for c in cells {
        if !series.contains(&(c.backend.clone(), c.members)) {
            series.push((c.backend.clone(), c.members));
        }
    }
    let mut lines = Vec::new();
    for (backend, members) in series {
        let of = |side: &str| -> Option<(Option<u64>, u64)> {
            let measured: Vec<&Cell> =
                cells.iter().filter(|c| c.side == side && c.backend == backend && c.members == members).collect();
            let lowest = measured.iter().map(|c| c.rate).min()?;
            Some((measured.iter().filter(|c| c.kept_up).map(|c| c.rate).max(), lowest))
        };
        let describe = |best: Option<(Option<u64>, u64)>| match best {
            Some((Some(rate), _)) => format!("{rate} heartbeats/s"),
            Some((None, lowest)) => format!("none (not even {lowest} heartbeats/s)"),
            None => "not measured".to_owned(),
        };
        let (ours, upstream) = (of("ours"), of("upstream"));
        let ratio = match (ours, upstream) {
            (Some((Some(o), _)), Some((Some(u), _))) => format!("; ours / upstream = {:.1}", o as f64 / u as f64),
            (Some((Some(o), _)), Some((None, lowest))) => {
                format!("; ours / upstream > {:.1} (upstream below the lowest rate tried)", o as f64 / lowest as f64)
            }
            _ => String::new(),
        };
        let mut line = format!("{backend}, {members} member(s): ours kept up with {}", describe(ours));
        if upstream.is_some() {
            let _ = write!(line, ", upstream with {}{ratio}", describe(upstream));
        }
        lines.push(line);
    }
    lines
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cell(side: &'static str, members: usize, rate: u64, kept_up: bool) -> Cell {
        Cell {
            side,
            backend: "postgresql".to_owned(),
            members,
            rate,
            sent_rate: rate as f64,
            kept_up,
            worst_age: 1.0,
            fewest_rows: rate as i64,
            receiver_cpu: 0.0,
            busiest_cpu: 0.0,
            database_cpu: Some(0.0),
            rss_mib: 0.0,
            pss_mib: 0.0,
        }
    }

    #[test]
    fn summary_divides_the_highest_kept_up_rates() {
        let cells = [
            cell("ours", 10, 1_000, true),
            cell("ours", 10, 4_000, true),
            cell("ours", 10, 8_000, false),
            cell("upstream", 10, 1_000, true),
            cell("upstream", 10, 4_000, false),
        ];
        // 4000 / 1000.
        assert_eq!(
            summary(&cells),
            ["postgresql, 10 member(s): ours kept up with 4000 heartbeats/s, upstream with 1000 heartbeats/s; \
              ours / upstream = 4.0"]
        );
    }

    #[test]
    fn summary_bounds_the_ratio_when_upstream_kept_up_with_no_rate() {
        let cells = [cell("ours", 1, 2_000, true), cell("ours", 1, 5_000, true), cell("upstream", 1, 2_000, false)];
        // Upstream's best is below 2000, so the ratio is above 5000 / 2000.
        assert_eq!(
            summary(&cells),
            ["postgresql, 1 member(s): ours kept up with 5000 heartbeats/s, upstream with none (not even 2000 \
              heartbeats/s); ours / upstream > 2.5 (upstream below the lowest rate tried)"]
        );
    }

    #[test]
    fn summary_without_upstream_names_only_ours() {
        let mut sqlite = cell("ours", 50, 2_000, true);
        sqlite.backend = "sqlite".to_owned();
        assert_eq!(summary(&[sqlite]), ["sqlite, 50 member(s): ours kept up with 2000 heartbeats/s"]);
    }

    #[test]
    fn sqlalchemy_url_names_the_psycopg2_driver() {
        assert_eq!(
            sqlalchemy_url("postgres://octavia@127.0.0.1:5432/bench_x"),
            "postgresql+psycopg2://octavia@127.0.0.1:5432/bench_x"
        );
        assert_eq!(sqlalchemy_url("postgresql://u:p@h/db"), "postgresql+psycopg2://u:p@h/db");
    }
}
