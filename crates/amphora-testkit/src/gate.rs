//! An `haproxy_cmd` that runs the real haproxy, except that a test can hold
//! the next configuration check (`-c`) or start (`-D`) at a gate: the
//! wrapper stops there, says so, and goes on when the test opens the gate.
//! This makes "a request still in progress" a state a test can wait for,
//! instead of a race it hopes to win.
//!
//! A gate is a FIFO the wrapper reads until the test closes its end. Each
//! hold stops one run. Dropping the [`GatedHaproxy`] opens every gate, so a
//! failed test leaves no wrapper waiting.

use std::fs::OpenOptions;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

use tempfile::TempDir;

use crate::wait;

/// What a gate can stop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    /// `haproxy -c`: a configuration upload's check (also a reload's).
    Check,
    /// `haproxy -W -D`: a start.
    Start,
}

impl Stage {
    fn name(self) -> &'static str {
        match self {
            Stage::Check => "check",
            Stage::Start => "start",
        }
    }
}

/// The wrapper and its gates.
#[derive(Debug)]
pub struct GatedHaproxy {
    dir: TempDir,
}

impl GatedHaproxy {
    /// A wrapper around this system's haproxy.
    pub fn new() -> Self {
        Self::around(Path::new(&crate::agent::haproxy_binary()))
    }

    /// A wrapper around the haproxy binary at `haproxy`.
    pub fn around(haproxy: &Path) -> Self {
        let dir = tempfile::Builder::new().prefix("gated-haproxy.").tempdir().expect("temp dir");
        let script = format!(
            "#!/bin/sh\n\
             # haproxy, held at a gate when the test asks for it.\n\
             dir='{dir}'\n\
             case \" $* \" in\n\
             \x20   *' -c '*) stage=check ;;\n\
             \x20   *' -D '*) stage=start ;;\n\
             \x20   *) stage=none ;;\n\
             esac\n\
             if [ -p \"$dir/hold-$stage\" ] && mv \"$dir/hold-$stage\" \"$dir/held-$stage\" 2>/dev/null; then\n\
             \x20   : > \"$dir/entered-$stage\"\n\
             \x20   cat \"$dir/held-$stage\" > /dev/null\n\
             fi\n\
             exec '{haproxy}' \"$@\"\n",
            dir = dir.path().display(),
            haproxy = haproxy.display(),
        );
        let path = dir.path().join("haproxy");
        std::fs::write(&path, script).expect("write the wrapper");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).expect("make the wrapper executable");
        Self { dir }
    }

    /// The `haproxy_cmd` to configure.
    pub fn command(&self) -> PathBuf {
        self.dir.path().join("haproxy")
    }

    fn file(&self, kind: &str, stage: Stage) -> PathBuf {
        self.dir.path().join(format!("{kind}-{}", stage.name()))
    }

    /// Holds the next run of `stage` at its gate.
    pub fn hold(&self, stage: Stage) {
        let _ = std::fs::remove_file(self.file("entered", stage));
        nix::unistd::mkfifo(&self.file("hold", stage), nix::sys::stat::Mode::from_bits_truncate(0o600))
            .expect("make the gate");
    }

    /// Waits until a run of `stage` waits at its gate.
    pub async fn wait_entered(&self, stage: Stage, timeout: Duration) {
        let entered = self.file("entered", stage);
        wait::until(&format!("haproxy's {} to reach its gate", stage.name()), timeout, || {
            let found = entered.exists();
            async move { found.then_some(()) }
        })
        .await;
    }

    /// Lets the run waiting at the `stage` gate go on.
    pub async fn open(&self, stage: Stage, timeout: Duration) {
        let held = self.file("held", stage);
        // The wrapper says it entered just before it opens its end of the
        // FIFO; opening ours without blocking fails until it has.
        let writer = wait::until(&format!("haproxy's {} to wait at its gate", stage.name()), timeout, || {
            let opened = OpenOptions::new().write(true).custom_flags(libc::O_NONBLOCK).open(&held).ok();
            async move { opened }
        })
        .await;
        drop(writer);
        let _ = std::fs::remove_file(&held);
    }
}

impl Default for GatedHaproxy {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for GatedHaproxy {
    fn drop(&mut self) {
        for stage in [Stage::Check, Stage::Start] {
            let _ = std::fs::remove_file(self.file("hold", stage));
            let held = self.file("held", stage);
            // Opening the writer's end and closing it ends the reader's wait.
            let _ = OpenOptions::new().write(true).custom_flags(libc::O_NONBLOCK).open(&held);
            let _ = std::fs::remove_file(&held);
        }
    }
}
