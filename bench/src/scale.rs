//! The API at fleet scale: a PostgreSQL database holding 100,000 amphorae
//! (50,000 ACTIVE_STANDBY load balancers), served by several API processes
//! with the clients spread over them. Ours: that many `amphora-controller
//! run --roles api` processes on one database; upstream: octavia 19.0.0's
//! API under gunicorn with as many sync workers, on the same engine with its
//! schema from its models and the same rows.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;

use crate::controller::{
    AMPHORAE, LBS, Server, Sides, load_average, postgres_database, run_time, seed, seed_upstream, settled_memory,
    splice_between, start_ours, start_upstream_api,
};
use crate::ingest::sqlalchemy_url;
use crate::load::{self, HttpClient, Throughput};
use crate::target::Memory;

#[derive(Debug, clap::Args)]
pub struct ScaleArgs {
    /// Amphorae seeded, two per ACTIVE_STANDBY load balancer.
    #[arg(long, default_value_t = 100_000)]
    pub amphorae: usize,
    /// API processes on each side (ours: controllers with the api role;
    /// upstream: gunicorn workers).
    #[arg(long, default_value_t = 3)]
    pub processes: usize,
    /// Seconds per cell (each client also makes a minimum of requests).
    #[arg(long, default_value_t = 5.0)]
    pub duration: f64,
    /// A PostgreSQL server URL whose role may CREATE DATABASE.
    #[arg(long)]
    pub postgres: String,
    #[command(flatten)]
    pub sides: Sides,
    /// The report; its API-at-scale section is replaced, the rest kept.
    #[arg(long, default_value = "bench/RESULTS.md")]
    pub output: PathBuf,
}

pub const BEGIN: &str = "<!-- api-scale-bench:begin -->";
pub const END: &str = "<!-- api-scale-bench:end -->";

/// One cell: what is requested, by how many clients (spread over the
/// processes), and the fewest requests each client makes.
struct Cell {
    label: String,
    paths: Arc<Vec<String>>,
    clients: usize,
    min_requests: usize,
}

#[derive(Debug, Default)]
struct Side {
    cells: Vec<(String, Option<Throughput>)>,
    memory: Option<Memory>,
    notes: Vec<String>,
}

pub fn main(args: &ScaleArgs) -> anyhow::Result<()> {
    anyhow::ensure!(args.processes > 0, "--processes must be at least 1");
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    let load_before = load_average();
    let started = time::OffsetDateTime::now_utc();
    let mut ours = None;
    let mut upstream = None;
    if args.sides.only.as_deref() != Some("upstream") {
        eprintln!("== ours: {} API processes on postgresql", args.processes);
        let side = runtime.block_on(measure(args, Kind::Ours));
        eprintln!("{side:#?}");
        ours = Some(side);
    }
    if args.sides.only.as_deref() != Some("ours") {
        eprintln!("== upstream: gunicorn with {} workers on postgresql", args.processes);
        let side = runtime.block_on(measure(args, Kind::Upstream));
        eprintln!("{side:#?}");
        upstream = Some(side);
    }
    let load_after = load_average();
    let section = render(args, ours.as_ref(), upstream.as_ref(), &load_before, &load_after, started);
    let previous = std::fs::read_to_string(&args.output).unwrap_or_default();
    std::fs::write(&args.output, splice_between(&previous, BEGIN, END, &section))?;
    println!("{section}");
    Ok(())
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Ours,
    Upstream,
}

async fn measure(args: &ScaleArgs, kind: Kind) -> Side {
    let mut side = Side::default();
    if let Err(e) = measure_inner(args, kind, &mut side).await {
        side.notes.push(format!("stopped early: {e:#}"));
    }
    side
}

async fn measure_inner(args: &ScaleArgs, kind: Kind, side: &mut Side) -> anyhow::Result<()> {
    let dir = tempfile::Builder::new().prefix("api-scale-bench.").tempdir()?;
    let url = postgres_database(&args.postgres).await?;
    let lbs = args.amphorae.div_ceil(2);
    let mut servers: Vec<Server> = Vec::new();
    let result = async {
        match kind {
            Kind::Ours => {
                let seeding = seed(&url, lbs, 2).await?;
                side.notes.push(format!(
                    "seeded {lbs} load balancers and {} amphorae in {:.1} s",
                    lbs * 2,
                    seeding.as_secs_f64()
                ));
                // The same rows as the controller sees them after a
                // VACUUM ANALYZE, which autovacuum would have run by now on
                // a database this old.
                analyze(&url).await?;
                let controller = std::fs::canonicalize(&args.sides.controller)?;
                for p in 0..args.processes {
                    let server = start_ours(&controller, dir.path(), &url, 0.0, &format!("api-{p}"), Some("api"))?;
                    servers.push(server);
                }
                for server in &mut servers {
                    server.wait_ready("/", Duration::from_secs(60)).await?;
                }
            }
            Kind::Upstream => {
                let upstream_dir = std::fs::canonicalize(&args.sides.upstream_dir)?;
                let seeding = seed_upstream(&args.sides.python, &upstream_dir, &sqlalchemy_url(&url), lbs, 2)?;
                side.notes.push(format!(
                    "schema from octavia.db.models (with MySQL's implicit foreign-key indexes), seeded {lbs} load \
                     balancers and {} amphorae in {:.1} s",
                    lbs * 2,
                    seeding.as_secs_f64()
                ));
                analyze(&url).await?;
                let connection = sqlalchemy_url(&url);
                servers.push(
                    start_upstream_api(&args.sides.python, &upstream_dir, dir.path(), &connection, args.processes)
                        .await?,
                );
            }
        }
        // Ours: one address per process. Upstream's gunicorn workers share
        // one socket and the kernel spreads the connections over them.
        let addrs: Vec<SocketAddr> = servers.iter().map(|s| s.addr).collect();
        let ids = first_page_ids(addrs[0]).await?;
        side.notes.push(format!("the default amphora page held {} rows", ids.len()));
        anyhow::ensure!(!ids.is_empty(), "no amphora listed");
        let duration = Duration::from_secs_f64(args.duration);
        for cell in cells(args.processes, &ids) {
            let result = load::run_http(&addrs, cell.paths.clone(), cell.clients, duration, cell.min_requests).await;
            eprintln!("{}: {result:?}", cell.label);
            if result.errors > 0 {
                side.notes.push(format!("{}: {} requests failed", cell.label, result.errors));
            }
            side.cells.push((cell.label, Some(result)));
        }
        let mut memory = Memory::default();
        for server in &servers {
            let m = settled_memory(server).await;
            memory.rss_kib += m.rss_kib;
            memory.pss_kib += m.pss_kib;
            memory.processes += m.processes;
        }
        side.memory = Some(memory);
        anyhow::Ok(())
    }
    .await;
    for server in servers {
        server.stop().await;
    }
    drop_database(&args.postgres, &url).await;
    result
}

/// The cells, the same for both sides.
fn cells(processes: usize, ids: &[String]) -> Vec<Cell> {
    let one = |p: &str| Arc::new(vec![p.to_owned()]);
    let shows = Arc::new(ids.iter().map(|id| format!("{AMPHORAE}/{id}")).collect::<Vec<_>>());
    let mut cells = Vec::new();
    for clients in [1, processes] {
        cells.push(Cell {
            label: format!("GET /v2/octavia/amphorae (default page), {clients} client(s)"),
            paths: one(AMPHORAE),
            clients,
            min_requests: 10,
        });
    }
    cells.push(Cell {
        label: format!("GET /v2/octavia/amphorae?limit=100, {processes} client(s)"),
        paths: one(&format!("{AMPHORAE}?limit=100")),
        clients: processes,
        min_requests: 20,
    });
    cells.push(Cell {
        label: format!("GET /v2/lbaas/loadbalancers (default page), {processes} client(s)"),
        paths: one(LBS),
        clients: processes,
        min_requests: 10,
    });
    for clients in [processes, 8 * processes] {
        cells.push(Cell {
            label: format!("GET /v2/octavia/amphorae/{{id}}, {clients} client(s)"),
            paths: shows.clone(),
            clients,
            min_requests: 20,
        });
    }
    cells
}

async fn first_page_ids(addr: SocketAddr) -> anyhow::Result<Vec<String>> {
    let reply = HttpClient::new(addr).request("GET", &format!("{AMPHORAE}?fields=id"), None).await?;
    anyhow::ensure!(reply.status == 200, "the amphora list answered {}", reply.status);
    let body: Value = serde_json::from_slice(&reply.body)?;
    Ok(body
        .get("amphorae")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|a| a.get("id")?.as_str().map(str::to_owned))
        .collect())
}

/// Statistics for the planner, as autovacuum would have gathered on a
/// database that grew to this size; the same for both sides.
async fn analyze(url: &str) -> anyhow::Result<()> {
    let mut conn = <sqlx::AnyConnection as sqlx::Connection>::connect(url).await?;
    sqlx::Executor::execute(&mut conn, "VACUUM ANALYZE").await?;
    Ok(())
}

async fn drop_database(server: &str, url: &str) {
    let Some(name) = url.rsplit('/').next() else { return };
    if let Ok(mut conn) = <sqlx::AnyConnection as sqlx::Connection>::connect(server).await {
        let _ = sqlx::Executor::execute(&mut conn, format!("DROP DATABASE IF EXISTS {name}").as_str()).await;
    }
}

fn render(
    args: &ScaleArgs,
    ours: Option<&Side>,
    upstream: Option<&Side>,
    load_before: &str,
    load_after: &str,
    started: time::OffsetDateTime,
) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "## Controller API at fleet scale (PostgreSQL, {} API processes)\n", args.processes);
    let _ = writeln!(
        out,
        "Run {}, `bench/run-api-scale.sh` (= `amphora-bench api-scale --amphorae {} --processes {} --duration {}`). \
         Load average (1, 5, 15 min) {load_before} before and {load_after} after.\n",
        run_time(started),
        args.amphorae,
        args.processes,
        args.duration,
    );
    let _ = writeln!(
        out,
        "One PostgreSQL server (Debian's, started by the script) holds {} ACTIVE_STANDBY load balancers with VIPs and \
         {} ALLOCATED amphorae, `VACUUM ANALYZE`d after seeding. Ours: {} release `amphora-controller run --roles api` \
         processes on that database, noauth, client `c` talking to process `c mod {}`. Upstream: octavia 19.0.0's API \
         (`octavia.api.app`) under gunicorn with {} sync workers on one socket, noauth, on its schema built from \
         `octavia.db.models` (plus the foreign-key indexes MySQL would make) with the same rows. The load generator, \
         both servers and PostgreSQL share the 2 cores. Each cell runs {} s and until every client made its minimum \
         (10 requests for the 1000-row pages, 20 for the rest); latencies are per request, body read whole.\n",
        args.amphorae.div_ceil(2),
        args.amphorae.div_ceil(2) * 2,
        args.processes,
        args.processes,
        args.processes,
        args.duration,
    );
    let _ = writeln!(out, "| measure | ours | upstream | ours / upstream |\n|---|---|---|---|");
    let mut labels: Vec<String> = Vec::new();
    for side in ours.iter().chain(upstream.iter()) {
        for (label, _) in &side.cells {
            if !labels.contains(label) {
                labels.push(label.clone());
            }
        }
    }
    let row = |out: &mut String, name: &str, get: &dyn Fn(&Side) -> Option<f64>, show: &dyn Fn(f64) -> String| {
        let o = ours.and_then(get);
        let u = upstream.and_then(get);
        let ratio = match (o, u) {
            (Some(o), Some(u)) if u > 0.0 => format!("{:.3}", o / u),
            _ => "n/a".into(),
        };
        let shown = |v: Option<f64>| v.map(show).unwrap_or_else(|| "n/a".into());
        let _ = writeln!(out, "| {name} | {} | {} | {ratio} |", shown(o), shown(u));
    };
    let ms = |v: f64| format!("{v:.1} ms");
    for label in &labels {
        let cell = |s: &Side| s.cells.iter().find(|(l, _)| l == label).and_then(|(_, t)| *t);
        row(&mut out, &format!("{label}: requests/s"), &|s| cell(s).map(|t| t.requests_per_second), &|v| {
            format!("{v:.1} /s")
        });
        row(&mut out, &format!("{label}: p50"), &|s| cell(s).map(|t| t.p50.as_secs_f64() * 1000.0), &ms);
        row(&mut out, &format!("{label}: p99"), &|s| cell(s).map(|t| t.p99.as_secs_f64() * 1000.0), &ms);
    }
    let mib = |v: f64| format!("{:.1} MiB", v / 1024.0);
    row(&mut out, "RSS after the run, all API processes", &|s| s.memory.map(|m| m.rss_kib as f64), &mib);
    row(&mut out, "PSS after the run, all API processes", &|s| s.memory.map(|m| m.pss_kib as f64), &mib);
    row(&mut out, "processes", &|s| s.memory.map(|m| m.processes as f64), &|v| format!("{v:.0}"));
    let _ = writeln!(out);
    for (name, side) in [("ours", ours), ("upstream", upstream)] {
        for note in side.iter().flat_map(|s| &s.notes) {
            let _ = writeln!(out, "- {name}: {note}");
        }
    }
    out
}
