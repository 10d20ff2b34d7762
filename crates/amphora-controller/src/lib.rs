//! The Octavia controller: one binary with four roles that run together in
//! one process (the default) or apart, sharing only the database.
//!
//! - `api`: the Octavia v2 API (`api/`);
//! - `worker`: claims jobs and runs their flows (`worker/`);
//! - `health`: heartbeats and stale-amphora detection (`health/`);
//! - `housekeeping`: purges of old deleted rows (`housekeeping.rs`).

pub mod api;
pub mod auth;
pub mod certs;
pub mod config;
pub mod db;
pub mod fsutil;
pub mod health;
pub mod housekeeping;
pub mod jobs;
pub mod keystone;
pub mod local;
pub mod memory;
pub mod model;
pub mod render;
pub mod worker;

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::sync::{Notify, watch};

use crate::config::Config;
use crate::db::Db;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Api,
    Worker,
    Health,
    Housekeeping,
}

impl Role {
    pub const ALL: [Role; 4] = [Role::Api, Role::Worker, Role::Health, Role::Housekeeping];

    pub fn parse(s: &str) -> Option<Role> {
        match s {
            "api" => Some(Role::Api),
            "worker" => Some(Role::Worker),
            "health" => Some(Role::Health),
            "housekeeping" => Some(Role::Housekeeping),
            _ => None,
        }
    }
}

/// Resolves when the value turns true (the shutdown signal of every role).
pub async fn stopped(mut rx: watch::Receiver<bool>) {
    let _ = rx.wait_for(|stop| *stop).await;
}

/// Builds the API's state (authentication by the configured strategy).
pub async fn api_state(db: Db, config: Arc<Config>, jobs_queued: Arc<Notify>) -> anyhow::Result<api::AppState> {
    let auth: Arc<dyn api::Authenticate> = match config.api.auth_strategy {
        config::AuthStrategy::Noauth => Arc::new(api::NoAuth),
        config::AuthStrategy::Keystone => {
            let settings = config.keystone.clone().ok_or_else(|| anyhow::anyhow!("[keystone_authtoken] is missing"))?;
            Arc::new(keystone::Keystone::new(settings)?)
        }
    };
    Ok(api::AppState { db, config, auth, jobs_queued })
}

/// Runs the given roles until `shutdown` turns true. `on_ready` gets the
/// API's bound address (port 0 in tests).
pub async fn run(
    config: Config,
    roles: &[Role],
    shutdown: watch::Receiver<bool>,
    on_ready: impl FnOnce(Option<SocketAddr>),
) -> anyhow::Result<()> {
    let config = Arc::new(config);
    let db = Db::open_with(&config.database.connection, (&config.database).into()).await?;
    if config.worker.network_driver == "local" {
        // The management veth first: the health role binds to it and the
        // worker connects through it.
        local::Fabric::new(config.local_network.clone()).ensure().await?;
    }
    let jobs_queued = Arc::new(Notify::new());
    let mut tasks = tokio::task::JoinSet::new();
    let mut api_addr = None;
    if roles.contains(&Role::Api) {
        let state = api_state(db.clone(), config.clone(), jobs_queued.clone()).await?;
        let addr = SocketAddr::new(config.api.bind_host, config.api.bind_port);
        let listener = tokio::net::TcpListener::bind(addr).await?;
        api_addr = Some(listener.local_addr()?);
        tracing::info!(addr = %listener.local_addr()?, "API listening");
        let stop = stopped(shutdown.clone());
        let activity = db.activity.clone();
        tasks.spawn(async move {
            let app = api::app(state).layer(axum::middleware::from_fn_with_state(activity, memory::count_requests));
            axum::serve(listener, app).with_graceful_shutdown(stop).await?;
            Ok::<(), anyhow::Error>(())
        });
    }
    if roles.contains(&Role::Worker) {
        let worker = worker::Worker::new(db.clone(), config.clone(), jobs_queued.clone());
        let stop = shutdown.clone();
        tasks.spawn(async move { worker.run(stop).await });
    }
    if roles.contains(&Role::Health) {
        let stop = shutdown.clone();
        let (db, config) = (db.clone(), config.clone());
        tasks.spawn(async move { health::run(db, config, stop).await });
    }
    if roles.contains(&Role::Housekeeping) {
        let stop = shutdown.clone();
        let (db, config) = (db.clone(), config.clone());
        tasks.spawn(async move { housekeeping::run(db, config, stop).await });
    }
    {
        let (db, stop, idle) = (db.clone(), shutdown.clone(), config.release_memory_after_idle);
        tasks.spawn(async move {
            memory::release_when_idle(db, idle, stop, |_| {}).await;
            Ok(())
        });
    }
    on_ready(api_addr);
    while let Some(result) = tasks.join_next().await {
        result??;
    }
    db.pool.close().await;
    Ok(())
}
