//! In-process test support: the API router over a fresh database, on
//! SQLite always and on PostgreSQL when `AMPHORA_TEST_POSTGRES` holds a
//! server URL (scripts/test.sh starts one); each test gets its own database.

#![allow(dead_code)]

use std::sync::Arc;

use amphora_controller::api::{self, AppState};
use amphora_controller::config::Config;
use amphora_controller::db::Db;
use axum::Router;
use axum::body::Body;
use axum::http::{Request, StatusCode};
use http_body_util::BodyExt;
use serde_json::Value;
use tokio::sync::Notify;
use tower::ServiceExt;

/// A database for one test; the temp directory lives as long as it.
pub struct TestDb {
    pub url: String,
    pub name: &'static str,
    _dir: Option<tempfile::TempDir>,
}

/// A fresh SQLite file, and a fresh PostgreSQL database when a server is
/// configured.
pub async fn databases() -> Vec<TestDb> {
    let _ = tracing_subscriber::fmt().with_test_writer().with_env_filter("warn").try_init();
    let dir = tempfile::tempdir().expect("temp dir");
    let url = format!("sqlite:///{}/octavia.db", dir.path().display());
    let mut out = vec![TestDb { url, name: "sqlite", _dir: Some(dir) }];
    if let Ok(server) = std::env::var("AMPHORA_TEST_POSTGRES") {
        out.push(TestDb { url: postgres_database(&server).await, name: "postgres", _dir: None });
    }
    out
}

/// Creates a uniquely named database on the server; returns its URL.
pub async fn postgres_database(server: &str) -> String {
    sqlx::any::install_default_drivers();
    let name = format!("t_{}", uuid::Uuid::new_v4().simple());
    let mut conn = <sqlx::AnyConnection as sqlx::Connection>::connect(server).await.expect("connect to PostgreSQL");
    sqlx::Executor::execute(&mut conn, format!("CREATE DATABASE {name}").as_str()).await.expect("create database");
    let base = server.rsplit_once('/').map(|(b, _)| b).unwrap_or(server);
    format!("{base}/{name}")
}

/// The test configuration: noauth, no noop delay.
pub fn config(url: &str) -> Config {
    Config::for_tests(url)
}

pub struct TestApi {
    pub router: Router,
    pub state: AppState,
    pub db_name: &'static str,
}

pub async fn api(db: &TestDb) -> TestApi {
    api_with(db, config(&db.url)).await
}

pub async fn api_with(db: &TestDb, config: Config) -> TestApi {
    let database = Db::open(&config.database.connection).await.expect("open database");
    let state =
        amphora_controller::api_state(database, Arc::new(config), Arc::new(Notify::new())).await.expect("API state");
    TestApi { router: api::app(state.clone()), state, db_name: db.name }
}

impl TestApi {
    /// Sends one request; returns the status and the JSON body (Null when
    /// empty).
    pub async fn call(&self, method: &str, path: &str, body: Option<Value>) -> (StatusCode, Value) {
        self.call_with(method, path, body, &[]).await
    }

    pub async fn call_with(
        &self,
        method: &str,
        path: &str,
        body: Option<Value>,
        headers: &[(&str, &str)],
    ) -> (StatusCode, Value) {
        let mut req = Request::builder().method(method).uri(path).header("host", "ctl.example");
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let req = match body {
            Some(b) => req.header("content-type", "application/json").body(Body::from(b.to_string())),
            None => req.body(Body::empty()),
        }
        .expect("request");
        let resp = self.router.clone().oneshot(req).await.expect("response");
        let status = resp.status();
        let bytes = resp.into_body().collect().await.expect("body").to_bytes();
        let value = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes).unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into()))
        };
        (status, value)
    }

    /// Runs raw SQL (test setup).
    pub async fn sql(&self, sql: &str) {
        sqlx::query(sql).execute(&self.state.db.pool).await.unwrap_or_else(|e| panic!("{sql}: {e}"));
    }
}
