//! Mutating requests run to completion whether or not their client waits
//! for the answer.
//!
//! hyper drops a request's future when its client closes the connection
//! (the controller's read timeout does that). A handler cut at an `.await`
//! would leave its operation half-done: haproxy started with no supervisor,
//! an interface moved but not configured. hyper may even drop a request's
//! future before polling it once, when it reads the request and the
//! client's close in one go. So a mutating request becomes a task the agent
//! owns the moment hyper hands it over (reading its body included: a body
//! cut short is refused, never half-applied); the connection only awaits
//! the task's answer. The domain services' own locks (one per load balancer, one for
//! the network, one for keepalived) then make a retried call wait for the
//! abandoned one and find what it did. At shutdown the agent waits for the
//! operations in flight before it exits.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{OwnedRwLockWriteGuard, RwLock};

/// The operations in flight. Cloning shares them.
#[derive(Debug, Clone, Default)]
pub struct Operations {
    /// Each operation holds a read guard; draining takes the write guard.
    in_flight: Arc<RwLock<()>>,
}

/// An operation that did not return: it panicked, or the runtime shut down
/// under it.
#[derive(Debug, thiserror::Error)]
#[error("the operation did not complete: {0}")]
pub struct Aborted(#[from] tokio::task::JoinError);

/// The agent is draining its operations to exit: none starts.
#[derive(Debug, thiserror::Error)]
#[error("the agent is shutting down")]
pub struct ShuttingDown;

/// A running operation. Dropping it does not stop the operation.
#[derive(Debug)]
pub struct Operation<T> {
    task: tokio::task::JoinHandle<T>,
}

impl<T> Operation<T> {
    /// Waits for the operation's output.
    pub async fn output(self) -> Result<T, Aborted> {
        Ok(self.task.await?)
    }
}

/// Held once every operation has finished; while it is held no operation
/// starts.
#[derive(Debug)]
pub struct Drained {
    _guard: OwnedRwLockWriteGuard<()>,
}

impl Operations {
    pub fn new() -> Self {
        Self::default()
    }

    /// Starts `operation` in a task of its own, at once (not when the
    /// returned handle is first polled), to run to completion whatever
    /// becomes of the handle.
    pub fn spawn<F>(&self, operation: F) -> Result<Operation<F::Output>, ShuttingDown>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        let guard = self.in_flight.clone().try_read_owned().map_err(|_| ShuttingDown)?;
        let task = tokio::spawn(async move {
            let output = operation.await;
            drop(guard);
            output
        });
        Ok(Operation { task })
    }

    /// Waits up to `limit` for the operations in flight to finish, and
    /// stops new ones from starting. `None` when some were still running at
    /// the limit.
    pub async fn drain(&self, limit: Duration) -> Option<Drained> {
        tokio::time::timeout(limit, self.in_flight.clone().write_owned())
            .await
            .ok()
            .map(|guard| Drained { _guard: guard })
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicBool, Ordering};

    use tokio::sync::oneshot;

    use super::*;

    const LIMIT: Duration = Duration::from_secs(10);

    /// An operation that says when it started, waits for `release`, then
    /// sets `done`.
    fn gated(done: Arc<AtomicBool>) -> (oneshot::Sender<()>, oneshot::Receiver<()>, impl Future<Output = u32>) {
        let (release, released) = oneshot::channel::<()>();
        let (started, entered) = oneshot::channel::<()>();
        let operation = async move {
            let _ = started.send(());
            let _ = released.await;
            done.store(true, Ordering::SeqCst);
            7
        };
        (release, entered, operation)
    }

    #[tokio::test]
    async fn an_operation_completes_after_its_caller_is_dropped() {
        let operations = Operations::new();
        let done = Arc::new(AtomicBool::new(false));
        let (release, entered, operation) = gated(done.clone());
        let caller = tokio::spawn({
            let operations = operations.clone();
            async move { operations.spawn(operation).expect("not shutting down").output().await }
        });
        entered.await.expect("the operation started");
        // What hyper does to a handler whose client went away.
        caller.abort();
        assert!(caller.await.expect_err("the caller was cancelled").is_cancelled());
        assert!(!done.load(Ordering::SeqCst));
        release.send(()).expect("the operation still waits for its release");
        // Draining returns once the operation, with no caller left, is done.
        let drained = operations.drain(LIMIT).await;
        assert!(drained.is_some(), "the operation finished");
        assert!(done.load(Ordering::SeqCst));
    }

    #[tokio::test]
    async fn an_operation_starts_even_if_its_handle_is_never_polled() {
        let operations = Operations::new();
        let done = Arc::new(AtomicBool::new(false));
        let (release, entered, operation) = gated(done.clone());
        drop(operations.spawn(operation).expect("not shutting down"));
        entered.await.expect("the operation started without anyone waiting for it");
        release.send(()).expect("release");
        assert!(operations.drain(LIMIT).await.is_some());
        assert!(done.load(Ordering::SeqCst));
    }

    #[tokio::test]
    async fn a_waiting_caller_gets_the_output() {
        let operations = Operations::new();
        let output = operations.spawn(async { 41 + 1 }).expect("not shutting down").output().await;
        assert_eq!(output.expect("completed"), 42);
    }

    #[tokio::test]
    async fn a_panicking_operation_is_an_error_not_a_panic_of_the_caller() {
        let operations = Operations::new();
        let operation = operations.spawn(async { panic!("BAD_TEST_DATA: a handler bug") }).expect("spawned");
        let outcome: Result<(), Aborted> = operation.output().await;
        assert!(outcome.expect_err("aborted").0.is_panic());
        // It released its place: draining does not wait for it.
        assert!(operations.drain(LIMIT).await.is_some());
    }

    #[tokio::test]
    async fn drain_waits_for_operations_in_flight_and_gives_up_at_its_limit() {
        let operations = Operations::new();
        let done = Arc::new(AtomicBool::new(false));
        let (release, entered, operation) = gated(done.clone());
        let running = operations.spawn(operation).expect("not shutting down");
        entered.await.expect("the operation started");
        assert!(operations.drain(Duration::from_millis(50)).await.is_none(), "an operation is still running");
        release.send(()).expect("release");
        let drained = operations.drain(LIMIT).await.expect("drained");
        assert!(done.load(Ordering::SeqCst));
        assert_eq!(running.output().await.expect("completed"), 7);
        // While drained, nothing new starts.
        assert!(operations.spawn(async {}).is_err(), "an operation started after draining");
        drop(drained);
        operations.spawn(async {}).expect("starts again once the drain is released").output().await.expect("ran");
    }

    /// The cost of a task per mutating request. Run with
    /// `cargo test -p amphora-agent --lib spawn_cost -- --ignored --nocapture`.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    #[ignore = "a measurement, not a check"]
    async fn spawn_cost() {
        const N: u32 = 200_000;
        let operations = Operations::new();
        let started = std::time::Instant::now();
        for i in 0..N {
            std::hint::black_box(async move { i }.await);
        }
        let inline = started.elapsed();
        let started = std::time::Instant::now();
        for i in 0..N {
            let operation = operations.spawn(async move { i }).expect("not shutting down");
            std::hint::black_box(operation.output().await.expect("completed"));
        }
        let spawned = started.elapsed();
        println!(
            "inline {:.3} us/op, as an operation task {:.3} us/op, cost {:.3} us/op",
            inline.as_secs_f64() * 1e6 / f64::from(N),
            spawned.as_secs_f64() * 1e6 / f64::from(N),
            (spawned.as_secs_f64() - inline.as_secs_f64()) * 1e6 / f64::from(N),
        );
    }
}
