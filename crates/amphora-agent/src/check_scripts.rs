//! keepalived's track scripts: the one writer of `{base_path}/vrrp/check_script.sh`,
//! `check_scripts/haproxy_check_script.sh` and
//! `check_scripts/lvs_check_script.sh`.
//!
//! Three events rewrite them: a VRRP configuration upload, a change in
//! which load balancers should run, and a change in which UDP/SCTP (LVS)
//! listeners should run. Were each to compute the list of stats
//! sockets and then write it, the one computed first could be written last
//! and leave keepalived tracking a stale list. So writes are serialised here,
//! and each writer computes the list while it holds the lock: the last write
//! always carries the list as it was when it ran.

use std::path::{Path, PathBuf};

use crate::fsutil;
use crate::keepalived::{KeepalivedError, io_error, shell_quote};
use crate::layout::Layout;

/// The track scripts of one keepalived, and their lock.
#[derive(Debug)]
pub struct CheckScripts {
    /// `check_script.sh`, the one keepalived's configuration names.
    main: PathBuf,
    /// `check_scripts/`: every script in it runs on each check.
    scripts_dir: PathBuf,
    /// Where the main script records the last failure.
    failure_log: PathBuf,
    /// The `amphora-vrrp-check` binary.
    checker: PathBuf,
    /// Held while writing: what was last written.
    writing: tokio::sync::Mutex<Watched>,
}

/// What the scripts check.
#[derive(Debug, Default)]
struct Watched {
    /// Stats sockets of the load balancers that should run.
    sockets: Vec<PathBuf>,
    /// Pid files of the LVS listeners' keepalived that should run.
    lvs_pid_files: Vec<PathBuf>,
}

impl CheckScripts {
    pub fn new(layout: &Layout, checker: PathBuf) -> Self {
        Self {
            main: layout.check_script(),
            scripts_dir: layout.check_scripts_dir(),
            failure_log: layout.last_check_failure(),
            checker,
            writing: tokio::sync::Mutex::new(Watched::default()),
        }
    }

    /// The script that asks each load balancer's stats socket.
    pub fn haproxy_script(&self) -> PathBuf {
        self.scripts_dir.join("haproxy_check_script.sh")
    }

    /// The script that checks the LVS listeners' keepalived.
    pub fn lvs_script(&self) -> PathBuf {
        self.scripts_dir.join("lvs_check_script.sh")
    }

    /// Rewrites the scripts for the stats sockets `wanted` returns (those
    /// of the load balancers that should run). `wanted` is called with the
    /// lock held, so that it sees every change made before this call.
    pub async fn rewrite(&self, wanted: impl FnOnce() -> Vec<PathBuf>) -> Result<(), KeepalivedError> {
        let mut watched = self.writing.lock().await;
        watched.sockets = wanted();
        self.write(&watched).await
    }

    /// Records the pid files `wanted` returns (those of the LVS listeners'
    /// keepalived that should run), and rewrites the scripts when `write`
    /// (VRRP is configured; otherwise the next [`Self::rewrite`] carries
    /// them). `wanted` is called with the lock held.
    pub async fn lvs_changed(&self, wanted: impl FnOnce() -> Vec<PathBuf>, write: bool) -> Result<(), KeepalivedError> {
        let mut watched = self.writing.lock().await;
        watched.lvs_pid_files = wanted();
        if write { self.write(&watched).await } else { Ok(()) }
    }

    async fn write(&self, watched: &Watched) -> Result<(), KeepalivedError> {
        let dir = &self.scripts_dir;
        fsutil::create_dir_all(dir, 0o755).map_err(io_error(format!("cannot create {}", dir.display())))?;
        fsutil::write_atomic_async(&self.main, self.main_script_text().as_bytes(), 0o755)
            .await
            .map_err(io_error("cannot write check_script.sh"))?;
        fsutil::write_atomic_async(
            &self.haproxy_script(),
            haproxy_script_text(&self.checker, &watched.sockets, !watched.lvs_pid_files.is_empty()).as_bytes(),
            0o755,
        )
        .await
        .map_err(io_error("cannot write haproxy_check_script.sh"))?;
        match lvs_script_text(&self.checker, &watched.lvs_pid_files) {
            None => {
                fsutil::remove_file_if_exists(&self.lvs_script()).map_err(io_error("cannot remove lvs_check_script.sh"))
            }
            Some(text) => fsutil::write_atomic_async(&self.lvs_script(), text.as_bytes(), 0o755)
                .await
                .map_err(io_error("cannot write lvs_check_script.sh")),
        }
    }

    fn main_script_text(&self) -> String {
        format!(
            "#!/bin/sh\n# Written by the amphora agent: keepalived's track script.\n\
             # Fails when any script of {dir} fails; the last failure is kept in\n\
             # {log} for whoever wonders why this amphora gave up its VIP.\n\
             PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin\nstatus=0\n\
             for file in {dir}/*; do\n    [ -f \"$file\" ] || continue\n\
             \x20   if ! output=$(sh \"$file\" 2>&1); then\n\
             \x20       status=$((status + 1))\n\
             \x20       echo \"$(date -u +%FT%TZ) $file: $output\" > {log}\n\
             \x20   fi\ndone\nexit $status\n",
            dir = self.scripts_dir.display(),
            log = self.failure_log.display(),
        )
    }
}

/// The haproxy track script: ask every socket. With no load balancer it
/// fails, so keepalived does not make this amphora MASTER, unless an LVS
/// listener should run (upstream counts those as a reason to be MASTER
/// too; their own script checks them).
fn haproxy_script_text(checker: &Path, sockets: &[PathBuf], lvs_listeners: bool) -> String {
    if sockets.is_empty() {
        return if lvs_listeners { "exit 0\n" } else { "exit 1\n" }.to_owned();
    }
    let list: Vec<String> = sockets.iter().map(|s| shell_quote(&s.display().to_string())).collect();
    format!("exec {} {}\n", shell_quote(&checker.display().to_string()), list.join(" "))
}

/// The LVS track script: every listener's keepalived must be alive
/// (`amphora-vrrp-check --pid-file`); none when no LVS listener should run.
fn lvs_script_text(checker: &Path, pid_files: &[PathBuf]) -> Option<String> {
    if pid_files.is_empty() {
        return None;
    }
    let list: Vec<String> =
        pid_files.iter().map(|p| format!("--pid-file {}", shell_quote(&p.display().to_string()))).collect();
    Some(format!("exec {} {}\n", shell_quote(&checker.display().to_string()), list.join(" ")))
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    fn scripts(dir: &Path) -> Arc<CheckScripts> {
        let layout = Layout::new(dir.to_owned(), dir.join("certs"));
        Arc::new(CheckScripts::new(&layout, PathBuf::from("/usr/bin/amphora-vrrp-check")))
    }

    fn sockets(prefix: &str, n: usize) -> Vec<PathBuf> {
        (0..n).map(|i| PathBuf::from(format!("/var/lib/octavia/{prefix}-{i}.sock"))).collect()
    }

    #[tokio::test]
    async fn scripts_name_the_checker_and_every_socket() {
        let dir = tempfile::tempdir().expect("tempdir");
        let scripts = scripts(dir.path());
        scripts.rewrite(|| vec![PathBuf::from("/x/a.sock"), PathBuf::from("/x/it's.sock")]).await.expect("write");
        assert_eq!(
            std::fs::read_to_string(scripts.haproxy_script()).expect("read"),
            "exec '/usr/bin/amphora-vrrp-check' '/x/a.sock' '/x/it'\\''s.sock'\n"
        );
        let main = std::fs::read_to_string(dir.path().join("vrrp/check_script.sh")).expect("read");
        assert!(main.starts_with("#!/bin/sh\n"), "{main}");
        let scripts_dir = dir.path().join("vrrp/check_scripts");
        assert!(main.contains(&format!("for file in {}/*; do", scripts_dir.display())), "{main}");
        scripts.rewrite(Vec::new).await.expect("write");
        assert_eq!(std::fs::read_to_string(scripts.haproxy_script()).expect("read"), "exit 1\n");
    }

    #[tokio::test]
    async fn lvs_listeners_get_their_script_and_let_the_amphora_be_master_without_haproxy() {
        let dir = tempfile::tempdir().expect("tempdir");
        let scripts = scripts(dir.path());
        // Recorded while VRRP is not configured: nothing written yet.
        scripts
            .lvs_changed(|| vec![PathBuf::from("/l/a.pid"), PathBuf::from("/l/b.pid")], false)
            .await
            .expect("record");
        assert!(!scripts.lvs_script().exists());
        // The VRRP upload's rewrite carries them.
        scripts.rewrite(Vec::new).await.expect("write");
        assert_eq!(std::fs::read_to_string(scripts.haproxy_script()).expect("read"), "exit 0\n");
        assert_eq!(
            std::fs::read_to_string(scripts.lvs_script()).expect("read"),
            "exec '/usr/bin/amphora-vrrp-check' --pid-file '/l/a.pid' --pid-file '/l/b.pid'\n"
        );
        // The last LVS listener goes: its script goes, and no listener at
        // all fails the track script again.
        scripts.lvs_changed(Vec::new, true).await.expect("write");
        assert!(!scripts.lvs_script().exists());
        assert_eq!(std::fs::read_to_string(scripts.haproxy_script()).expect("read"), "exit 1\n");
    }

    /// Two writers racing leave one of their two scripts whole, never a
    /// mix of both.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_writers_leave_one_complete_script() {
        let dir = tempfile::tempdir().expect("tempdir");
        let scripts = scripts(dir.path());
        let (a, b) = (sockets("a", 200), sockets("b", 300));
        let checker = PathBuf::from("/usr/bin/amphora-vrrp-check");
        let (text_a, text_b) = (haproxy_script_text(&checker, &a, false), haproxy_script_text(&checker, &b, false));
        for _ in 0..20 {
            let (first, second) = (scripts.clone(), scripts.clone());
            let (a, b) = (a.clone(), b.clone());
            let (r1, r2) = tokio::join!(
                tokio::spawn(async move { first.rewrite(move || a).await }),
                tokio::spawn(async move { second.rewrite(move || b).await }),
            );
            r1.expect("join").expect("write");
            r2.expect("join").expect("write");
            let written = std::fs::read_to_string(scripts.haproxy_script()).expect("read");
            assert!(written == text_a || written == text_b, "a mix of two writes: {written}");
        }
    }

    /// Whatever order racing writers finish in, the script ends with the
    /// list as it stood after the last change: each writer reads the list
    /// under the lock, after every change that preceded its call.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_last_write_carries_the_latest_list() {
        let dir = tempfile::tempdir().expect("tempdir");
        let scripts = scripts(dir.path());
        let wanted = Arc::new(AtomicUsize::new(0));
        let mut writers = Vec::new();
        for n in 1..=16 {
            let (scripts, wanted) = (scripts.clone(), wanted.clone());
            writers.push(tokio::spawn(async move {
                // A change of what should run, then the rewrite it causes.
                wanted.store(n, Ordering::SeqCst);
                scripts.rewrite(|| sockets("lb", wanted.load(Ordering::SeqCst))).await
            }));
        }
        for writer in writers {
            writer.await.expect("join").expect("write");
        }
        let latest = sockets("lb", wanted.load(Ordering::SeqCst));
        let expected = haproxy_script_text(&PathBuf::from("/usr/bin/amphora-vrrp-check"), &latest, false);
        assert_eq!(std::fs::read_to_string(scripts.haproxy_script()).expect("read"), expected);
    }
}
