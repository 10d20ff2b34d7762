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
    /// first rate the controller does not keep up with.
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
    /// Where to write the report.
    #[arg(long, default_value = "bench/RESULTS.md")]
    output: PathBuf,
}

/// One rate of one series.
#[derive(Debug, Clone)]
struct Cell {
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
    /// Cores the controller used.
    controller_cpu: f64,
    /// Cores the PostgreSQL server used (its every process).
    database_cpu: Option<f64>,
    rss_mib: f64,
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
}

/// Seeds `amphorae` load balancers, each with one amphora, an HTTP
/// listener, its pool and `members` members, all ACTIVE/ONLINE; returns
/// each amphora's signed heartbeat.
async fn seed(url: &str, amphorae: usize, members: usize) -> anyhow::Result<Fleet> {
    let db = Db::open(url).await?;
    let now = format_time(time::OffsetDateTime::now_utc());
    let project = uuid::Uuid::new_v4().simple().to_string();
    let mut datagrams = Vec::with_capacity(amphorae);
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
            t(id()),
            t(id()),
            t(id()),
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
        for m in 0..members {
            let member = id();
            rows[3].push(vec![
                t(member.clone()),
                t(project.clone()),
                t(pool.clone()),
                t(format!("192.168.{}.{}", m / 250, m % 250 + 1)),
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
        rows[4].push(vec![
            t(amphora.clone()),
            t(lb.clone()),
            t(id()),
            t(format!("172.{}.{}.{}", 16 + (n / 65_536) % 16, (n / 256) % 256, n % 256)),
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
    Ok(Fleet { datagrams })
}

/// The controller's health role, alone, in a process group of its own.
struct Receiver {
    child: Child,
    addr: SocketAddr,
}

impl Receiver {
    fn start(controller: &Path, dir: &Path, url: &str, interval: u64) -> anyhow::Result<Receiver> {
        let port = free_port();
        let config = format!(
            "[api_settings]\nauth_strategy = noauth\n\n[database]\nconnection = {url}\n\n\
             [health_manager]\nbind_ip = 127.0.0.1\nbind_port = {port}\nheartbeat_key = {KEY}\n\
             heartbeat_interval = {interval}\nheartbeat_timeout = 600\nhealth_check_interval = 3\n\n\
             [controller_worker]\namphora_driver = amphora_haproxy_rest_driver\n"
        );
        let path = dir.join("octavia.conf");
        std::fs::write(&path, config)?;
        let log = std::fs::File::create(dir.join("controller.log"))?;
        let child = std::os::unix::process::CommandExt::process_group(
            Command::new(controller).arg("--config-file").arg(&path).args(["run", "--roles", "health"]),
            0,
        )
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .spawn()?;
        Ok(Receiver { child, addr: SocketAddr::from(([127, 0, 0, 1], port)) })
    }

    fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    fn rss_mib(&self) -> f64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid())).unwrap_or_default();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.split_whitespace().next()?.parse::<f64>().ok())
            .map_or(0.0, |kib| kib / 1024.0)
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        let _ = nix::sys::signal::killpg(nix::unistd::Pid::from_raw(self.pid()), nix::sys::signal::SIGKILL);
        let _ = self.child.wait();
    }
}

/// CPU seconds of every PostgreSQL server process on the machine.
fn postgres_cpu() -> f64 {
    let Ok(entries) = std::fs::read_dir("/proc") else { return 0.0 };
    let mut total = 0.0;
    for entry in entries.flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else { continue };
        let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
        if comm.trim() == "postgres"
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

/// (health rows, oldest row's age in ms).
async fn health_rows(db: &Db) -> anyhow::Result<(i64, i64)> {
    let row =
        sqlx::query("SELECT COUNT(*), COALESCE(MIN(last_update), 0) FROM amphora_health").fetch_one(&db.pool).await?;
    Ok((row.try_get(0)?, now_millis() - row.try_get::<i64, _>(1)?))
}

async fn series(args: &IngestArgs, controller: &Path, backend: &str, members: usize) -> anyhow::Result<Vec<Cell>> {
    let dir = tempfile::Builder::new().prefix("ingest-bench.").tempdir()?;
    let url = match backend {
        "sqlite" => format!("sqlite:///{}/octavia.db", dir.path().display()),
        _ => postgres_database(args.postgres.as_deref().unwrap_or_default()).await?,
    };
    // Seeded before the controller starts (Db::open applies the schema).
    let most = args.rates.iter().copied().max().unwrap_or(0) as usize * args.interval as usize;
    let seeding = Instant::now();
    let fleet = Arc::new(seed(&url, most, members).await?);
    eprintln!("   seeded {most} amphorae with {members} member(s) each in {:.1?}", seeding.elapsed());
    let db = Db::connect(&url).await?;
    let mut receiver = Receiver::start(controller, dir.path(), &url, args.interval)?;
    let log = dir.path().join("controller.log");
    let waiting = Instant::now();
    while !std::fs::read_to_string(&log).unwrap_or_default().contains("receiving heartbeats") {
        if let Some(status) = receiver.child.try_wait()? {
            anyhow::bail!(
                "the controller exited with {status}:\n{}",
                std::fs::read_to_string(&log).unwrap_or_default()
            );
        }
        anyhow::ensure!(waiting.elapsed() < Duration::from_secs(60), "the controller did not start receiving");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
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
            (cpu_seconds(receiver.pid())?, postgres_cpu(), sent.load(Ordering::Relaxed), Instant::now());
        let (mut worst_age, mut fewest_rows) = (0i64, i64::MAX);
        while t0.elapsed() < Duration::from_secs(args.duration) {
            let (rows, age) = health_rows(&db).await?;
            worst_age = worst_age.max(age);
            fewest_rows = fewest_rows.min(rows);
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        let window = t0.elapsed().as_secs_f64();
        let (cpu1, db1, sent1) = (cpu_seconds(receiver.pid())?, postgres_cpu(), sent.load(Ordering::Relaxed));
        stop.store(true, Ordering::Relaxed);
        let _ = generator.join();
        let kept_up = fewest_rows >= amphorae as i64 && (worst_age as f64) < 2.0 * interval_ms;
        if let Some(status) = receiver.child.try_wait()? {
            let log = std::fs::read_to_string(dir.path().join("controller.log")).unwrap_or_default();
            let tail: Vec<&str> = log.lines().rev().take(20).collect();
            anyhow::bail!(
                "the controller exited with {status}:\n{}",
                tail.into_iter().rev().collect::<Vec<_>>().join("\n")
            );
        }
        let cell = Cell {
            backend: backend.to_owned(),
            members,
            rate,
            sent_rate: (sent1 - sent0) as f64 / window,
            kept_up,
            worst_age: worst_age as f64 / interval_ms,
            fewest_rows,
            controller_cpu: (cpu1.0 + cpu1.1 - cpu0.0 - cpu0.1) / window,
            database_cpu: (backend == "postgresql").then(|| (db1 - db0) / window),
            rss_mib: receiver.rss_mib(),
        };
        eprintln!("   {cell:?}");
        cells.push(cell);
        if !kept_up {
            break;
        }
        // Let the queue drain before the next rate.
        tokio::time::sleep(Duration::from_secs(args.interval)).await;
    }
    drop(receiver);
    db.pool.close().await;
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
    let _ = writeln!(out, "{BEGIN}\n## Heartbeat ingest (controller health role)\n");
    let _ = writeln!(
        out,
        "Run {} UTC, `amphora-bench ingest --interval {} --duration {}` (rates {:?}, members {:?}). Load average \
         (1, 5, 15 min) {load_before} before and {load_after} after.\n",
        format_time(started).replace('T', " ").split('.').next().unwrap_or_default(),
        args.interval,
        args.duration,
        args.rates,
        args.members,
    );
    out.push_str(
        "Synthetic amphorae (one load balancer each: an HTTP listener, its pool with N members, all ONLINE) send \
         signed version 3 heartbeats (counters as deltas) from one process over loopback to the release \
         `amphora-controller run --roles health`; each amphora once per interval, evenly spread, so a rate R \
         is R x interval amphorae. Kept up: after one interval of warm-up, every amphora's health row stayed \
         younger than two intervals for the whole measurement (read through the database every 250 ms). \
         Cores: CPU time over wall time (the controller process; PostgreSQL's every process).\n\n",
    );
    out.push_str("| database | members per pool | heartbeats/s asked | sent | kept up | oldest row (intervals) | controller cores | database cores | controller RSS |\n|---|---|---|---|---|---|---|---|---|\n");
    for c in cells {
        let _ = writeln!(
            out,
            "| {} | {} | {} | {:.0} | {} | {:.2} | {:.2} | {} | {:.1} MiB |",
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
            c.controller_cpu,
            c.database_cpu.map_or("in process".to_owned(), |v| format!("{v:.2}")),
            c.rss_mib,
        );
    }
    out.push('\n');
    let mut best: Vec<(String, usize, u64)> = Vec::new();
    for c in cells.iter().filter(|c| c.kept_up) {
        match best.iter_mut().find(|(b, m, _)| *b == c.backend && *m == c.members) {
            Some(entry) => entry.2 = entry.2.max(c.rate),
            None => best.push((c.backend.clone(), c.members, c.rate)),
        }
    }
    for (backend, members, rate) in best {
        let _ = writeln!(out, "- {backend}, {members} member(s): kept up with {rate} heartbeats/s");
    }
    let _ = writeln!(out, "{END}");
    out
}
