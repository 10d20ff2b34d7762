//! `amphora-bench agent-hot`: what the agent's hot paths cost, for two
//! builds of our agent measured in the same run (e.g. before and after a
//! change):
//!
//! - agent CPU time per kept-alive `GET /1.0/info` and `GET /1.0/details`
//!   (the agent process's utime + stime from `/proc/PID/stat`, all threads,
//!   over every request of the run, divided by the requests);
//! - `GET /1.0/info` latency on a single-worker runtime (what a 1-vCPU
//!   amphora gets: `TOKIO_WORKER_THREADS=1`), first quiet, then while
//!   configuration PUTs, reloads, certificate PUTs and 1-second heartbeats
//!   run (each a durable write or two, fsyncs included): anything that
//!   blocks the one worker shows up in the p99.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use amphora_testkit::AgentClient;
use bytes::Bytes;

use crate::load::{self, Throughput, median};
use crate::scenario::large_config;
use crate::target::{Kind, LaunchOptions, Launchers, Target, request};

#[derive(Debug, clap::Args)]
pub struct HotArgs {
    /// The agent binaries to compare, as LABEL=PATH (e.g.
    /// before=/tmp/agent-before after=target/release/amphora-agent).
    #[arg(required = true)]
    pub agents: Vec<String>,
    /// Repetitions of each CPU measurement (the median is reported).
    #[arg(long, default_value_t = 3)]
    pub rounds: usize,
    /// Seconds per CPU measurement.
    #[arg(long, default_value_t = 5.0)]
    pub cpu_duration: f64,
    /// Clients in the CPU measurement (each on one kept-alive connection).
    #[arg(long, default_value_t = 4)]
    pub clients: usize,
    /// Seconds of each latency measurement on the single-worker runtime.
    #[arg(long, default_value_t = 10.0)]
    pub latency_duration: f64,
    /// Listeners in the configuration PUT over and over under load.
    #[arg(long, default_value_t = 20)]
    pub listeners: usize,
    /// The report; its agent-hot section is replaced, the rest kept.
    #[arg(long, default_value = "bench/RESULTS.md")]
    pub output: PathBuf,
}

pub const BEGIN: &str = "<!-- agent-hot-bench:begin -->";
pub const END: &str = "<!-- agent-hot-bench:end -->";

const LB: &str = "d2c4b3a1-6f5e-4b7a-9c8d-1f0e3b2a5c4d";

#[derive(Debug, Default)]
struct Figures {
    /// Per path: (µs per request, user share of it).
    cpu_per_request: Vec<(&'static str, f64, f64)>,
    quiet: Option<Throughput>,
    loaded: Option<Throughput>,
    /// (configuration PUTs, reloads, certificate PUTs) done during the
    /// loaded measurement.
    mutations: (u64, u64, u64),
    notes: Vec<String>,
}

pub fn main(args: &HotArgs) -> anyhow::Result<()> {
    let mut agents = Vec::new();
    for spec in &args.agents {
        let (label, path) = spec.split_once('=').ok_or_else(|| anyhow::anyhow!("expected LABEL=PATH, got {spec}"))?;
        agents.push((label.to_owned(), std::fs::canonicalize(path)?));
    }
    let load_before = crate::controller::load_average();
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    let mut results = Vec::new();
    for (label, binary) in &agents {
        eprintln!("== measuring {label} ({})", binary.display());
        let figures = runtime.block_on(measure(binary, args));
        eprintln!("{figures:#?}");
        results.push((label.clone(), figures));
    }
    let section = render(args, &results, &load_before, &crate::controller::load_average());
    let previous = std::fs::read_to_string(&args.output).unwrap_or_default();
    std::fs::write(&args.output, crate::controller::splice_between(&previous, BEGIN, END, &section))?;
    println!("{section}");
    Ok(())
}

fn launchers(binary: &std::path::Path) -> Launchers {
    Launchers { ours: binary.to_owned(), python: PathBuf::new(), upstream_launcher: PathBuf::new() }
}

async fn measure(binary: &std::path::Path, args: &HotArgs) -> Figures {
    let mut figures = Figures::default();
    if let Err(e) = cpu_per_request(binary, args, &mut figures).await {
        figures.notes.push(format!("CPU per request: {e:#}"));
    }
    if let Err(e) = single_worker_latency(binary, args, &mut figures).await {
        figures.notes.push(format!("single-worker latency: {e:#}"));
    }
    figures
}

/// utime + stime of a process, in seconds.
pub(crate) fn cpu_seconds(pid: i32) -> anyhow::Result<(f64, f64)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    let (_, rest) = stat.rsplit_once(')').ok_or_else(|| anyhow::anyhow!("malformed /proc/{pid}/stat"))?;
    // After the command: state is field 3, utime 14, stime 15.
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let tick = nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)?.unwrap_or(100) as f64;
    let utime: f64 = fields.get(11).ok_or_else(|| anyhow::anyhow!("no utime"))?.parse()?;
    let stime: f64 = fields.get(12).ok_or_else(|| anyhow::anyhow!("no stime"))?.parse()?;
    Ok((utime / tick, stime / tick))
}

async fn cpu_per_request(binary: &std::path::Path, args: &HotArgs, figures: &mut Figures) -> anyhow::Result<()> {
    let mut target = Target::launch_with(Kind::Ours, &launchers(binary), &LaunchOptions::default())?;
    let client = target.client();
    target.wait_ready(Duration::from_secs(60)).await?;
    for path in ["/1.0/info", "/1.0/details"] {
        // Warm up: connections, caches, the sampler's first reading.
        for _ in 0..200 {
            request(&client, "GET", path, Bytes::new()).await?;
        }
        let mut per_request = Vec::new();
        let mut user_share = Vec::new();
        for _ in 0..args.rounds {
            let clients: Vec<Arc<AgentClient>> = (0..args.clients).map(|_| Arc::new(target.client())).collect();
            // Open every connection before the clock starts: the handshake
            // is not part of a kept-alive request.
            for c in &clients {
                request(c, "GET", path, Bytes::new()).await?;
            }
            let (user0, system0) = cpu_seconds(target.pid())?;
            let result = load::run_with(clients, path, Duration::from_secs_f64(args.cpu_duration)).await;
            let (user1, system1) = cpu_seconds(target.pid())?;
            anyhow::ensure!(result.errors == 0, "GET {path}: {} failed requests", result.errors);
            let requests = result.requests as f64;
            let (user, system) = (user1 - user0, system1 - system0);
            per_request.push((user + system) / requests * 1e6);
            user_share.push(if user + system > 0.0 { user / (user + system) } else { f64::NAN });
        }
        figures.cpu_per_request.push((path, median(&mut per_request), median(&mut user_share)));
    }
    target.stop(&client, &[]).await;
    Ok(())
}

async fn put(client: &AgentClient, path: &str, body: String) -> anyhow::Result<()> {
    let reply = request(client, "PUT", path, Bytes::from(body)).await?;
    anyhow::ensure!(reply.status == 202, "PUT {path}: {} {}", reply.status, reply.text());
    Ok(())
}

async fn single_worker_latency(binary: &std::path::Path, args: &HotArgs, figures: &mut Figures) -> anyhow::Result<()> {
    let options = LaunchOptions { binary: None, worker_threads: Some(1), heartbeat_interval: 1 };
    let mut target = Target::launch_with(Kind::Ours, &launchers(binary), &options)?;
    let client = target.client();
    target.wait_ready(Duration::from_secs(60)).await?;
    let result = async {
        let upload = target.upload_path(LB);
        put(&client, &upload, large_config(&target, args.listeners, 1)).await?;
        put(&client, &format!("/1.0/loadbalancer/{LB}/start"), String::new()).await?;
        let duration = Duration::from_secs_f64(args.latency_duration);
        let one = || vec![Arc::new(target.client())];
        figures.quiet = Some(load::run_with(one(), "/1.0/info", duration).await);

        let stop = Arc::new(AtomicBool::new(false));
        let (puts, reloads, certs) =
            (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
        // Alternating versions: each PUT changes the stored configuration.
        let configs: Vec<String> = (2..10).map(|version| large_config(&target, args.listeners, version)).collect();
        let putter = {
            let (stop, puts, client, upload) = (stop.clone(), puts.clone(), target.client(), upload.clone());
            tokio::spawn(async move {
                let mut i = 0;
                while !stop.load(Ordering::Relaxed) {
                    put(&client, &upload, configs[i % configs.len()].clone()).await?;
                    puts.fetch_add(1, Ordering::Relaxed);
                    i += 1;
                }
                anyhow::Ok(())
            })
        };
        let reloader = {
            let (stop, reloads, client) = (stop.clone(), reloads.clone(), target.client());
            tokio::spawn(async move {
                while !stop.load(Ordering::Relaxed) {
                    put(&client, &format!("/1.0/loadbalancer/{LB}/reload"), String::new()).await?;
                    reloads.fetch_add(1, Ordering::Relaxed);
                }
                anyhow::Ok(())
            })
        };
        let certifier = {
            let (stop, certs, client) = (stop.clone(), certs.clone(), target.client());
            let pem = target.pki.server.combined_pem();
            tokio::spawn(async move {
                let path = amphora_proto::paths::v1::lb_certificate(LB, "bench.pem");
                while !stop.load(Ordering::Relaxed) {
                    let reply = request(&client, "PUT", &path, Bytes::from(pem.clone())).await?;
                    anyhow::ensure!(reply.status == 200, "PUT {path}: {} {}", reply.status, reply.text());
                    certs.fetch_add(1, Ordering::Relaxed);
                }
                anyhow::Ok(())
            })
        };
        figures.loaded = Some(load::run_with(one(), "/1.0/info", duration).await);
        stop.store(true, Ordering::Relaxed);
        putter.await??;
        reloader.await??;
        certifier.await??;
        figures.mutations =
            (puts.load(Ordering::Relaxed), reloads.load(Ordering::Relaxed), certs.load(Ordering::Relaxed));
        anyhow::Ok(())
    }
    .await;
    target.stop(&client, &[LB]).await;
    result
}

fn render(args: &HotArgs, results: &[(String, Figures)], load_before: &str, load_after: &str) -> String {
    let now = crate::controller::run_time(time::OffsetDateTime::now_utc());
    let labels: Vec<&str> = results.iter().map(|(l, _)| l.as_str()).collect();
    let mut out = String::new();
    out.push_str("## Agent hot paths\n\n");
    out.push_str(&format!(
        "Run {now}, `amphora-bench agent-hot {}` (rounds {}, {} s per CPU cell with {} kept-alive clients, \
         {} s per latency cell, {} listeners per configuration PUT). Load average (1, 5, 15 min) {load_before} before \
         and {load_after} after.\n\n",
        args.agents.join(" "),
        args.rounds,
        args.cpu_duration,
        args.clients,
        args.latency_duration,
        args.listeners,
    ));
    out.push_str(&format!("| measure | {} | target |\n|---|{}---|\n", labels.join(" | "), "---|".repeat(labels.len())));
    let mut row = |name: String, target: &str, get: &dyn Fn(&Figures) -> Option<String>| {
        let cells: Vec<String> = results.iter().map(|(_, f)| get(f).unwrap_or_else(|| "n/a".into())).collect();
        out.push_str(&format!("| {name} | {} | {target} |\n", cells.join(" | ")));
    };
    for (path, target) in [("/1.0/info", "≤ 15 µs"), ("/1.0/details", "≤ 30 µs")] {
        row(format!("agent CPU per kept-alive GET {path} (median of rounds; user share)"), target, &|f| {
            f.cpu_per_request
                .iter()
                .find(|(p, _, _)| *p == path)
                .map(|(_, us, user)| format!("{us:.1} µs ({:.0} % user)", user * 100.0))
        });
    }
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    for (name, pick) in [
        ("quiet", (|f: &Figures| f.quiet) as fn(&Figures) -> Option<Throughput>),
        ("while configuration PUTs, reloads, certificate PUTs and heartbeats run", |f: &Figures| f.loaded),
    ] {
        row(format!("single-worker runtime, 1 client, GET /1.0/info {name}: p50"), "", &|f| {
            pick(f).map(|t| format!("{:.2} ms", ms(t.p50)))
        });
        row(format!("single-worker runtime, 1 client, GET /1.0/info {name}: p99"), "", &|f| {
            pick(f).map(|t| format!("{:.2} ms", ms(t.p99)))
        });
        row(format!("single-worker runtime, 1 client, GET /1.0/info {name}: max"), "", &|f| {
            pick(f).map(|t| format!("{:.2} ms", ms(t.max)))
        });
        row(format!("single-worker runtime, 1 client, GET /1.0/info {name}: requests/s"), "", &|f| {
            pick(f).map(|t| format!("{:.0} /s", t.requests_per_second))
        });
    }
    row("configuration PUTs / reloads / certificate PUTs done during the loaded cell".into(), "", &|f| {
        f.loaded.map(|_| format!("{} / {} / {}", f.mutations.0, f.mutations.1, f.mutations.2))
    });
    out.push('\n');
    for (label, figures) in results {
        for note in &figures.notes {
            out.push_str(&format!("- {label}: {note}\n"));
        }
    }
    out
}
