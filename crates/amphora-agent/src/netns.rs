//! The network namespace haproxy runs in (upstream: `amphora-haproxy`).
//!
//! The agent itself stays in the default namespace, where the management
//! interface lives; haproxy processes enter the amphora namespace between
//! fork and exec, and threads that must see that namespace's network (the
//! statistics sampler) enter it once. Creating the namespace is left to
//! iproute2, exactly as upstream's boot unit does, because mounting the
//! namespace file with the right propagation is its job.

use std::fs::File;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};
use std::path::{Path, PathBuf};

use nix::sched::CloneFlags;
use tokio::process::Command;

const NETNS_RUN_DIR: &str = "/run/netns";

#[derive(Debug, thiserror::Error)]
pub enum NetnsError {
    #[error("cannot create network namespace {name}: {detail}")]
    Create { name: String, detail: String },
    #[error("cannot open network namespace {path}: {source}")]
    Open { path: PathBuf, source: std::io::Error },
}

/// An open handle on a named network namespace.
#[derive(Debug)]
pub struct Netns {
    name: String,
    file: File,
}

impl Netns {
    /// Opens the namespace, creating it (with loopback up) when missing.
    pub async fn ensure(name: &str) -> Result<Self, NetnsError> {
        let path = Path::new(NETNS_RUN_DIR).join(name);
        if !path.exists() {
            run_ip(name, &["netns", "add", name]).await?;
            run_ip(name, &["-n", name, "link", "set", "lo", "up"]).await?;
            tracing::info!(namespace = name, "created network namespace");
        }
        let file = File::open(&path).map_err(|source| NetnsError::Open { path, source })?;
        let netns = Self { name: name.to_owned(), file };
        netns.tune();
        Ok(netns)
    }

    /// The kernel settings an amphora image gives the namespace (upstream's
    /// sysctl.d): haproxy must be able to bind a VIP that keepalived has
    /// not (yet) put on this amphora.
    fn tune(&self) {
        const SETTINGS: &[(&str, &str)] =
            &[("/proc/sys/net/ipv4/ip_nonlocal_bind", "1"), ("/proc/sys/net/ipv6/ip_nonlocal_bind", "1")];
        let applied = self.run(|| {
            // /proc/sys/net belongs to the namespace of the thread opening it.
            for (path, value) in SETTINGS {
                std::fs::write(path, value)?;
            }
            Ok(())
        });
        if let Err(e) = applied {
            tracing::warn!(namespace = self.name, error = %e, "cannot tune the namespace's kernel settings");
        }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// Moves the calling thread into this namespace.
    pub fn enter(&self) -> nix::Result<()> {
        nix::sched::setns(self.file.as_fd(), CloneFlags::CLONE_NEWNET)
    }

    /// Runs `work` on a thread inside this namespace; sockets it opens stay
    /// in the namespace after it returns.
    pub fn run<T: Send>(&self, work: impl FnOnce() -> std::io::Result<T> + Send) -> std::io::Result<T> {
        std::thread::scope(|scope| {
            scope
                .spawn(|| {
                    self.enter().map_err(std::io::Error::from)?;
                    work()
                })
                .join()
                .map_err(|_| std::io::Error::other("namespace thread panicked"))?
        })
    }

    /// Makes `command` enter this namespace between fork and exec.
    pub fn enter_on_spawn(&self, command: &mut Command) {
        let fd = self.file.as_raw_fd();
        // SAFETY: the closure runs in the forked child before exec and only
        // makes one async-signal-safe system call. The descriptor stays open
        // because `self` outlives the spawn call that borrows it.
        unsafe {
            command.pre_exec(move || {
                if libc::setns(fd, libc::CLONE_NEWNET) == 0 { Ok(()) } else { Err(std::io::Error::last_os_error()) }
            });
        }
    }
}

impl AsFd for Netns {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.file.as_fd()
    }
}

async fn run_ip(name: &str, args: &[&str]) -> Result<(), NetnsError> {
    let output = Command::new("ip")
        .args(args)
        .output()
        .await
        .map_err(|e| NetnsError::Create { name: name.to_owned(), detail: format!("cannot run ip: {e}") })?;
    if output.status.success() {
        Ok(())
    } else {
        Err(NetnsError::Create {
            name: name.to_owned(),
            detail: format!("ip {} failed: {}", args.join(" "), String::from_utf8_lossy(&output.stderr).trim()),
        })
    }
}
