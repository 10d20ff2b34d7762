//! The pool's idle handling and the idle-memory release (`memory.rs`):
//! which connections are closed, when a release happens, what counts as
//! work, and the `[database]` / `[DEFAULT]` options behind them.

mod common;

use std::path::Path;
use std::time::Duration;

use amphora_controller::config;
use amphora_controller::db::{Backend, Db, PoolSettings};
use amphora_controller::memory::{self, Activity, Released};
use amphora_testkit::wait;
use axum::Router;
use axum::body::Body;
use axum::http::Request;
use tokio::sync::{mpsc, watch};
use tower::ServiceExt;

const DEADLINE: Duration = Duration::from_secs(30);

/// Holds `n` pool connections at once (so the pool opens `n`), then
/// returns them all.
async fn open_connections(db: &Db, n: usize) {
    let mut held = Vec::new();
    for _ in 0..n {
        let mut conn = db.pool.acquire().await.expect("acquire");
        sqlx::Executor::execute(&mut *conn, "SELECT 1").await.expect("query");
        held.push(conn);
    }
    // At least one per holder: one the pool opened before (for the
    // migrations) may still be there.
    let opened = db.pool.size() as usize;
    assert!(opened >= n, "the pool opened {opened} connections for {n} holders");
    drop(held);
    // A returned connection reaches the pool's idle queue asynchronously.
    wait::until("the connections back in the pool", DEADLINE, || {
        let (idle, size) = (db.pool.num_idle(), db.pool.size() as usize);
        async move { (idle == size).then_some(()) }
    })
    .await;
}

async fn load_balancer_count(db: &Db) -> i64 {
    sqlx::query_scalar::<_, i64>("SELECT COUNT(*) FROM load_balancer").fetch_one(&db.pool).await.expect("count")
}

#[tokio::test]
async fn pool_closes_connections_left_idle_longer_than_pool_idle_timeout() {
    for tdb in common::databases().await {
        let settings = PoolSettings { idle_timeout: Duration::from_millis(300), ..PoolSettings::default() };
        let db = Db::open_with(&tdb.url, settings).await.expect("open");
        open_connections(&db, 3).await;
        wait::until(&format!("{}: the idle connections to be closed", tdb.name), DEADLINE, || {
            let size = db.pool.size();
            async move { (size == 0).then_some(()) }
        })
        .await;
        // A closed pool slot is reopened on demand.
        assert_eq!(load_balancer_count(&db).await, 0, "{}", tdb.name);
        db.pool.close().await;
    }
}

#[tokio::test]
async fn max_pool_size_caps_the_connections_one_process_opens() {
    for tdb in common::databases().await {
        let settings = PoolSettings { max_connections: Some(2), ..PoolSettings::default() };
        let db = Db::open_with(&tdb.url, settings).await.expect("open");
        let first = db.pool.acquire().await.expect("first");
        let second = db.pool.acquire().await.expect("second");
        assert!(db.pool.try_acquire().is_none(), "{}: a third connection was handed out", tdb.name);
        drop((first, second));
        db.pool.close().await;
    }
}

#[tokio::test]
async fn release_closes_idle_sqlite_connections_and_leaves_busy_ones_alone() {
    for tdb in common::databases().await {
        let db = Db::open(&tdb.url).await.expect("open");
        open_connections(&db, 3).await;
        let mut busy = db.pool.acquire().await.expect("acquire");
        let released = memory::release(&db).await;
        let expected_closed = if db.backend == Backend::Sqlite { 2 } else { 0 };
        assert_eq!(
            released,
            Released { connections_closed: expected_closed, trimmed: cfg!(target_env = "gnu") },
            "{}",
            tdb.name
        );
        assert_eq!(db.pool.size() as usize, 3 - expected_closed, "{}: connections left", tdb.name);
        // The connection in use still works, and so does the pool.
        sqlx::Executor::execute(&mut *busy, "SELECT 1").await.expect("busy connection still open");
        drop(busy);
        assert_eq!(load_balancer_count(&db).await, 0, "{}", tdb.name);
        db.pool.close().await;
    }
}

#[tokio::test]
async fn idle_process_releases_once_per_quiet_period_after_work() {
    for tdb in common::databases().await {
        let db = Db::open(&tdb.url).await.expect("open");
        let (stop_tx, stop_rx) = watch::channel(false);
        let (tx, mut rx) = mpsc::unbounded_channel();
        let releaser =
            tokio::spawn(memory::release_when_idle(db.clone(), Duration::from_millis(100), stop_rx, move |r| {
                let _ = tx.send(r);
            }));
        // Quiet from the start: one release.
        let first = tokio::time::timeout(DEADLINE, rx.recv()).await.expect("a release after start").expect("open");
        assert!(first.trimmed || !cfg!(target_env = "gnu"), "{}", tdb.name);
        // Work (connections opened, activity counted), then quiet: the
        // connections left idle are released.
        open_connections(&db, 2).await;
        db.activity.touch();
        let second = tokio::time::timeout(DEADLINE, rx.recv()).await.expect("a release after work").expect("open");
        let expected_closed = if db.backend == Backend::Sqlite { 2 } else { 0 };
        assert_eq!(second.connections_closed, expected_closed, "{}", tdb.name);
        stop_tx.send(true).expect("stop");
        tokio::time::timeout(DEADLINE, releaser).await.expect("the releaser stops").expect("join");
        assert!(rx.recv().await.is_none(), "{}: the releaser is gone", tdb.name);
        db.pool.close().await;
    }
}

#[tokio::test]
async fn release_after_idle_zero_never_releases() {
    let dir = tempfile::tempdir().expect("temp dir");
    let db = Db::open(&format!("sqlite:///{}/octavia.db", dir.path().display())).await.expect("open");
    let (_stop_tx, stop_rx) = watch::channel(false);
    // Returns at once instead of watching.
    tokio::time::timeout(
        DEADLINE,
        memory::release_when_idle(db.clone(), Duration::ZERO, stop_rx, |_| panic!("released")),
    )
    .await
    .expect("returns at once");
    db.pool.close().await;
}

#[tokio::test]
async fn every_api_request_counts_as_work_twice() {
    let activity = Activity::default();
    let app: Router = Router::new()
        .route("/", axum::routing::get(|| async { "ok" }))
        .layer(axum::middleware::from_fn_with_state(activity.clone(), memory::count_requests));
    for n in 1..=3u64 {
        let reply = app.clone().oneshot(Request::get("/").body(Body::empty()).expect("request")).await.expect("reply");
        assert_eq!(reply.status(), 200);
        assert_eq!(activity.count(), 2 * n, "arrival and answer of request {n}");
    }
}

/// `text` (without authentication, which is beside the point here).
fn parse(text: &str) -> Result<config::Config, String> {
    let text = format!("{text}\n[api_settings]\nauth_strategy = noauth\n");
    config::parse([(Path::new("octavia.conf"), text.as_str())]).map(|l| l.config).map_err(|e| e.to_string())
}

#[test]
fn pool_and_memory_options_have_upstream_names_and_our_defaults() {
    let c = parse("[database]\nconnection = sqlite:////tmp/x.db\n").expect("defaults");
    assert_eq!(c.database.max_pool_size, None);
    assert_eq!(c.database.connection_recycle_time, Duration::from_secs(3600));
    assert_eq!(c.database.pool_idle_timeout, Duration::from_secs(60));
    assert_eq!(c.release_memory_after_idle, Duration::from_secs(1));
    assert_eq!(PoolSettings::from(&c.database), PoolSettings::default());

    let c = parse(
        "[DEFAULT]\nrelease_memory_after_idle = 0\n[database]\nconnection = sqlite:////tmp/x.db\n\
         max_pool_size = 3\nconnection_recycle_time = 600\npool_idle_timeout = 2.5\n",
    )
    .expect("set");
    assert_eq!(c.release_memory_after_idle, Duration::ZERO);
    assert_eq!(
        PoolSettings::from(&c.database),
        PoolSettings {
            max_connections: Some(3),
            max_lifetime: Duration::from_secs(600),
            idle_timeout: Duration::from_millis(2500)
        }
    );
}

#[test]
fn bad_pool_and_memory_values_name_their_option() {
    for (text, option) in [
        ("[database]\nmax_pool_size = 0\n", "max_pool_size"),
        ("[database]\nmax_pool_size = many\n", "max_pool_size"),
        ("[database]\nconnection_recycle_time = -1\n", "connection_recycle_time"),
        ("[database]\npool_idle_timeout = soon\n", "pool_idle_timeout"),
        ("[DEFAULT]\nrelease_memory_after_idle = -2\n", "release_memory_after_idle"),
    ] {
        let error = parse(text).expect_err(text);
        assert!(error.contains(option), "{text:?}: {error}");
    }
}
