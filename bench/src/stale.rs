//! The stale-amphora scan at fleet scale (#15 point 3): the controller's
//! own `health::stale::scan` over a database of N load balancers with one
//! amphora and one health row each, timed as the health role runs it every
//! `health_check_interval`; then 30% of the fleet falls silent at once and
//! `failover_threshold` must stop them all (no failover storm), and bring
//! them back when they heartbeat again.

use std::fmt::Write as _;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use amphora_controller::db::{Db, now_millis};
use amphora_controller::health::stale;
use sqlx::Row;

use crate::controller::{load_average, postgres_database, seed, splice_between};

const BEGIN: &str = "<!-- stale-bench:begin -->";
const END: &str = "<!-- stale-bench:end -->";
/// `heartbeat_timeout`, as upstream's default.
const TIMEOUT_MS: i64 = 60_000;

#[derive(Debug, clap::Args)]
pub struct StaleArgs {
    /// A PostgreSQL server (`postgres://user@host:port/db`); without it,
    /// SQLite only.
    #[arg(long)]
    postgres: Option<String>,
    /// Amphorae (and health rows) in the database.
    #[arg(long, default_value_t = 100_000)]
    amphorae: usize,
    /// Scans timed per case.
    #[arg(long, default_value_t = 30)]
    scans: usize,
    /// Where to write the report.
    #[arg(long, default_value = "bench/RESULTS.md")]
    output: PathBuf,
}

#[derive(Debug, Default)]
struct Figures {
    backend: String,
    seeded: Duration,
    /// (case, p50, p99) in milliseconds.
    scans: Vec<(&'static str, f64, f64)>,
    silent: i64,
    stopped: i64,
    jobs: i64,
    storm_scan_ms: f64,
    back: i64,
}

pub fn main(args: &StaleArgs) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    let load_before = load_average();
    let started = time::OffsetDateTime::now_utc();
    let mut all = Vec::new();
    let mut backends = vec!["sqlite"];
    if args.postgres.is_some() {
        backends.push("postgresql");
    }
    for backend in backends {
        eprintln!("== {backend}");
        let figures = runtime.block_on(measure(args, backend))?;
        eprintln!("{figures:?}");
        all.push(figures);
    }
    let section = render(args, &all, &load_before, &load_average(), started);
    let previous = std::fs::read_to_string(&args.output).unwrap_or_default();
    std::fs::write(&args.output, splice_between(&previous, BEGIN, END, &section))?;
    println!("{section}");
    Ok(())
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

/// Times `n` scans: (p50, p99) in milliseconds. Every scan must find
/// nothing to fail over.
async fn time_scans(db: &Db, n: usize, threshold: Option<u64>) -> anyhow::Result<(f64, f64)> {
    let mut times = Vec::with_capacity(n);
    for _ in 0..n {
        let t = Instant::now();
        let scan = stale::scan(db, TIMEOUT_MS, threshold).await?;
        times.push(t.elapsed().as_secs_f64() * 1000.0);
        anyhow::ensure!(
            scan.failed_over.is_empty() && scan.stopped.is_none(),
            "a fresh fleet was found stale: {scan:?}"
        );
    }
    times.sort_by(f64::total_cmp);
    Ok((percentile(&times, 0.5), percentile(&times, 0.99)))
}

async fn count(db: &Db, sql: &str) -> anyhow::Result<i64> {
    Ok(sqlx::query(sql).fetch_one(&db.pool).await?.try_get(0)?)
}

async fn measure(args: &StaleArgs, backend: &str) -> anyhow::Result<Figures> {
    let dir = tempfile::Builder::new().prefix("stale-bench.").tempdir()?;
    let url = match backend {
        "sqlite" => format!("sqlite:///{}/octavia.db", dir.path().display()),
        _ => postgres_database(args.postgres.as_deref().unwrap_or_default()).await?,
    };
    let seeded = seed(&url, args.amphorae, 1).await?;
    let db = Db::open(&url).await?;
    let now = now_millis();
    let mut tx = db.write().await?;
    sqlx::query("INSERT INTO amphora_health (amphora_id, last_update, busy) SELECT id, $1, $2 FROM amphora")
        .bind(now)
        .bind(false)
        .execute(&mut **tx)
        .await?;
    tx.commit().await?;
    sqlx::query("ANALYZE").execute(&db.pool).await?;
    let mut figures = Figures { backend: backend.to_owned(), seeded, ..Figures::default() };

    let (p50, p99) = time_scans(&db, args.scans, None).await?;
    figures.scans.push(("fresh fleet, no failover_threshold", p50, p99));
    let threshold = Some((args.amphorae / 100).max(1) as u64);
    let (p50, p99) = time_scans(&db, args.scans, threshold).await?;
    figures.scans.push(("fresh fleet, failover_threshold 1% of it", p50, p99));

    // 30% of the fleet falls silent at once (amphora ids are random UUIDs:
    // those starting with 0-4 are 5/16 of them).
    let silent_since = now_millis() - 2 * TIMEOUT_MS;
    let mut tx = db.write().await?;
    let silent = sqlx::query("UPDATE amphora_health SET last_update = $1 WHERE amphora_id < '5'")
        .bind(silent_since)
        .execute(&mut **tx)
        .await?
        .rows_affected();
    tx.commit().await?;
    figures.silent = silent as i64;
    let t = Instant::now();
    let scan = stale::scan(&db, TIMEOUT_MS, threshold).await?;
    figures.storm_scan_ms = t.elapsed().as_secs_f64() * 1000.0;
    anyhow::ensure!(scan.failed_over.is_empty(), "{} failovers queued in a storm", scan.failed_over.len());
    anyhow::ensure!(scan.stopped == Some(silent as i64), "the breaker saw {:?} of {silent}", scan.stopped);
    figures.stopped = count(&db, "SELECT COUNT(*) FROM amphora WHERE status = 'FAILOVER_STOPPED'").await?;
    figures.jobs = count(&db, "SELECT COUNT(*) FROM job").await?;

    // They heartbeat again: ALLOCATED at the next scan.
    let mut tx = db.write().await?;
    sqlx::query("UPDATE amphora_health SET last_update = $1 WHERE amphora_id < '5'")
        .bind(now_millis())
        .execute(&mut **tx)
        .await?;
    tx.commit().await?;
    let scan = stale::scan(&db, TIMEOUT_MS, threshold).await?;
    anyhow::ensure!(scan.failed_over.is_empty() && scan.stopped.is_none(), "after the return: {scan:?}");
    figures.back = silent as i64 - count(&db, "SELECT COUNT(*) FROM amphora WHERE status = 'FAILOVER_STOPPED'").await?;
    db.pool.close().await;
    Ok(figures)
}

fn render(
    args: &StaleArgs,
    all: &[Figures],
    load_before: &str,
    load_after: &str,
    started: time::OffsetDateTime,
) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "## Stale-amphora scan at fleet scale\n");
    let _ = writeln!(
        out,
        "Run {}, `amphora-bench stale --amphorae {} --scans {}`. Load average (1, 5, 15 min) {load_before} \
         before and {load_after} after.\n",
        crate::controller::run_time(started),
        args.amphorae,
        args.scans,
    );
    let _ = writeln!(
        out,
        "{} ACTIVE load balancers with one ALLOCATED amphora and one fresh health row each; the controller's own \
         `health::stale::scan` (what the health role runs every `health_check_interval`, 3 s by default) timed \
         in the bench process, `heartbeat_timeout` 60 s. Upstream's scan counts the whole health table every \
         interval (reference, section 3.4); ours reads the stale end of the `last_update` index.\n",
        args.amphorae
    );
    out.push_str("| database | case | p50 | p99 |\n|---|---|---|---|\n");
    for f in all {
        for (case, p50, p99) in &f.scans {
            let _ = writeln!(out, "| {} | {case} | {p50:.2} ms | {p99:.2} ms |", f.backend);
        }
        let _ = writeln!(
            out,
            "| {} | 30% silent at once: the one scan that trips the breaker | {:.1} ms | |",
            f.backend, f.storm_scan_ms
        );
    }
    out.push('\n');
    for f in all {
        let _ = writeln!(
            out,
            "- {}: seeded in {:.1?}; {} of {} amphorae silent at once with `failover_threshold` {}: {} \
             FAILOVER_STOPPED, {} failover jobs queued; all {} back to ALLOCATED at the first scan after they \
             heartbeat again.",
            f.backend,
            f.seeded,
            f.silent,
            args.amphorae,
            (args.amphorae / 100).max(1),
            f.stopped,
            f.jobs,
            f.back
        );
    }
    out
}
