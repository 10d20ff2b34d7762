//! `amphora-controller`: parse the command line and configuration, set up
//! logging, run the chosen roles until SIGTERM/SIGINT, or upgrade the
//! database schema.

use std::path::PathBuf;
use std::process::ExitCode;

use amphora_controller::{Role, config};
use clap::{Parser, Subcommand};
use tracing_subscriber::EnvFilter;

/// The Octavia controller: API, worker, health manager and housekeeping.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Args {
    /// Configuration file in upstream's octavia.conf format; repeat it to
    /// layer files, later ones overriding earlier ones.
    #[arg(long = "config-file", value_name = "PATH", default_value = config::DEFAULT_CONFIG_FILE, global = true)]
    config_files: Vec<PathBuf>,

    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run roles (default: all of them in this process).
    Run {
        /// Comma-separated roles: api, worker, health, housekeeping.
        #[arg(long, value_delimiter = ',', default_value = "api,worker,health,housekeeping")]
        roles: Vec<String>,
        /// Write the API's listening address to this file once serving.
        #[arg(long, value_name = "PATH")]
        ready_file: Option<PathBuf>,
    },
    /// Database schema management.
    Db {
        #[command(subcommand)]
        action: DbAction,
    },
    /// The local compute and network drivers' objects on this host.
    Local {
        #[command(subcommand)]
        action: LocalAction,
    },
}

#[derive(Debug, Subcommand)]
enum LocalAction {
    /// Delete every amphora namespace and process, the fabric namespace
    /// and the host veths of this configuration's `[local_network]
    /// name_prefix`, and the amphora directories of `[local_compute]
    /// state_dir`. The database is left alone.
    Teardown,
}

#[derive(Debug, Subcommand)]
enum DbAction {
    /// Apply every migration not yet applied.
    Upgrade,
}

fn main() -> ExitCode {
    let args = Args::parse();
    let loaded = match config::load(&args.config_files) {
        Ok(loaded) => loaded,
        Err(e) => {
            eprintln!("amphora-controller: {e}");
            return ExitCode::from(2);
        }
    };
    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new(if loaded.config.debug { "debug,sqlx=info" } else { "info,sqlx=warn" }));
    tracing_subscriber::fmt().with_env_filter(filter).with_target(false).with_writer(std::io::stderr).init();
    for warning in &loaded.warnings {
        tracing::warn!("{warning}");
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("amphora-controller: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async move {
        match args.command.unwrap_or(Command::Run { roles: vec![], ready_file: None }) {
            Command::Db { action: DbAction::Upgrade } => {
                let db = amphora_controller::db::Db::connect(&loaded.config.database.connection).await?;
                db.upgrade().await?;
                tracing::info!("database schema is up to date");
                Ok(())
            }
            Command::Local { action: LocalAction::Teardown } => {
                let c = &loaded.config;
                amphora_controller::local::teardown(&c.local_network, &c.local_compute.state_dir).await?;
                tracing::info!(prefix = c.local_network.name_prefix, "local drivers' objects deleted");
                Ok(())
            }
            Command::Run { roles, ready_file } => {
                let roles = if roles.is_empty() {
                    Role::ALL.to_vec()
                } else {
                    roles
                        .iter()
                        .map(|r| Role::parse(r.trim()).ok_or_else(|| anyhow::anyhow!("unknown role {r:?}")))
                        .collect::<anyhow::Result<Vec<_>>>()?
                };
                let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
                tokio::spawn(async move {
                    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                        Ok(s) => s,
                        Err(e) => {
                            tracing::error!(error = %e, "cannot watch SIGTERM");
                            return;
                        }
                    };
                    tokio::select! {
                        _ = term.recv() => {}
                        _ = tokio::signal::ctrl_c() => {}
                    }
                    tracing::info!("shutting down");
                    let _ = stop_tx.send(true);
                });
                amphora_controller::run(loaded.config, &roles, stop_rx, |addr| {
                    if let (Some(path), Some(addr)) = (ready_file, addr)
                        && let Err(e) = std::fs::write(&path, addr.to_string())
                    {
                        tracing::error!(path = %path.display(), error = %e, "cannot write the ready file");
                    }
                })
                .await
            }
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("amphora-controller: {e:#}");
            ExitCode::FAILURE
        }
    }
}
