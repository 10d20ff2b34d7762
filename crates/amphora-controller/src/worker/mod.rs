//! The worker role: claims jobs and runs their flows.

pub mod drivers;

use std::sync::Arc;

use tokio::sync::{Notify, watch};

use crate::config::Config;
use crate::db::Db;

#[derive(Debug)]
pub struct Worker {
    db: Db,
    config: Arc<Config>,
    wake: Arc<Notify>,
}

impl Worker {
    pub fn new(db: Db, config: Arc<Config>, wake: Arc<Notify>) -> Worker {
        Worker { db, config, wake }
    }

    pub async fn run(self, shutdown: watch::Receiver<bool>) -> anyhow::Result<()> {
        let _ = (&self.db, &self.config, &self.wake);
        crate::stopped(shutdown).await;
        Ok(())
    }
}
