//! `amphora-agent`: parse the command line and configuration, set up
//! logging, run.

use std::path::PathBuf;
use std::process::ExitCode;

use amphora_agent::config;
use clap::Parser;
use tracing_subscriber::EnvFilter;

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
    let default_level = if loaded.config.debug { "debug" } else { "info" };
    tracing_subscriber::fmt()
        .with_env_filter(EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_level)))
        .with_target(false)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr)
        .init();
    for warning in &loaded.warnings {
        tracing::warn!("{warning}");
    }

    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("amphora-agent: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let options = amphora_agent::Options { ready_file: args.ready_file };
    match runtime.block_on(amphora_agent::run(loaded.config, options)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e:#}");
            eprintln!("amphora-agent: {e:#}");
            ExitCode::FAILURE
        }
    }
}
