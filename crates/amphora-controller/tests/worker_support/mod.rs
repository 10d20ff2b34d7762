//! Worker test support: a Worker in-process on a test database, rows
//! inserted as the API would, a counting/failing/hanging driver, and
//! deadline polling (never fixed sleeps).

#![allow(dead_code)]

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use amphora_controller::config::{Config, Topology};
use amphora_controller::db::{Db, new_id, now_text};
use amphora_controller::jobs::{self, JobKind};
use amphora_controller::worker::Worker;
use amphora_controller::worker::drivers::{
    AmphoraDriver, AmphoraTarget, BootFiles, ComputeDriver, ComputeInfo, DriverFuture, Drivers, NetworkDriver, Port,
    Subnet, VipRequest,
};
use serde_json::Value;
use sqlx::Row;
use tokio::sync::{Notify, watch};
use tokio::task::JoinHandle;

use crate::common::{TestApi, TestDb};

pub const DEADLINE: Duration = Duration::from_secs(20);

/// Polls `check` every 10 ms until it returns Some, or panics after the
/// deadline with `what`.
pub async fn eventually<T, F, Fut>(what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let start = tokio::time::Instant::now();
    loop {
        if let Some(v) = check().await {
            return v;
        }
        if start.elapsed() > DEADLINE {
            panic!("timed out waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

pub fn config(db: &TestDb, step_delay_ms: u64, topology: Topology) -> Config {
    let mut c = crate::common::config(&db.url);
    c.noop.step_delay = Duration::from_millis(step_delay_ms);
    c.worker.loadbalancer_topology = topology;
    c.worker.job_lease = Duration::from_secs(1);
    c
}

/// A running worker; `stop` shuts it down cleanly, `abort` kills it like a
/// crash (its futures are dropped mid-step).
pub struct RunningWorker {
    pub handle: JoinHandle<anyhow::Result<()>>,
    pub shutdown: watch::Sender<bool>,
    pub id: String,
}

impl RunningWorker {
    pub fn abort(self) {
        self.handle.abort();
    }

    pub async fn stop(self) {
        let _ = self.shutdown.send(true);
        self.handle.await.expect("worker task").expect("worker result");
    }
}

pub fn start_worker(db: &Db, config: &Config, wake: &Arc<Notify>, drivers: Option<Drivers>) -> RunningWorker {
    let config = Arc::new(config.clone());
    let worker = match drivers {
        Some(d) => Worker::with_drivers(db.clone(), config, wake.clone(), d),
        None => Worker::new(db.clone(), config, wake.clone()),
    };
    let id = worker.id().to_owned();
    let (tx, rx) = watch::channel(false);
    let handle = tokio::spawn(worker.run(rx));
    RunningWorker { handle, shutdown: tx, id }
}

/// Everything a worker test needs.
pub struct Env {
    pub db: Db,
    pub config: Config,
    pub wake: Arc<Notify>,
    pub api: TestApi,
    pub name: &'static str,
}

pub async fn env(test_db: &TestDb, config: Config) -> Env {
    let _ = tracing_subscriber::fmt()
        .with_test_writer()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()))
        .try_init();
    let db = Db::open(&config.database.connection).await.expect("open database");
    let wake = Arc::new(Notify::new());
    let state = amphora_controller::api_state(db.clone(), Arc::new(config.clone()), wake.clone()).await.expect("state");
    let api = TestApi { router: amphora_controller::api::app(state.clone()), state, db_name: test_db.name };
    Env { db, config, wake, api, name: test_db.name }
}

impl Env {
    pub fn worker(&self, drivers: Option<Drivers>) -> RunningWorker {
        start_worker(&self.db, &self.config, &self.wake, drivers)
    }

    pub async fn exec(&self, sql: &str) {
        sqlx::query(sql).execute(&self.db.pool).await.unwrap_or_else(|e| panic!("{sql}: {e}"));
    }

    pub async fn text(&self, sql: &str) -> Option<String> {
        sqlx::query_scalar::<_, Option<String>>(sql)
            .fetch_optional(&self.db.pool)
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e}"))
            .flatten()
    }

    pub async fn count(&self, sql: &str) -> i64 {
        sqlx::query_scalar::<_, i64>(sql).fetch_one(&self.db.pool).await.unwrap_or_else(|e| panic!("{sql}: {e}"))
    }

    /// A load balancer as the API creates it: PENDING_CREATE, OFFLINE,
    /// a VIP subnet and nothing allocated.
    pub async fn insert_lb(&self, provisioning: &str) -> String {
        let id = new_id();
        sqlx::query(
            "INSERT INTO load_balancer (id, project_id, name, provisioning_status, operating_status, enabled, provider, \
             vip_subnet_id, created_at) VALUES ($1, $2, $3, $4, 'OFFLINE', $5, 'amphora', $6, $7)",
        )
        .bind(id.as_str())
        .bind("project-1")
        .bind("lb-test")
        .bind(provisioning)
        .bind(true)
        .bind(new_id())
        .bind(now_text())
        .execute(&self.db.pool)
        .await
        .expect("insert load balancer");
        id
    }

    /// Queues a job as the API does (its own transaction, then a wake-up).
    pub async fn enqueue(&self, kind: JobKind, target: &str, payload: Value) -> String {
        let mut tx = self.db.write().await.expect("tx");
        let id = jobs::enqueue(&mut tx, kind, target, payload).await.expect("enqueue");
        tx.commit().await.expect("commit");
        self.wake.notify_one();
        id
    }

    pub async fn lb_status(&self, lb: &str) -> String {
        self.text(&format!("SELECT provisioning_status FROM load_balancer WHERE id = '{lb}'")).await.unwrap_or_default()
    }

    pub async fn wait_lb(&self, lb: &str, status: &str) {
        eventually(&format!("load balancer {lb} {status} ({})", self.name), || async {
            (self.lb_status(lb).await == status).then_some(())
        })
        .await;
    }

    pub async fn job(&self, id: &str) -> (String, i64, bool, i64, Option<String>) {
        let r = sqlx::query("SELECT state, step, CASE WHEN reverting THEN CAST(1 AS BIGINT) ELSE CAST(0 AS BIGINT) END, attempts, error FROM job WHERE id = $1")
            .bind(id)
            .fetch_one(&self.db.pool)
            .await
            .expect("job");
        (r.get(0), r.get(1), r.get::<i64, _>(2) != 0, r.get(3), r.get(4))
    }

    pub async fn wait_job(&self, id: &str, state: &str) {
        eventually(&format!("job {id} {state} ({})", self.name), || async {
            (self.job(id).await.0 == state).then_some(())
        })
        .await;
    }

    /// The load balancer's amphorae that are not DELETED, via the admin API.
    pub async fn amphorae(&self, lb: &str) -> Vec<Value> {
        let (status, body) = self.api.call("GET", &format!("/v2/octavia/amphorae?loadbalancer_id={lb}"), None).await;
        assert_eq!(status, 200, "{body}");
        body["amphorae"].as_array().cloned().unwrap_or_default()
    }

    pub async fn live_amphorae(&self, lb: &str) -> i64 {
        self.count(&format!("SELECT COUNT(*) FROM amphora WHERE load_balancer_id = '{lb}' AND status <> 'DELETED'"))
            .await
    }
}

/// A driver over the noop ones that counts calls per (call, object), and
/// can be told to fail or to hang in a call.
#[derive(Debug)]
pub struct TestDriver {
    inner: Drivers,
    counts: Mutex<HashMap<String, usize>>,
    fail: Mutex<Option<&'static str>>,
    hang: Mutex<Option<&'static str>>,
    panic_once: Mutex<Option<&'static str>>,
    pub hanging: Notify,
}

impl TestDriver {
    pub fn new(db: &Db, config: &Config) -> Arc<TestDriver> {
        Arc::new(TestDriver {
            inner: Drivers::noop(db, config),
            counts: Mutex::default(),
            fail: Mutex::default(),
            hang: Mutex::default(),
            panic_once: Mutex::default(),
            hanging: Notify::new(),
        })
    }

    pub fn drivers(self: &Arc<Self>) -> Drivers {
        Drivers { compute: self.clone(), network: self.clone(), amphora: self.clone() }
    }

    pub fn fail_on(&self, call: Option<&'static str>) {
        *self.fail.lock().unwrap() = call;
    }

    pub fn hang_on(&self, call: Option<&'static str>) {
        *self.hang.lock().unwrap() = call;
    }

    /// The next call of `call` panics (a bug in a driver).
    pub fn panic_once_on(&self, call: Option<&'static str>) {
        *self.panic_once.lock().unwrap() = call;
    }

    /// Calls of `call` (any object).
    pub fn calls(&self, call: &str) -> usize {
        let counts = self.counts.lock().unwrap();
        counts.iter().filter(|(k, _)| k.split('/').next() == Some(call)).map(|(_, v)| *v).sum()
    }

    /// The largest number of `call` calls for one object.
    pub fn max_per_object(&self, call: &str) -> usize {
        let counts = self.counts.lock().unwrap();
        counts.iter().filter(|(k, _)| k.split('/').next() == Some(call)).map(|(_, v)| *v).max().unwrap_or(0)
    }

    async fn enter(&self, call: &'static str, object: &str) -> anyhow::Result<()> {
        if *self.hang.lock().unwrap() == Some(call) {
            self.hanging.notify_one();
            std::future::pending::<()>().await;
        }
        let panics = {
            let mut p = self.panic_once.lock().unwrap();
            if *p == Some(call) { p.take().is_some() } else { false }
        };
        if panics {
            panic!("test driver: {call} panics");
        }
        if *self.fail.lock().unwrap() == Some(call) {
            anyhow::bail!("test driver: {call} fails");
        }
        *self.counts.lock().unwrap().entry(format!("{call}/{object}")).or_default() += 1;
        Ok(())
    }
}

impl ComputeDriver for TestDriver {
    fn create<'a>(&'a self, amphora_id: &'a str, boot: &'a BootFiles) -> DriverFuture<'a, String> {
        Box::pin(async move {
            self.enter("compute_create", amphora_id).await?;
            self.inner.compute.create(amphora_id, boot).await
        })
    }

    fn wait_active<'a>(&'a self, compute_id: &'a str) -> DriverFuture<'a, ComputeInfo> {
        Box::pin(async move {
            self.enter("compute_wait", compute_id).await?;
            self.inner.compute.wait_active(compute_id).await
        })
    }

    fn delete<'a>(&'a self, compute_id: &'a str) -> DriverFuture<'a, ()> {
        Box::pin(async move {
            self.enter("compute_delete", compute_id).await?;
            self.inner.compute.delete(compute_id).await
        })
    }

    fn attach_port<'a>(&'a self, compute_id: &'a str, port: &'a Port) -> DriverFuture<'a, ()> {
        Box::pin(async move {
            self.enter("attach_port", &port.id).await?;
            self.inner.compute.attach_port(compute_id, port).await
        })
    }

    fn detach_port<'a>(&'a self, compute_id: &'a str, port: &'a Port) -> DriverFuture<'a, ()> {
        Box::pin(async move {
            self.enter("detach_port", &port.id).await?;
            self.inner.compute.detach_port(compute_id, port).await
        })
    }
}

impl NetworkDriver for TestDriver {
    fn allocate_vip<'a>(&'a self, vip: &'a VipRequest) -> DriverFuture<'a, Port> {
        Box::pin(async move {
            self.enter("allocate_vip", &vip.load_balancer_id).await?;
            self.inner.network.allocate_vip(vip).await
        })
    }

    fn deallocate_vip<'a>(&'a self, port_id: &'a str) -> DriverFuture<'a, ()> {
        Box::pin(async move {
            self.enter("deallocate_vip", port_id).await?;
            self.inner.network.deallocate_vip(port_id).await
        })
    }

    fn allocate_vrrp_port<'a>(&'a self, amphora_id: &'a str, vip: &'a Port) -> DriverFuture<'a, Port> {
        Box::pin(async move {
            self.enter("allocate_vrrp_port", amphora_id).await?;
            self.inner.network.allocate_vrrp_port(amphora_id, vip).await
        })
    }

    fn delete_port<'a>(&'a self, port_id: &'a str) -> DriverFuture<'a, ()> {
        Box::pin(async move {
            self.enter("delete_port", port_id).await?;
            self.inner.network.delete_port(port_id).await
        })
    }

    fn get_subnet<'a>(&'a self, subnet_id: &'a str) -> DriverFuture<'a, Subnet> {
        Box::pin(async move {
            self.enter("get_subnet", subnet_id).await?;
            self.inner.network.get_subnet(subnet_id).await
        })
    }

    fn allocate_port<'a>(&'a self, network_or_subnet_id: &'a str, owner: &'a str) -> DriverFuture<'a, Port> {
        Box::pin(async move {
            self.enter("allocate_port", owner).await?;
            self.inner.network.allocate_port(network_or_subnet_id, owner).await
        })
    }
}

impl AmphoraDriver for TestDriver {
    fn get_info<'a>(&'a self, amp: &'a AmphoraTarget) -> DriverFuture<'a, ()> {
        Box::pin(async move {
            self.enter("get_info", &amp.id).await?;
            self.inner.amphora.get_info(amp).await
        })
    }

    fn finalize<'a>(&'a self, amp: &'a AmphoraTarget) -> DriverFuture<'a, ()> {
        Box::pin(async move {
            self.enter("finalize", &amp.id).await?;
            self.inner.amphora.finalize(amp).await
        })
    }

    fn boot_files<'a>(&'a self, amphora_id: &'a str, topology: Topology) -> DriverFuture<'a, BootFiles> {
        Box::pin(async move {
            self.enter("boot_files", amphora_id).await?;
            self.inner.amphora.boot_files(amphora_id, topology).await
        })
    }

    fn plug_vip<'a>(
        &'a self,
        amp: &'a AmphoraTarget,
        vip: &'a Port,
        vrrp: &'a Port,
        subnet: &'a Subnet,
    ) -> DriverFuture<'a, ()> {
        Box::pin(async move {
            self.enter("plug_vip", &amp.id).await?;
            self.inner.amphora.plug_vip(amp, vip, vrrp, subnet).await
        })
    }

    fn plug_network<'a>(&'a self, amp: &'a AmphoraTarget, port: &'a Port, subnet: &'a Subnet) -> DriverFuture<'a, ()> {
        Box::pin(async move {
            self.enter("plug_network", &amp.id).await?;
            self.inner.amphora.plug_network(amp, port, subnet).await
        })
    }

    fn upload_config<'a>(&'a self, amp: &'a AmphoraTarget, lb: &'a str) -> DriverFuture<'a, ()> {
        Box::pin(async move {
            self.enter("upload_config", &amp.id).await?;
            self.inner.amphora.upload_config(amp, lb).await
        })
    }

    fn update_vrrp<'a>(&'a self, amp: &'a AmphoraTarget, lb: &'a str, subnet: &'a Subnet) -> DriverFuture<'a, String> {
        Box::pin(async move {
            self.enter("update_vrrp", &amp.id).await?;
            self.inner.amphora.update_vrrp(amp, lb, subnet).await
        })
    }

    fn update_agent_config<'a>(&'a self, amp: &'a AmphoraTarget) -> DriverFuture<'a, ()> {
        Box::pin(async move {
            self.enter("update_agent_config", &amp.id).await?;
            self.inner.amphora.update_agent_config(amp).await
        })
    }

    fn rotate_certificate<'a>(&'a self, amp: &'a AmphoraTarget) -> DriverFuture<'a, time::OffsetDateTime> {
        Box::pin(async move {
            self.enter("rotate_certificate", &amp.id).await?;
            self.inner.amphora.rotate_certificate(amp).await
        })
    }
}
