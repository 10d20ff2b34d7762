//! The database: one schema for SQLite (the embedded default) and
//! PostgreSQL, reached through sqlx's `Any` driver with portable SQL.
//!
//! Queries use `$N` placeholders, which both engines accept. What differs
//! is kept here: row locks (`FOR UPDATE [SKIP LOCKED]` exist only on
//! PostgreSQL) and write serialisation (SQLite has one writer: every write
//! transaction takes the process-wide writer lock first, so no transaction
//! ever fails on a lock upgrade).

use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use sqlx::any::{AnyPoolOptions, AnyRow};
use sqlx::{Any, AnyPool, Row, Transaction};
use tokio::sync::{Mutex, MutexGuard};

pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

#[derive(Debug, thiserror::Error)]
pub enum DbError {
    #[error("unsupported [database] connection {0:?}: expected sqlite:///path or postgresql://...")]
    Url(String),
    #[error("cannot create the database directory {path}: {source}")]
    Directory { path: PathBuf, source: std::io::Error },
    #[error("database: {0}")]
    Sql(#[from] sqlx::Error),
    #[error("database migration: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
}

/// A pool and what the SQL must know about its engine.
#[derive(Debug, Clone)]
pub struct Db {
    pub pool: AnyPool,
    pub backend: Backend,
    writer: Option<Arc<Mutex<()>>>,
    /// The work the process does with this pool (API requests, jobs):
    /// what `crate::memory` watches to tell when the process is idle.
    pub activity: crate::memory::Activity,
}

/// How the pool keeps its connections (`[database]`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PoolSettings {
    /// At most this many connections; `None`: 8 on SQLite, 16 on PostgreSQL.
    pub max_connections: Option<u32>,
    /// A connection older than this is closed once it is returned.
    pub max_lifetime: Duration,
    /// A connection unused for this long is closed (each open SQLite
    /// connection keeps its own page cache and thread).
    pub idle_timeout: Duration,
}

impl Default for PoolSettings {
    fn default() -> PoolSettings {
        PoolSettings {
            max_connections: None,
            max_lifetime: Duration::from_secs(3600),
            idle_timeout: Duration::from_secs(60),
        }
    }
}

impl From<&crate::config::Database> for PoolSettings {
    fn from(d: &crate::config::Database) -> PoolSettings {
        PoolSettings {
            max_connections: d.max_pool_size,
            max_lifetime: d.connection_recycle_time,
            idle_timeout: d.pool_idle_timeout,
        }
    }
}

/// A write transaction; on SQLite it also holds the writer lock.
#[derive(Debug)]
pub struct WriteTx<'a> {
    pub tx: Transaction<'static, Any>,
    _writer: Option<MutexGuard<'a, ()>>,
}

impl WriteTx<'_> {
    pub async fn commit(self) -> Result<(), sqlx::Error> {
        self.tx.commit().await
    }
}

impl std::ops::Deref for WriteTx<'_> {
    type Target = Transaction<'static, Any>;
    fn deref(&self) -> &Self::Target {
        &self.tx
    }
}

impl std::ops::DerefMut for WriteTx<'_> {
    fn deref_mut(&mut self) -> &mut Self::Target {
        &mut self.tx
    }
}

/// Turns upstream's SQLAlchemy URLs into sqlx ones.
pub fn normalise_url(url: &str) -> Result<(Backend, String, Option<PathBuf>), DbError> {
    if let Some(rest) = url.strip_prefix("sqlite:") {
        // sqlite:///abs/path (SQLAlchemy), sqlite:/abs/path, sqlite://rel
        let path = rest.trim_start_matches("//");
        let path = if rest.starts_with("///") { format!("/{}", path.trim_start_matches('/')) } else { path.to_owned() };
        let path = path.split('?').next().unwrap_or_default().to_owned();
        if path.is_empty() || path == ":memory:" {
            return Err(DbError::Url(url.to_owned()));
        }
        let file = PathBuf::from(&path);
        return Ok((Backend::Sqlite, format!("sqlite://{path}?mode=rwc"), Some(file)));
    }
    for prefix in ["postgresql+psycopg2://", "postgresql://", "postgres://"] {
        if let Some(rest) = url.strip_prefix(prefix) {
            return Ok((Backend::Postgres, format!("postgres://{rest}"), None));
        }
    }
    Err(DbError::Url(url.to_owned()))
}

impl Db {
    /// Connects (creating a SQLite file and its directory on first start)
    /// without touching the schema.
    pub async fn connect(url: &str) -> Result<Db, DbError> {
        Db::connect_with(url, PoolSettings::default()).await
    }

    /// [`Db::connect`] with the pool kept as `settings` say.
    pub async fn connect_with(url: &str, settings: PoolSettings) -> Result<Db, DbError> {
        sqlx::any::install_default_drivers();
        let (backend, url, file) = normalise_url(url)?;
        if let Some(parent) = file.as_deref().and_then(Path::parent).filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent).map_err(|source| DbError::Directory { path: parent.to_owned(), source })?;
        }
        // No connection is kept open for its own sake: after a burst the
        // pool shrinks back as connections sit idle.
        let options = AnyPoolOptions::new()
            .acquire_timeout(Duration::from_secs(30))
            .min_connections(0)
            .idle_timeout(Some(settings.idle_timeout).filter(|t| !t.is_zero()))
            .max_lifetime(Some(settings.max_lifetime).filter(|t| !t.is_zero()));
        let pool = match backend {
            Backend::Sqlite => {
                options
                    .max_connections(settings.max_connections.unwrap_or(8))
                    .after_connect(|conn, _| {
                        Box::pin(async move {
                            use sqlx::Executor;
                            conn.execute("PRAGMA journal_mode = WAL").await?;
                            conn.execute("PRAGMA synchronous = NORMAL").await?;
                            conn.execute("PRAGMA busy_timeout = 10000").await?;
                            conn.execute("PRAGMA foreign_keys = ON").await?;
                            Ok(())
                        })
                    })
                    .connect(&url)
                    .await?
            }
            Backend::Postgres => options.max_connections(settings.max_connections.unwrap_or(16)).connect(&url).await?,
        };
        let writer = (backend == Backend::Sqlite).then(|| Arc::new(Mutex::new(())));
        Ok(Db { pool, backend, writer, activity: Default::default() })
    }

    /// Connects and brings the schema up to date.
    pub async fn open(url: &str) -> Result<Db, DbError> {
        Db::open_with(url, PoolSettings::default()).await
    }

    /// [`Db::open`] with the pool kept as `settings` say.
    pub async fn open_with(url: &str, settings: PoolSettings) -> Result<Db, DbError> {
        let db = Db::connect_with(url, settings).await?;
        db.upgrade().await?;
        Ok(db)
    }

    /// Applies every migration not yet applied (`db upgrade`).
    pub async fn upgrade(&self) -> Result<(), DbError> {
        MIGRATOR.run(&self.pool).await?;
        Ok(())
    }

    /// Begins a write transaction (serialised with other writers on SQLite).
    pub async fn write(&self) -> Result<WriteTx<'_>, sqlx::Error> {
        let guard = match &self.writer {
            Some(lock) => Some(lock.lock().await),
            None => None,
        };
        // SQLite: take the write lock when the transaction begins. A
        // deferred transaction that reads first and then writes cannot
        // wait for another process's writer (SQLite answers "database is
        // locked" at once instead of using busy_timeout), and the mutex
        // above only orders this process's writers.
        let tx = match self.backend {
            Backend::Sqlite => self.pool.begin_with("BEGIN IMMEDIATE").await?,
            Backend::Postgres => self.pool.begin().await?,
        };
        Ok(WriteTx { tx, _writer: guard })
    }

    /// ` FOR UPDATE` where the engine has row locks.
    pub fn for_update(&self) -> &'static str {
        match self.backend {
            Backend::Postgres => " FOR UPDATE",
            Backend::Sqlite => "",
        }
    }

    /// ` FOR UPDATE SKIP LOCKED` where the engine has it.
    pub fn skip_locked(&self) -> &'static str {
        match self.backend {
            Backend::Postgres => " FOR UPDATE SKIP LOCKED",
            Backend::Sqlite => "",
        }
    }
}

/// Now, as upstream renders times: naive UTC ISO-8601 to the second.
pub fn now_text() -> String {
    format_time(time::OffsetDateTime::now_utc())
}

pub fn format_time(t: time::OffsetDateTime) -> String {
    let f = time::macros::format_description!("[year]-[month]-[day]T[hour]:[minute]:[second]");
    t.format(&f).unwrap_or_default()
}

/// Milliseconds since the epoch (health and lease clocks).
pub fn now_millis() -> i64 {
    (time::OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000) as i64
}

pub fn new_id() -> String {
    uuid::Uuid::new_v4().to_string()
}

/// Whether `s` is a UUID in any of the spellings upstream accepts.
pub fn is_uuid(s: &str) -> bool {
    uuid::Uuid::from_str(s).is_ok()
}

/// A text column that may be NULL.
pub fn opt_text(row: &AnyRow, column: &str) -> Result<Option<String>, sqlx::Error> {
    row.try_get::<Option<String>, _>(column)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sqlalchemy_urls_are_understood() {
        let (b, url, file) = normalise_url("sqlite:////var/lib/octavia/o.db").expect("url");
        assert_eq!(b, Backend::Sqlite);
        assert_eq!(url, "sqlite:///var/lib/octavia/o.db?mode=rwc");
        assert_eq!(file, Some(PathBuf::from("/var/lib/octavia/o.db")));
        let (b, url, _) = normalise_url("postgresql+psycopg2://u:p@h:5/db").expect("url");
        assert_eq!(b, Backend::Postgres);
        assert_eq!(url, "postgres://u:p@h:5/db");
        assert!(normalise_url("mysql+pymysql://x").is_err());
        assert!(normalise_url("sqlite://").is_err());
    }

    /// Two processes (here: two pools) on one SQLite file: a write
    /// transaction that reads before it writes must not fail with
    /// "database is locked" because the other committed in between.
    #[tokio::test(flavor = "multi_thread")]
    async fn sqlite_writers_of_two_pools_wait_for_each_other_instead_of_failing() {
        let dir = tempfile::tempdir().expect("temp dir");
        let url = format!("sqlite:///{}/o.db", dir.path().display());
        let first = Db::open(&url).await.expect("open");
        let second = Db::open(&url).await.expect("open again");
        sqlx::query("CREATE TABLE counter (n INTEGER NOT NULL)").execute(&first.pool).await.expect("table");
        sqlx::query("INSERT INTO counter (n) VALUES (0)").execute(&first.pool).await.expect("row");

        let increment = |db: Db| async move {
            let mut tx = db.write().await?;
            let n: i64 = sqlx::query_scalar("SELECT n FROM counter").fetch_one(&mut **tx).await?;
            sqlx::query("UPDATE counter SET n = $1").bind(n + 1).execute(&mut **tx).await?;
            tx.commit().await
        };
        // The second pool's transaction reads first; the first pool's
        // writer then tries to commit an increment of its own.
        let mut tx = second.write().await.expect("begin");
        let n: i64 = sqlx::query_scalar("SELECT n FROM counter").fetch_one(&mut **tx).await.expect("read");
        let mut other = tokio::spawn(increment(first.clone()));
        // A deferred transaction lets the other writer commit now, which
        // makes this one's write fail; an immediate one holds it back.
        let early = tokio::time::timeout(Duration::from_secs(1), &mut other).await;
        sqlx::query("UPDATE counter SET n = $1").bind(n + 1).execute(&mut **tx).await.expect("write after a read");
        tx.commit().await.expect("commit");
        match early {
            Ok(done) => done.expect("task").expect("the other writer"),
            Err(_) => other.await.expect("task").expect("the other writer"),
        }
        let n: i64 = sqlx::query_scalar("SELECT n FROM counter").fetch_one(&first.pool).await.expect("read");
        assert_eq!(n, 2, "both increments are kept");
    }
}
