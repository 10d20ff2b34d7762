//! `amphora-agent`: parse the command line and configuration, set up
//! logging, run.

use std::path::PathBuf;
use std::process::ExitCode;

use amphora_agent::LogControl;
use amphora_agent::config;
use amphora_agent::syslog::Syslog;
use clap::Parser;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, reload};

/// The Octavia amphora agent.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Args {
    /// Configuration file in upstream's format; repeat it to layer files,
    /// later ones overriding earlier ones.
    #[arg(long = "config-file", value_name = "PATH", default_value = config::DEFAULT_CONFIG_FILE)]
    config_files: Vec<PathBuf>,

    /// Write the listening address to this file once ready to serve.
    #[arg(long, value_name = "PATH")]
    ready_file: Option<PathBuf>,
}

fn main() -> ExitCode {
    let args = Args::parse();
    let loaded = match config::load(&args.config_files) {
        Ok(loaded) => loaded,
        Err(e) => {
            eprintln!("amphora-agent: {e}");
            return ExitCode::from(2);
        }
    };
    // RUST_LOG, when set, wins over the configuration's debug switch.
    let from_env = EnvFilter::try_from_default_env().ok();
    let level = |debug: bool| EnvFilter::new(if debug { "debug" } else { "info" });
    let fixed = from_env.is_some();
    let (filter, handle) = reload::Layer::new(from_env.unwrap_or_else(|| level(loaded.config.debug)));
    // Standard error for journald, or the syslog socket when the
    // configuration asks for it as upstream's does (records that cannot
    // be sent there go to standard error).
    let (to_stderr, to_syslog) = match loaded.config.logging.syslog() {
        None => (
            Some(
                tracing_subscriber::fmt::layer()
                    .with_target(false)
                    .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
                    .with_writer(std::io::stderr),
            ),
            None,
        ),
        Some((socket, facility)) => (
            None,
            Some(
                tracing_subscriber::fmt::layer()
                    .with_target(false)
                    .with_ansi(false)
                    .without_time()
                    .with_writer(Syslog::new(socket, facility)),
            ),
        ),
    };
    tracing_subscriber::registry().with(filter).with(to_stderr).with(to_syslog).init();
    let log = (!fixed).then(|| {
        LogControl::new(move |debug| {
            if let Err(e) = handle.reload(level(debug)) {
                tracing::warn!(error = %e, "cannot change the log level");
            }
        })
    });
    for warning in &loaded.warnings {
        tracing::warn!("{warning}");
    }

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(loaded.config.amphora_agent.worker_threads)
        .enable_all()
        .build();
    let runtime = match runtime {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("amphora-agent: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let options = amphora_agent::Options { ready_file: args.ready_file, log };
    match runtime.block_on(amphora_agent::run(loaded, options)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e:#}");
            eprintln!("amphora-agent: {e:#}");
            ExitCode::FAILURE
        }
    }
}
