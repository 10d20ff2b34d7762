//! The health role: stale-amphora detection. (Heartbeat reception arrives
//! with real amphorae; until then amphorae have no health rows to go stale.)

use std::sync::Arc;

use tokio::sync::watch;

use crate::config::Config;
use crate::db::Db;

pub async fn run(_db: Db, _config: Arc<Config>, shutdown: watch::Receiver<bool>) -> anyhow::Result<()> {
    crate::stopped(shutdown).await;
    Ok(())
}
