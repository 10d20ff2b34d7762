//! `amphora-bench`: measures our agent and upstream's in the same run, on
//! the same machine, with the same certificates and configurations, and
//! writes medians and ratios (ours / upstream) to `bench/RESULTS.md`.
//!
//! Not part of CI's pass/fail: figures depend on the machine. Run it with
//! `bench/run.sh`, which builds the release binary and the upstream
//! virtualenv first.

mod controller;
mod heartbeat;
mod hot;
mod ingest;
mod lifecycle;
mod load;
mod scale;
mod scenario;
mod stale;
mod target;

use std::fmt::Write as _;
use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;

use crate::scenario::{Figures, Measure};
use crate::target::{Kind, Launchers};

#[derive(Debug, Parser)]
#[command(about = "Benchmark our amphora agent (and, with `controller`, our controller) against upstream's")]
struct Args {
    #[command(subcommand)]
    command: Option<Command>,
    /// Cold starts (and idle memory readings) per agent.
    #[arg(long, default_value_t = 5)]
    rounds: usize,
    /// Seconds per throughput measurement.
    #[arg(long, default_value_t = 3.0)]
    duration: f64,
    /// Listeners in the large configuration.
    #[arg(long, default_value_t = 100)]
    listeners: usize,
    /// Reloads in the reload-under-load scenario.
    #[arg(long, default_value_t = 50)]
    reloads: u32,
    /// Measure only one agent.
    #[arg(long, value_parser = ["ours", "upstream", "heartbeat"])]
    only: Option<String>,
    #[arg(long, default_value = "target/release/amphora-agent")]
    agent: PathBuf,
    #[arg(long, default_value = "target/upstream-venv/bin/python")]
    python: PathBuf,
    #[arg(long, default_value = "bench/upstream/run_upstream_agent.py")]
    upstream_launcher: PathBuf,
    /// Where to write the report.
    #[arg(long, default_value = "bench/RESULTS.md")]
    output: PathBuf,
}

#[derive(Debug, clap::Subcommand)]
enum Command {
    /// The controller: API lists and shows over a seeded database, load
    /// balancer creates, idle memory (bench/run-controller.sh).
    Controller(controller::ControllerArgs),
    /// The controller running real amphorae on this host: creates,
    /// failovers, traffic gaps, memory (bench/run-lifecycle.sh).
    Lifecycle(lifecycle::LifecycleArgs),
    /// Our agent's hot paths, for two builds compared in one run: CPU per
    /// kept-alive request, /1.0/info latency on a single-worker runtime
    /// under configuration PUTs, reloads and heartbeats.
    AgentHot(hot::HotArgs),
    /// The controller's health role at fleet scale: signed heartbeats from
    /// synthetic amphorae at rising rates, on SQLite and PostgreSQL.
    Ingest(ingest::IngestArgs),
    /// The stale-amphora scan over a fleet's health rows, and the
    /// failover_threshold breaker when 30% of it falls silent.
    Stale(stale::StaleArgs),
    /// The controller's API over 100,000 amphorae on PostgreSQL, served by
    /// three processes on each side (bench/run-api-scale.sh).
    ApiScale(scale::ScaleArgs),
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    match &args.command {
        Some(Command::Controller(c)) => return controller::main(c),
        Some(Command::Lifecycle(l)) => return lifecycle::main(l),
        Some(Command::AgentHot(h)) => return hot::main(h),
        Some(Command::Ingest(i)) => return ingest::main(i),
        Some(Command::Stale(s)) => return stale::main(s),
        Some(Command::ApiScale(s)) => return scale::main(s),
        None => {}
    }
    let launchers = Launchers {
        ours: std::fs::canonicalize(&args.agent)?,
        python: args.python.clone(),
        upstream_launcher: std::fs::canonicalize(&args.upstream_launcher).unwrap_or(args.upstream_launcher.clone()),
    };
    let kinds: Vec<Kind> = match args.only.as_deref() {
        Some("ours") => vec![Kind::Ours],
        Some("upstream") => vec![Kind::Upstream],
        Some("heartbeat") => vec![],
        _ => vec![Kind::Ours, Kind::Upstream],
    };
    let measure = Measure {
        rounds: args.rounds,
        duration: Duration::from_secs_f64(args.duration),
        listeners: args.listeners,
        reloads: args.reloads,
    };
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    let mut results = Vec::new();
    for kind in kinds {
        eprintln!("== measuring {}", kind.name());
        let figures = runtime.block_on(scenario::measure(kind, &launchers, &measure));
        eprintln!("{figures:#?}");
        results.push((kind, figures));
    }
    let beats = (args.only.is_none() || args.only.as_deref() == Some("heartbeat")).then(|| {
        eprintln!("== measuring heartbeats");
        heartbeats(&args)
    });
    let mut report = render(&args, &results);
    if let Some(beats) = beats {
        report.push_str(&beats);
    }
    // The controller's sections are written by their own runs: keep them.
    let previous = std::fs::read_to_string(&args.output).unwrap_or_default();
    for section in [
        controller::existing_section(&previous),
        controller::section_between(&previous, lifecycle::BEGIN, lifecycle::END),
        controller::section_between(&previous, hot::BEGIN, hot::END),
    ]
    .into_iter()
    .flatten()
    {
        report.push('\n');
        report.push_str(&section);
    }
    std::fs::write(&args.output, &report)?;
    println!("{report}");
    Ok(())
}

fn heartbeats(args: &Args) -> String {
    let stat = heartbeat::show_stat(50, 20);
    let ours = heartbeat::ours_build_and_sign(&stat, 200);
    let script = args.upstream_launcher.with_file_name("heartbeat_bench.py");
    let upstream = heartbeat::upstream_build_and_sign(&args.python, &script, &stat, 200);
    let ms = |d: std::time::Duration| d.as_secs_f64() * 1000.0;
    let mut out = String::from("\n## Heartbeats\n\n");
    out.push_str("| measure | ours | upstream | ours / upstream |\n|---|---|---|---|\n");
    match upstream {
        Ok(up) => out.push_str(&format!(
            "| CPU time to build and sign one message, 50 listeners x 20 members (median of 200) | {:.3} ms | {:.3} ms | {:.3} |\n",
            ms(ours),
            ms(up),
            ours.as_secs_f64() / up.as_secs_f64()
        )),
        Err(e) => out.push_str(&format!(
            "| CPU time to build and sign one message, 50 listeners x 20 members (median of 200) | {:.3} ms | n/a ({e}) | n/a |\n",
            ms(ours)
        )),
    }
    out.push_str(&format!(
        "\nOne heartbeat must fit one UDP datagram ({} bytes; upstream's receiver reads one of at most 64 KiB and \
         cannot reassemble). Largest messages that fit, with random UUIDs as ids (compression gains little on them):\n\n\
         | listeners | most members per listener |\n|---|---|\n",
        amphora_proto::heartbeat::MAX_DATAGRAM
    ));
    for listeners in [1, 10, 50, 100, 200] {
        out.push_str(&format!("| {listeners} | {} |\n", heartbeat::max_members_fitting(listeners)));
    }
    out.push_str(&format!(
        "\nWithout members, at most {} listeners fit. Beyond these sizes the agent trims member lists (every \
         listener is still reported) and logs an error saying how many members it left out.\n",
        heartbeat::max_listeners_fitting()
    ));
    out
}

fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|t| {
            t.lines()
                .find_map(|l| l.strip_prefix("model name"))
                .map(|m| m.trim_start_matches([' ', '\t', ':']).to_owned())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
    let mem_kib: u64 = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|t| t.lines().next()?.split_whitespace().nth(1)?.parse().ok())
        .unwrap_or(0);
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let haproxy = std::process::Command::new("/usr/sbin/haproxy")
        .arg("-v")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).lines().next().unwrap_or("").to_owned())
        .unwrap_or_default();
    format!(
        "{cores} cores ({cpu}), {:.1} GiB RAM, Linux {}, {haproxy}",
        mem_kib as f64 / 1024.0 / 1024.0,
        kernel.trim()
    )
}

fn render(args: &Args, results: &[(Kind, Figures)]) -> String {
    let find = |kind: Kind| results.iter().find(|(k, _)| *k == kind).map(|(_, f)| f);
    let (ours, upstream) = (find(Kind::Ours), find(Kind::Upstream));
    let mut out = String::new();
    let _ = writeln!(out, "# Benchmark results\n");
    let _ = writeln!(out, "Machine: {}\n", machine());
    let _ = writeln!(
        out,
        "Command: `bench/run.sh` (= `amphora-bench --rounds {} --duration {} --listeners {} --reloads {}`), \
         both agents on 127.0.0.1 with the same certificates, one after the other in the same run. \
         Medians over {} cold starts; throughput over {} s per cell.\n",
        args.rounds, args.duration, args.listeners, args.reloads, args.rounds, args.duration
    );
    let _ = writeln!(out, "| measure | ours | upstream | ours / upstream |");
    let _ = writeln!(out, "|---|---|---|---|");
    for row in scenario::rows(ours, upstream) {
        let _ = writeln!(out, "| {} | {} | {} | {} |", row.name, row.ours, row.upstream, row.ratio);
    }
    let _ = writeln!(out);
    for (kind, figures) in results {
        for note in &figures.notes {
            let _ = writeln!(out, "- {}: {note}", kind.name());
        }
    }
    let _ = writeln!(out, "\n{}", scenario::LOAD_GENERATOR_NOTE);
    out
}
