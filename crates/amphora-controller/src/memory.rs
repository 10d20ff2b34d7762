//! Handing memory back to the system once the controller goes idle.
//!
//! After a burst of work (1000-row list pages, a run of creates) the
//! process would keep its peak memory although nothing uses it:
//!
//! * glibc keeps freed heap in its arenas, one per thread that allocated
//!   (sqlx runs every SQLite connection on a thread of its own, so each
//!   pooled connection has an arena besides tokio's workers'), and gives it
//!   back only when the top of an arena is free;
//! * each pooled SQLite connection keeps a page cache of up to
//!   `PRAGMA cache_size` (2 MiB by default).
//!
//! When the process has done no work (no API request, no job) for
//! `[DEFAULT] release_memory_after_idle`, [`release_when_idle`] releases
//! both once: the idle SQLite connections are closed (their caches,
//! prepared statements and threads go with them) and glibc returns its
//! free pages (`malloc_trim`). Nothing changes while work goes on, so
//! latency under load is not affected; the first request after a release
//! opens a connection again (SQLite's page cache is rebuilt from the
//! operating system's file cache, and SQLite discards it anyway whenever
//! another connection writes).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::sync::watch;

use crate::db::{Backend, Db};

/// A count of the work the process has done; idle is when it stops moving.
#[derive(Debug, Clone, Default)]
pub struct Activity(Arc<AtomicU64>);

impl Activity {
    /// Records some work (a request, a job step).
    pub fn touch(&self) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }

    pub fn count(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// Axum middleware: every request counts as work, when it arrives and
/// when its answer leaves.
pub async fn count_requests(
    axum::extract::State(activity): axum::extract::State<Activity>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    activity.touch();
    let response = next.run(request).await;
    activity.touch();
    response
}

/// What one release did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Released {
    /// Idle SQLite connections closed.
    pub connections_closed: usize,
    /// Whether the allocator was asked to return its free pages (glibc only).
    pub trimmed: bool,
}

/// Releases what can be released now: on SQLite the pool's idle
/// connections are closed (each holds a page cache, prepared statements
/// and a thread; opening one again costs well under a millisecond), the
/// ones in use are left alone; then the allocator returns its free pages.
/// PostgreSQL connections are kept: opening one costs a round of
/// authentication, and their caches live in the server.
pub async fn release(db: &Db) -> Released {
    let mut released = Released::default();
    if db.backend == Backend::Sqlite {
        let mut idle = Vec::new();
        while let Some(conn) = db.pool.try_acquire() {
            idle.push(conn);
        }
        for conn in idle {
            match conn.close().await {
                Ok(()) => released.connections_closed += 1,
                Err(e) => tracing::debug!("closing an idle database connection: {e}"),
            }
        }
    }
    released.trimmed = trim_allocator();
    released
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn trim_allocator() -> bool {
    // SAFETY: malloc_trim only walks glibc's own arenas under their locks;
    // it has no preconditions.
    unsafe { libc::malloc_trim(0) };
    true
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn trim_allocator() -> bool {
    false
}

/// Calls [`release`] once each time the process has been idle (no
/// [`Activity`] on `db`) for `idle_after`, until `shutdown` turns true.
/// `idle_after` zero: never. `on_release` sees each release (tests, logs).
pub async fn release_when_idle(
    db: Db,
    idle_after: Duration,
    shutdown: watch::Receiver<bool>,
    mut on_release: impl FnMut(Released) + Send,
) {
    if idle_after.is_zero() {
        return;
    }
    let stop = crate::stopped(shutdown);
    tokio::pin!(stop);
    // Looked at a few times per idle period, so a release comes between
    // idle_after and 1.25 x idle_after after the last work.
    let tick = (idle_after / 4).max(Duration::from_millis(10));
    let mut seen = db.activity.count();
    let mut quiet_since = tokio::time::Instant::now();
    let mut released_since_work = false;
    loop {
        tokio::select! {
            _ = &mut stop => return,
            _ = tokio::time::sleep(tick) => {}
        }
        let now = db.activity.count();
        if now != seen {
            seen = now;
            quiet_since = tokio::time::Instant::now();
            released_since_work = false;
        } else if !released_since_work && quiet_since.elapsed() >= idle_after {
            let released = release(&db).await;
            tracing::debug!(?released, "idle: released memory");
            released_since_work = true;
            on_release(released);
        }
    }
}
