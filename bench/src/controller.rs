//! The controller scenario: our controller (the release binary) and
//! upstream's API (octavia 19.0.0 under gunicorn) over databases seeded with
//! the same numbers of load balancers and amphorae, measured with the same
//! plain-HTTP load generator.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use amphora_controller::db::{Db, format_time};
use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use serde_json::Value;

use crate::load::{self, HttpClient, Throughput, percentile};
use crate::target::{Memory, process_tree_memory};

#[derive(Debug, clap::Args)]
pub struct ControllerArgs {
    /// Load balancers seeded (each ACTIVE, with a VIP).
    #[arg(long, default_value_t = 5000)]
    pub lbs: usize,
    /// Amphorae per seeded load balancer (ALLOCATED, MASTER and BACKUP).
    #[arg(long, default_value_t = 2)]
    pub amphorae_per_lb: usize,
    /// Seconds per latency or throughput cell.
    #[arg(long, default_value_t = 5.0)]
    pub duration: f64,
    /// Load balancers created in each create run.
    #[arg(long, default_value_t = 200)]
    pub creates: usize,
    /// Creates in flight at once.
    #[arg(long, default_value_t = 8)]
    pub create_concurrency: usize,
    /// A PostgreSQL server URL whose role may CREATE DATABASE; without it
    /// only SQLite is measured.
    #[arg(long)]
    pub postgres: Option<String>,
    #[command(flatten)]
    pub sides: Sides,
    /// The report; its controller section is replaced, the rest kept.
    #[arg(long, default_value = "bench/RESULTS.md")]
    pub output: PathBuf,
}

/// The two sides of an API benchmark: which to measure and where their
/// programs are.
#[derive(Debug, clap::Args)]
pub struct Sides {
    /// Measure only one side.
    #[arg(long, value_parser = ["ours", "upstream"])]
    pub only: Option<String>,
    #[arg(long, default_value = "target/release/amphora-controller")]
    pub controller: PathBuf,
    #[arg(long, default_value = "target/upstream-venv/bin/python")]
    pub python: PathBuf,
    #[arg(long, default_value = "bench/upstream")]
    pub upstream_dir: PathBuf,
}

/// Where the controller section starts and ends in RESULTS.md.
pub const BEGIN: &str = "<!-- controller-bench:begin -->";
pub const END: &str = "<!-- controller-bench:end -->";

#[derive(Debug, Default)]
struct Side {
    /// (label, result)
    cells: Vec<(String, Option<Throughput>)>,
    creates: Vec<(String, Option<Creates>)>,
    idle_start: Option<Memory>,
    idle_after: Option<Memory>,
    notes: Vec<String>,
}

#[derive(Debug, Clone, Copy)]
struct Creates {
    per_second: f64,
    p50: Duration,
    p99: Duration,
    failed: usize,
}

pub(crate) fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).expect("free port")
}

/// When a run started, as the reports print it: `2026-12-01 06:08:35 UTC`.
pub fn run_time(started: time::OffsetDateTime) -> String {
    let text = format_time(started).replace('T', " ");
    format!("{} UTC", text.split('.').next().unwrap_or_default())
}

pub fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

pub fn main(args: &ControllerArgs) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    let load_before = load_average();
    let started = time::OffsetDateTime::now_utc();
    let mut ours: Vec<(&'static str, Side)> = Vec::new();
    let mut upstream: Option<Side> = None;
    if args.sides.only.as_deref() != Some("upstream") {
        let controller = std::fs::canonicalize(&args.sides.controller)?;
        let mut backends = vec!["sqlite"];
        if args.postgres.is_some() {
            backends.push("postgresql");
        }
        for backend in backends {
            eprintln!("== ours on {backend}");
            let side = runtime.block_on(measure_ours(args, &controller, backend));
            eprintln!("{side:#?}");
            ours.push((backend, side));
        }
    }
    if args.sides.only.as_deref() != Some("ours") {
        eprintln!("== upstream on sqlite");
        let side = runtime.block_on(measure_upstream(args));
        eprintln!("{side:#?}");
        upstream = Some(side);
    }
    let load_after = load_average();
    let section = render(args, &ours, upstream.as_ref(), &load_before, &load_after, started);
    let previous = std::fs::read_to_string(&args.output).unwrap_or_default();
    std::fs::write(&args.output, splice(&previous, &section))?;
    println!("{section}");
    Ok(())
}

/// Replaces the controller section of `report` (or appends it).
pub fn splice(report: &str, section: &str) -> String {
    splice_between(report, BEGIN, END, section)
}

/// Replaces the section of `report` between the markers `begin` and `end`
/// (or appends it).
pub fn splice_between(report: &str, begin: &str, end: &str, section: &str) -> String {
    let block = format!("{begin}\n{}\n{end}\n", section.trim_end());
    match (report.find(begin), report.find(end)) {
        (Some(b), Some(e)) if e > b => {
            format!("{}{block}{}", &report[..b], report[e + end.len()..].trim_start_matches('\n'))
        }
        _ if report.is_empty() => block,
        _ => format!("{}\n\n{block}", report.trim_end()),
    }
}

/// The controller section of `report`, if any, to keep when the agent
/// benchmark rewrites the file.
pub fn existing_section(report: &str) -> Option<String> {
    section_between(report, BEGIN, END)
}

/// The section of `report` between `begin` and `end`, markers included.
pub fn section_between(report: &str, begin: &str, end: &str) -> Option<String> {
    let b = report.find(begin)?;
    let e = report.find(end)?;
    (e > b).then(|| report[b..e + end.len()].to_owned() + "\n")
}

// ---------------------------------------------------------------- seeding

/// The values every seeded row is made of, the same for both sides.
const PROJECTS: usize = 50;
const SUBNETS: usize = 50;

pub(crate) fn id() -> String {
    uuid::Uuid::new_v4().to_string()
}

pub(crate) enum Val {
    Text(Option<String>),
    Bool(bool),
    Int(Option<i64>),
}

pub(crate) fn t(s: impl Into<String>) -> Val {
    Val::Text(Some(s.into()))
}

pub(crate) const LB_COLUMNS: &[&str] = &[
    "id",
    "project_id",
    "name",
    "description",
    "provisioning_status",
    "operating_status",
    "enabled",
    "topology",
    "server_group_id",
    "provider",
    "vip_address",
    "vip_port_id",
    "vip_subnet_id",
    "vip_network_id",
    "tags",
    "created_at",
    "updated_at",
];

pub(crate) const AMPHORA_COLUMNS: &[&str] = &[
    "id",
    "load_balancer_id",
    "compute_id",
    "lb_network_ip",
    "vrrp_ip",
    "ha_ip",
    "vrrp_port_id",
    "ha_port_id",
    "cert_expiration",
    "cert_busy",
    "role",
    "status",
    "vrrp_interface",
    "vrrp_id",
    "vrrp_priority",
    "cached_zone",
    "image_id",
    "compute_flavor",
    "created_at",
    "updated_at",
];

pub(crate) async fn insert_batch(db: &Db, table: &str, columns: &[&str], rows: Vec<Vec<Val>>) -> anyhow::Result<()> {
    if rows.is_empty() {
        return Ok(());
    }
    let mut sql = format!("INSERT INTO {table} ({}) VALUES ", columns.join(", "));
    let mut n = 0;
    for (r, _) in rows.iter().enumerate() {
        if r > 0 {
            sql.push_str(", ");
        }
        sql.push('(');
        for c in 0..columns.len() {
            n += 1;
            if c > 0 {
                sql.push_str(", ");
            }
            let _ = write!(sql, "${n}");
        }
        sql.push(')');
    }
    let mut query = sqlx::query(&sql);
    for row in rows {
        for v in row {
            query = match v {
                Val::Text(s) => query.bind(s),
                Val::Bool(b) => query.bind(b),
                Val::Int(i) => query.bind(i),
            };
        }
    }
    let mut tx = db.write().await?;
    query.execute(&mut **tx).await?;
    tx.commit().await?;
    Ok(())
}

/// Seeds `lbs` ACTIVE load balancers with VIPs and `per_lb` ALLOCATED
/// amphorae each through the controller's own schema.
pub(crate) async fn seed(url: &str, lbs: usize, per_lb: usize) -> anyhow::Result<Duration> {
    let started = Instant::now();
    let db = Db::open(url).await?;
    let projects: Vec<String> = (0..PROJECTS).map(|_| uuid::Uuid::new_v4().simple().to_string()).collect();
    let subnets: Vec<(String, String)> = (0..SUBNETS).map(|_| (id(), id())).collect();
    let base = time::OffsetDateTime::now_utc() - time::Duration::days(30);
    const BATCH: usize = 250;
    let mut lb_rows = Vec::new();
    let mut amp_rows = Vec::new();
    for i in 0..lbs {
        let lb_id = id();
        let created = base + time::Duration::seconds(i as i64 * 7);
        let (subnet, network) = &subnets[i % SUBNETS];
        let vip = format!("10.{}.{}.{}", (i / 62500) % 128, (i / 250) % 250, i % 250 + 1);
        let vip_port = id();
        lb_rows.push(vec![
            t(lb_id.clone()),
            t(projects[i % PROJECTS].clone()),
            t(format!("lb-{i}")),
            t("benchmark load balancer"),
            t("ACTIVE"),
            t("ONLINE"),
            Val::Bool(true),
            t(if per_lb == 2 { "ACTIVE_STANDBY" } else { "SINGLE" }),
            t(id()),
            t("amphora"),
            t(vip.clone()),
            t(vip_port.clone()),
            t(subnet.clone()),
            t(network.clone()),
            t("[]"),
            t(format_time(created)),
            t(format_time(created + time::Duration::seconds(40))),
        ]);
        for a in 0..per_lb {
            let n = i * per_lb + a;
            let (role, priority) = match (per_lb, a) {
                (1, _) => ("STANDALONE", None),
                (_, 0) => ("MASTER", Some(100)),
                _ => ("BACKUP", Some(90)),
            };
            amp_rows.push(vec![
                t(id()),
                t(lb_id.clone()),
                t(id()),
                t(format!("192.168.{}.{}", (n / 250) % 256, n % 250 + 2)),
                t(format!("10.{}.{}.{}", 128 + (n / 65536) % 128, (n / 256) % 256, n % 256)),
                t(vip.clone()),
                t(id()),
                t(vip_port.clone()),
                t(format_time(created + time::Duration::days(730))),
                Val::Bool(false),
                t(role),
                t("ALLOCATED"),
                t("eth1"),
                Val::Int(priority.map(|_| 1)),
                Val::Int(priority),
                t("nova"),
                t(id()),
                t(id()),
                t(format_time(created + time::Duration::seconds(a as i64))),
                t(format_time(created + time::Duration::seconds(35))),
            ]);
        }
        if lb_rows.len() == BATCH || i + 1 == lbs {
            insert_batch(&db, "load_balancer", LB_COLUMNS, std::mem::take(&mut lb_rows)).await?;
            while !amp_rows.is_empty() {
                let rest = amp_rows.split_off(amp_rows.len().min(BATCH));
                let rows = std::mem::replace(&mut amp_rows, rest);
                insert_batch(&db, "amphora", AMPHORA_COLUMNS, rows).await?;
            }
        }
    }
    db.pool.close().await;
    Ok(started.elapsed())
}

pub(crate) async fn postgres_database(server: &str) -> anyhow::Result<String> {
    sqlx::any::install_default_drivers();
    let name = format!("bench_{}", uuid::Uuid::new_v4().simple());
    let mut conn = <sqlx::AnyConnection as sqlx::Connection>::connect(server).await?;
    sqlx::Executor::execute(&mut conn, format!("CREATE DATABASE {name}").as_str()).await?;
    let base = server.rsplit_once('/').map(|(b, _)| b).unwrap_or(server);
    Ok(format!("{base}/{name}"))
}

// ---------------------------------------------------------------- processes

/// A server under test in its own process group.
#[derive(Debug)]
pub(crate) struct Server {
    child: Child,
    pub(crate) addr: SocketAddr,
    log: PathBuf,
}

impl Server {
    fn spawn(mut command: Command, addr: SocketAddr, log: PathBuf) -> anyhow::Result<Server> {
        let file = std::fs::File::create(&log)?;
        command.stdin(Stdio::null()).stdout(file.try_clone()?).stderr(file).process_group(0);
        Ok(Server { child: command.spawn()?, addr, log })
    }

    fn logs(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let tail: Vec<&str> = text.lines().rev().take(30).collect();
        tail.into_iter().rev().collect::<Vec<_>>().join("\n")
    }

    /// Polls `path` until it answers 200.
    pub(crate) async fn wait_ready(&mut self, path: &str, timeout: Duration) -> anyhow::Result<Duration> {
        let started = Instant::now();
        loop {
            if let Ok(reply) = HttpClient::new(self.addr).request("GET", path, None).await
                && reply.status == 200
            {
                return Ok(started.elapsed());
            }
            if let Some(status) = self.child.try_wait()? {
                anyhow::bail!("exited with {status}:\n{}", self.logs());
            }
            if started.elapsed() > timeout {
                anyhow::bail!("not ready after {timeout:?}:\n{}", self.logs());
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    pub(crate) fn memory(&self) -> Memory {
        process_tree_memory(self.child.id() as i32)
    }

    pub(crate) async fn stop(mut self) {
        let pgid = Pid::from_raw(self.child.id() as i32);
        let _ = killpg(pgid, Signal::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let _ = killpg(pgid, Signal::SIGKILL);
        let _ = self.child.wait();
        if let Some(dir) = std::env::var_os("BENCH_KEEP_LOGS") {
            let name = self.log.file_name().map(|n| n.to_owned()).unwrap_or_default();
            let _ = std::fs::copy(&self.log, PathBuf::from(dir).join(name));
        }
    }
}

/// Our controller on `url`, running `roles` (comma-separated; all of them
/// when `None`).
pub(crate) fn start_ours(
    controller: &Path,
    dir: &Path,
    url: &str,
    step_delay: f64,
    tag: &str,
    roles: Option<&str>,
) -> anyhow::Result<Server> {
    let port = free_port();
    let config = format!(
        "[api_settings]\nauth_strategy = noauth\nbind_host = 127.0.0.1\nbind_port = {port}\n\n\
         [database]\nconnection = {url}\n\n\
         [health_manager]\nbind_ip = 127.0.0.1\nbind_port = {hm}\n\n\
         [noop_drivers]\nstep_delay = {step_delay}\n",
        hm = free_port(),
    );
    let path = dir.join(format!("octavia-{tag}.conf"));
    std::fs::write(&path, config)?;
    let mut command = Command::new(controller);
    command.arg("--config-file").arg(&path).arg("run");
    if let Some(roles) = roles {
        command.arg("--roles").arg(roles);
    }
    Server::spawn(command, SocketAddr::from(([127, 0, 0, 1], port)), dir.join(format!("controller-{tag}.log")))
}

/// Idle memory once the process has settled.
pub(crate) async fn settled_memory(server: &Server) -> Memory {
    tokio::time::sleep(Duration::from_secs(2)).await;
    server.memory()
}

// ---------------------------------------------------------------- measuring

pub(crate) const AMPHORAE: &str = "/v2/octavia/amphorae";
pub(crate) const LBS: &str = "/v2/lbaas/loadbalancers";

/// The list and show cells, the same for both sides.
/// Whether the load-balancer API answered.
async fn measure_reads(side: &mut Side, addr: SocketAddr, duration: Duration) -> bool {
    // The ids to show: the first page's.
    let ids: Vec<String> = match HttpClient::new(addr).request("GET", &format!("{AMPHORAE}?fields=id"), None).await {
        Ok(reply) if reply.status == 200 => serde_json::from_slice::<Value>(&reply.body)
            .ok()
            .and_then(|v| v.get("amphorae")?.as_array().cloned())
            .unwrap_or_default()
            .iter()
            .filter_map(|a| a.get("id")?.as_str().map(str::to_owned))
            .collect(),
        Ok(reply) => {
            side.notes.push(format!("amphora list answered {}", reply.status));
            Vec::new()
        }
        Err(e) => {
            side.notes.push(format!("amphora list failed: {e:#}"));
            Vec::new()
        }
    };
    side.notes.push(format!("the default amphora page held {} rows", ids.len()));
    let lb_page = HttpClient::new(addr).request("GET", LBS, None).await;
    let lb_rows = lb_page
        .as_ref()
        .ok()
        .filter(|r| r.status == 200)
        .and_then(|r| serde_json::from_slice::<Value>(&r.body).ok())
        .and_then(|v| v.get("loadbalancers")?.as_array().map(Vec::len));
    match (&lb_page, lb_rows) {
        (_, Some(n)) => side.notes.push(format!("the default load balancer page held {n} rows")),
        (Ok(r), None) => side.notes.push(format!("GET {LBS} answered {}: not measured", r.status)),
        (Err(e), None) => side.notes.push(format!("GET {LBS} failed: {e:#}")),
    }
    let one = |p: &str| Arc::new(vec![p.to_owned()]);
    let cells: Vec<(&str, Arc<Vec<String>>, usize, usize)> = vec![
        ("GET /v2/octavia/amphorae (default page), 1 client", one(AMPHORAE), 1, 50),
        ("GET /v2/octavia/amphorae?limit=100, 1 client", one(&format!("{AMPHORAE}?limit=100")), 1, 200),
        ("GET /v2/lbaas/loadbalancers (default page), 1 client", one(LBS), 1, 50),
    ];
    for (label, paths, clients, min) in cells {
        let result = if label.contains("lbaas") && lb_rows.is_none() {
            None
        } else {
            Some(load::run_http(&[addr], paths, clients, duration, min).await)
        };
        eprintln!("{label}: {result:?}");
        side.cells.push((label.to_owned(), result));
    }
    if ids.is_empty() {
        return lb_rows.is_some();
    }
    let shows = Arc::new(ids.iter().map(|id| format!("{AMPHORAE}/{id}")).collect::<Vec<_>>());
    for clients in [1, 8] {
        let result = load::run_http(&[addr], shows.clone(), clients, duration, 20).await;
        let label = format!("GET /v2/octavia/amphorae/{{id}}, {clients} client(s)");
        eprintln!("{label}: {result:?}");
        side.cells.push((label, Some(result)));
    }
    lb_rows.is_some()
}

/// Creates `n` load balancers, `concurrency` at a time, each polled until
/// ACTIVE before its client creates the next.
async fn measure_creates(addr: SocketAddr, n: usize, concurrency: usize) -> anyhow::Result<Creates> {
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..concurrency {
        let next = next.clone();
        tasks.push(tokio::spawn(async move {
            let mut client = HttpClient::new(addr);
            let mut times = Vec::new();
            let mut failed = 0usize;
            while next.fetch_add(1, Ordering::Relaxed) < n {
                let t0 = Instant::now();
                let body = serde_json::json!({"loadbalancer": {
                    "name": "bench-create", "vip_subnet_id": uuid::Uuid::new_v4().to_string()}})
                .to_string();
                let id = match client.request("POST", LBS, Some(&body)).await {
                    Ok(reply) if reply.status == 201 => serde_json::from_slice::<Value>(&reply.body)
                        .ok()
                        .and_then(|v| v.pointer("/loadbalancer/id")?.as_str().map(str::to_owned)),
                    Ok(reply) => {
                        eprintln!("create answered {}: {}", reply.status, String::from_utf8_lossy(&reply.body));
                        None
                    }
                    Err(e) => {
                        eprintln!("create failed: {e:#}");
                        None
                    }
                };
                let Some(id) = id else {
                    failed += 1;
                    continue;
                };
                let path = format!("{LBS}/{id}");
                let deadline = Instant::now() + Duration::from_secs(120);
                let mut active = false;
                while Instant::now() < deadline {
                    if let Ok(reply) = client.request("GET", &path, None).await
                        && let Ok(v) = serde_json::from_slice::<Value>(&reply.body)
                    {
                        match v.pointer("/loadbalancer/provisioning_status").and_then(Value::as_str) {
                            Some("ACTIVE") => {
                                active = true;
                                break;
                            }
                            Some("ERROR") => break,
                            _ => {}
                        }
                    }
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
                if active {
                    times.push(t0.elapsed());
                } else {
                    failed += 1;
                }
            }
            (times, failed)
        }));
    }
    let mut times = Vec::new();
    let mut failed = 0;
    for task in tasks {
        let (t, f) = task.await?;
        times.extend(t);
        failed += f;
    }
    let elapsed = started.elapsed().as_secs_f64();
    times.sort();
    if times.is_empty() {
        anyhow::bail!("no load balancer reached ACTIVE ({failed} failed)");
    }
    Ok(Creates {
        per_second: times.len() as f64 / elapsed,
        p50: percentile(&times, 0.5),
        p99: percentile(&times, 0.99),
        failed,
    })
}

/// Marks the load balancers (and amphorae) a create run made DELETED: the
/// noop network driver hands out VIPs from one /24 (253 addresses) among
/// live load balancers, so two runs of 200 would run out.
async fn retire_created(url: &str) -> anyhow::Result<()> {
    let db = Db::connect(url).await?;
    let mut tx = db.write().await?;
    sqlx::query(
        "UPDATE amphora SET status = 'DELETED' WHERE load_balancer_id IN \
         (SELECT id FROM load_balancer WHERE name = 'bench-create')",
    )
    .execute(&mut **tx)
    .await?;
    sqlx::query("UPDATE load_balancer SET provisioning_status = 'DELETED' WHERE name = 'bench-create'")
        .execute(&mut **tx)
        .await?;
    tx.commit().await?;
    db.pool.close().await;
    Ok(())
}

async fn measure_ours(args: &ControllerArgs, controller: &Path, backend: &str) -> Side {
    let mut side = Side::default();
    if let Err(e) = ours_inner(args, controller, backend, &mut side).await {
        side.notes.push(format!("stopped early: {e:#}"));
    }
    side
}

async fn ours_inner(args: &ControllerArgs, controller: &Path, backend: &str, side: &mut Side) -> anyhow::Result<()> {
    let dir = tempfile::Builder::new().prefix("controller-bench.").tempdir()?;
    let url = match backend {
        "sqlite" => format!("sqlite:///{}/octavia.db", dir.path().display()),
        _ => postgres_database(args.postgres.as_deref().unwrap_or_default()).await?,
    };
    let seeding = seed(&url, args.lbs, args.amphorae_per_lb).await?;
    side.notes.push(format!(
        "seeded {} load balancers and {} amphorae in {:.1} s",
        args.lbs,
        args.lbs * args.amphorae_per_lb,
        seeding.as_secs_f64()
    ));
    let duration = Duration::from_secs_f64(args.duration);
    let mut server = start_ours(controller, dir.path(), &url, 0.0, backend, None)?;
    let ready = server.wait_ready("/", Duration::from_secs(60)).await;
    if let Err(e) = ready {
        server.stop().await;
        return Err(e);
    }
    side.idle_start = Some(settled_memory(&server).await);
    if !measure_reads(side, server.addr, duration).await {
        side.idle_after = Some(settled_memory(&server).await);
        server.stop().await;
        side.notes.push("no load-balancer API in this build: creates not measured".into());
        return Ok(());
    }
    for (delay, tag) in [(0.0, "0"), (0.05, "0.05")] {
        if delay > 0.0 {
            server.stop().await;
            retire_created(&url).await?;
            server = start_ours(controller, dir.path(), &url, delay, &format!("{backend}-{tag}"), None)?;
            server.wait_ready("/", Duration::from_secs(60)).await?;
        }
        let label = format!(
            "load balancers created per second until ACTIVE ({} creates, {} at once, noop step_delay {tag} s)",
            args.creates, args.create_concurrency
        );
        let result = measure_creates(server.addr, args.creates, args.create_concurrency).await;
        eprintln!("{label}: {result:?}");
        match &result {
            Ok(c) if c.failed > 0 => side.notes.push(format!("{} creates with step_delay {tag} s failed", c.failed)),
            Ok(_) => {}
            Err(e) => side.notes.push(format!("creates with step_delay {tag} s: {e:#}")),
        }
        side.creates.push((label, result.ok()));
        if delay == 0.0 {
            side.idle_after = Some(settled_memory(&server).await);
        }
    }
    server.stop().await;
    Ok(())
}

async fn measure_upstream(args: &ControllerArgs) -> Side {
    let mut side = Side::default();
    if let Err(e) = upstream_inner(args, &mut side).await {
        side.notes.push(format!("stopped early: {e:#}"));
    }
    side
}

async fn upstream_inner(args: &ControllerArgs, side: &mut Side) -> anyhow::Result<()> {
    let dir = tempfile::Builder::new().prefix("controller-bench-upstream.").tempdir()?;
    let upstream_dir = std::fs::canonicalize(&args.sides.upstream_dir)?;
    let db = dir.path().join("octavia.db");
    let seeding =
        seed_upstream(&args.sides.python, &upstream_dir, &db.to_string_lossy(), args.lbs, args.amphorae_per_lb)?;
    side.notes.push(format!(
        "schema from octavia.db.models, seeded {} load balancers and {} amphorae in {:.1} s",
        args.lbs,
        args.lbs * args.amphorae_per_lb,
        seeding.as_secs_f64()
    ));
    let connection = format!("sqlite:///{}", db.display());
    let server = start_upstream_api(&args.sides.python, &upstream_dir, dir.path(), &connection, 2).await?;
    side.idle_start = Some(settled_memory(&server).await);
    let _ = measure_reads(side, server.addr, Duration::from_secs_f64(args.duration)).await;
    side.idle_after = Some(settled_memory(&server).await);
    server.stop().await;
    Ok(())
}

/// Builds upstream's schema from its models in `db` (a SQLite file or a
/// SQLAlchemy URL) and seeds it as `seed` seeds ours.
pub(crate) fn seed_upstream(
    python: &Path,
    upstream_dir: &Path,
    db: &str,
    lbs: usize,
    per_lb: usize,
) -> anyhow::Result<Duration> {
    // Absolute but not resolved: the venv's python is a symlink.
    let python = std::path::absolute(python)?;
    let started = Instant::now();
    let status = Command::new(&python)
        .arg(upstream_dir.join("controller_db.py"))
        .arg("--db")
        .arg(db)
        .arg("--lbs")
        .arg(lbs.to_string())
        .arg("--amphorae-per-lb")
        .arg(per_lb.to_string())
        .status()?;
    anyhow::ensure!(status.success(), "seeding upstream's database failed: {status}");
    Ok(started.elapsed())
}

/// Upstream's API (octavia 19.0.0 under gunicorn with `workers` sync
/// workers, noauth, noop drivers) on the database at `connection`, warmed.
pub(crate) async fn start_upstream_api(
    python: &Path,
    upstream_dir: &Path,
    dir: &Path,
    connection: &str,
    workers: usize,
) -> anyhow::Result<Server> {
    let python = std::path::absolute(python)?;
    let port = free_port();
    // oslo.db's pool_timeout must be empty for SQLite's pool.
    let pool = if connection.starts_with("sqlite") { "pool_timeout =\n" } else { "" };
    let config = format!(
        "[DEFAULT]\ndebug = False\n\n\
         [api_settings]\nauth_strategy = noauth\nbind_host = 127.0.0.1\nbind_port = {port}\n\n\
         [database]\nconnection = {connection}\n{pool}\n\
         [task_flow]\njobboard_enabled = False\n\n\
         [controller_worker]\namphora_driver = amphora_noop_driver\ncompute_driver = compute_noop_driver\n\
         network_driver = network_noop_driver\n",
    );
    let conf = dir.join("octavia.conf");
    std::fs::write(&conf, config)?;
    let mut command = Command::new(&python);
    command
        .args(["-m", "gunicorn", "--workers", &workers.to_string(), "--bind"])
        .arg(format!("127.0.0.1:{port}"))
        .arg("--control-socket")
        .arg(dir.join("gunicorn.ctl"))
        .arg("--pythonpath")
        .arg(upstream_dir)
        .arg("octavia_api_wsgi:application")
        .env("OCTAVIA_API_CONFIG", &conf)
        .current_dir(dir);
    let mut server = Server::spawn(command, SocketAddr::from(([127, 0, 0, 1], port)), dir.join("upstream-api.log"))?;
    if let Err(e) = server.wait_ready("/", Duration::from_secs(180)).await {
        server.stop().await;
        return Err(e);
    }
    // The workers import lazily: warm each before measuring.
    for _ in 0..4 * workers {
        let _ = HttpClient::new(server.addr).request("GET", &format!("{AMPHORAE}?limit=1"), None).await;
    }
    Ok(server)
}

// ---------------------------------------------------------------- report

fn ratio(ours: Option<f64>, upstream: Option<f64>) -> String {
    match (ours, upstream) {
        (Some(o), Some(u)) if u > 0.0 => format!("{:.3}", o / u),
        _ => "n/a".into(),
    }
}

fn render(
    args: &ControllerArgs,
    ours: &[(&str, Side)],
    upstream: Option<&Side>,
    load_before: &str,
    load_after: &str,
    started: time::OffsetDateTime,
) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "## Controller\n");
    let _ = writeln!(
        out,
        "Run {}, `bench/run-controller.sh` (= `amphora-bench controller --lbs {} --amphorae-per-lb {} --duration {} \
         --creates {} --create-concurrency {}`). Load average (1, 5, 15 min) {load_before} before and {load_after} \
         after{}.\n",
        run_time(started),
        args.lbs,
        args.amphorae_per_lb,
        args.duration,
        args.creates,
        args.create_concurrency,
        // A 1-minute load under 1 before the run: nothing else was running.
        if load_before.split_whitespace().next().and_then(|l| l.parse::<f64>().ok()).is_some_and(|l| l < 1.0) {
            ": nothing else ran on the 2 cores"
        } else {
            ": the 2 cores were shared with other builds and test runs, so figures are pessimistic for both sides"
        },
    );
    let _ = writeln!(
        out,
        "Each database is seeded with {} ACTIVE load balancers with VIPs and {} ALLOCATED amphorae. Ours: the release \
         `amphora-controller` (all roles in one process, noauth, noop drivers) on SQLite and on PostgreSQL. Upstream: \
         octavia 19.0.0's API (`octavia.api.app`) under gunicorn with 2 sync workers, noauth, on SQLite with its schema \
         built from `octavia.db.models` and the same rows. Latencies are per request, body read whole, over one \
         kept-alive plain-HTTP connection per client (gunicorn's sync workers close every connection); each cell runs \
         {} s and at least 50 (lists) or 20 (shows) requests per client.\n",
        args.lbs,
        args.lbs * args.amphorae_per_lb,
        args.duration
    );
    let up = upstream;
    let mut header = String::from("| measure |");
    let mut rule = String::from("|---|");
    for (backend, _) in ours {
        let _ = write!(header, " ours, {backend} |");
        rule.push_str("---|");
    }
    if up.is_some() {
        header.push_str(" upstream, sqlite |");
        rule.push_str("---|");
        if ours.iter().any(|(b, _)| *b == "sqlite") {
            header.push_str(" ours / upstream (sqlite) |");
            rule.push_str("---|");
        }
    }
    let _ = writeln!(out, "{header}\n{rule}");
    let sqlite = ours.iter().find(|(b, _)| *b == "sqlite").map(|(_, s)| s);
    let row = |out: &mut String, name: &str, get: &dyn Fn(&Side) -> Option<f64>, show: &dyn Fn(f64) -> String| {
        let mut line = format!("| {name} |");
        for (_, side) in ours {
            let _ = write!(line, " {} |", get(side).map(show).unwrap_or_else(|| "n/a".into()));
        }
        if let Some(u) = up {
            let _ = write!(line, " {} |", get(u).map(show).unwrap_or_else(|| "n/a".into()));
            if let Some(s) = sqlite {
                let _ = write!(line, " {} |", ratio(get(s), get(u)));
            }
        }
        let _ = writeln!(out, "{line}");
    };
    let mut labels: Vec<String> = Vec::new();
    for side in ours.iter().map(|(_, s)| s).chain(up) {
        for (label, _) in &side.cells {
            if !labels.contains(label) {
                labels.push(label.clone());
            }
        }
    }
    let ms_f = |v: f64| format!("{v:.1} ms");
    for label in &labels {
        let cell = |s: &Side| s.cells.iter().find(|(l, _)| l == label).and_then(|(_, t)| *t);
        if label.contains("{id}") {
            row(&mut out, &format!("{label}: requests/s"), &|s| cell(s).map(|t| t.requests_per_second), &|v| {
                format!("{v:.0} /s")
            });
        }
        row(&mut out, &format!("{label}: p50"), &|s| cell(s).map(|t| t.p50.as_secs_f64() * 1000.0), &ms_f);
        row(&mut out, &format!("{label}: p99"), &|s| cell(s).map(|t| t.p99.as_secs_f64() * 1000.0), &ms_f);
    }
    let mut create_labels: Vec<String> = Vec::new();
    for (_, side) in ours {
        for (label, _) in &side.creates {
            if !create_labels.contains(label) {
                create_labels.push(label.clone());
            }
        }
    }
    for label in &create_labels {
        let cell = |s: &Side| s.creates.iter().find(|(l, _)| l == label).and_then(|(_, c)| *c);
        row(&mut out, label, &|s| cell(s).map(|c| c.per_second), &|v| format!("{v:.1} /s"));
        row(
            &mut out,
            &format!("{label}: time to ACTIVE p50"),
            &|s| cell(s).map(|c| c.p50.as_secs_f64() * 1000.0),
            &ms_f,
        );
        row(
            &mut out,
            &format!("{label}: time to ACTIVE p99"),
            &|s| cell(s).map(|c| c.p99.as_secs_f64() * 1000.0),
            &ms_f,
        );
    }
    let mib = |v: f64| format!("{:.1} MiB", v / 1024.0);
    row(&mut out, "idle RSS after start, all processes", &|s| s.idle_start.map(|m| m.rss_kib as f64), &mib);
    row(&mut out, "idle PSS after start, all processes", &|s| s.idle_start.map(|m| m.pss_kib as f64), &mib);
    row(&mut out, "idle RSS after the run, all processes", &|s| s.idle_after.map(|m| m.rss_kib as f64), &mib);
    row(&mut out, "idle PSS after the run, all processes", &|s| s.idle_after.map(|m| m.pss_kib as f64), &mib);
    row(&mut out, "processes", &|s| s.idle_start.map(|m| m.processes as f64), &|v| format!("{v:.0}"));
    let _ = writeln!(out);
    for (backend, side) in ours {
        for note in &side.notes {
            let _ = writeln!(out, "- ours, {backend}: {note}");
        }
    }
    if let Some(u) = up {
        for note in &u.notes {
            let _ = writeln!(out, "- upstream: {note}");
        }
    }
    if up.is_some() {
        let _ = writeln!(
            out,
            "- upstream, not re-measured in this run (it needs RabbitMQ and the worker): measured earlier on this \
             machine with octavia 19.0.0's API under gunicorn (2 workers), one worker, RabbitMQ, noop drivers, SQLite \
             and 2,000 load balancers: 3.4 load balancers/s to ACTIVE, 634 MiB idle across its processes (API, \
             worker, RabbitMQ)."
        );
    }
    out
}
