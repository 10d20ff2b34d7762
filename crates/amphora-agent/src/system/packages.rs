//! Installed versions of the packages that matter to a load balancer.
//!
//! Upstream runs `dpkg-query` on every `/info` call (about 47 ms each). We
//! read the package database once and again only after it changed: an
//! inotify watch on the directories of the sources (dpkg's status file, the
//! RPM databases, the haproxy binary) bumps a change counter, so a cached
//! answer costs `/info` one atomic load and no system call. Reading happens
//! off the runtime (the parse on the blocking pool, `haproxy -v` and
//! `rpm -q` as async child processes), and concurrent callers wait for one
//! read without blocking a worker thread.
//!
//! When the watch cannot be set up (no inotify, too many watches), every
//! call compares the sources' modification times instead, as before.

use std::collections::{BTreeMap, HashMap};
use std::ffi::OsString;
use std::os::fd::{AsFd, AsRawFd, RawFd};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::SystemTime;

use arc_swap::ArcSwapOption;
use nix::sys::inotify::{AddWatchFlags, InitFlags, Inotify};
use tokio::io::Interest;
use tokio::io::unix::AsyncFd;

/// Packages reported in the details, in this order.
pub const TRACKED: &[&str] = &["haproxy", "keepalived", "ipvsadm", "openssl", "iproute2", "nftables"];

const DPKG_STATUS: &str = "/var/lib/dpkg/status";
const RPM_DATABASES: &[&str] = &["/var/lib/rpm", "/usr/lib/sysimage/rpm"];

pub type Versions = BTreeMap<String, String>;

/// Where versions are read from.
#[derive(Debug, Clone)]
pub struct Sources {
    /// dpkg's status file; when it cannot be read, RPM is asked.
    pub dpkg_status: PathBuf,
    /// RPM database directories (watched only).
    pub rpm_databases: Vec<PathBuf>,
    /// Asked with `-v` when no package lists haproxy.
    pub haproxy_cmd: PathBuf,
}

impl Sources {
    /// The system's package databases.
    pub fn system(haproxy_cmd: PathBuf) -> Self {
        Self {
            dpkg_status: PathBuf::from(DPKG_STATUS),
            rpm_databases: RPM_DATABASES.iter().map(PathBuf::from).collect(),
            haproxy_cmd,
        }
    }

    /// Every path versions depend on.
    fn paths(&self) -> impl Iterator<Item = &Path> {
        std::iter::once(self.dpkg_status.as_path())
            .chain(self.rpm_databases.iter().map(PathBuf::as_path))
            .chain(std::iter::once(self.haproxy_cmd.as_path()))
    }
}

/// What a cached answer is valid for.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Key {
    /// The watcher's change count when the read started.
    Changes(u64),
    /// Without a watch: the sources' modification times.
    Stamp(Vec<Option<SystemTime>>),
}

#[derive(Debug)]
struct Cached {
    key: Key,
    versions: Arc<Versions>,
}

#[derive(Debug)]
pub struct Packages {
    sources: Sources,
    /// Bumped on every change the watch reports; `None` without a watch.
    changes: Option<Arc<AtomicU64>>,
    cache: ArcSwapOption<Cached>,
    /// One read at a time; the others wait for its result.
    reading: tokio::sync::Mutex<()>,
}

impl Packages {
    /// Starts watching `sources` (on the current runtime). Must be called
    /// inside a tokio runtime.
    pub fn new(sources: Sources) -> Self {
        let changes = match watch(&sources) {
            Ok(changes) => Some(changes),
            Err(e) => {
                tracing::warn!(error = %e, "cannot watch the package database; checking it on every request");
                None
            }
        };
        Self { sources, changes, cache: ArcSwapOption::empty(), reading: tokio::sync::Mutex::new(()) }
    }

    /// Versions of the tracked packages that are installed.
    pub async fn versions(&self) -> Arc<Versions> {
        if let Some(versions) = self.cached(&self.key().await) {
            return versions;
        }
        let _reading = self.reading.lock().await;
        // Someone else may have read it while we waited.
        let key = self.key().await;
        if let Some(versions) = self.cached(&key) {
            return versions;
        }
        let versions = Arc::new(read_versions(&self.sources).await);
        self.cache.store(Some(Arc::new(Cached { key, versions: versions.clone() })));
        versions
    }

    fn cached(&self, key: &Key) -> Option<Arc<Versions>> {
        self.cache.load().as_ref().filter(|c| c.key == *key).map(|c| c.versions.clone())
    }

    async fn key(&self) -> Key {
        match &self.changes {
            Some(changes) => Key::Changes(changes.load(Ordering::Acquire)),
            None => {
                let paths: Vec<PathBuf> = self.sources.paths().map(Path::to_owned).collect();
                let stamp = tokio::task::spawn_blocking(move || {
                    paths.iter().map(|p| std::fs::metadata(p).and_then(|m| m.modified()).ok()).collect()
                })
                .await
                .unwrap_or_default();
                Key::Stamp(stamp)
            }
        }
    }
}

/// An inotify instance as tokio's readiness source.
#[derive(Debug)]
struct Watch(Inotify);

impl AsRawFd for Watch {
    fn as_raw_fd(&self) -> RawFd {
        self.0.as_fd().as_raw_fd()
    }
}

/// Watches the directories holding the sources (files are replaced by
/// rename, which a watch on the file itself would not survive) and counts
/// the changes that concern a source. A source whose directory does not
/// exist (no RPM on Debian) is not watched; failing to watch one that
/// exists is an error.
fn watch(sources: &Sources) -> std::io::Result<Arc<AtomicU64>> {
    let inotify = Inotify::init(InitFlags::IN_NONBLOCK | InitFlags::IN_CLOEXEC)?;
    let entry_changes = AddWatchFlags::IN_CLOSE_WRITE
        | AddWatchFlags::IN_MOVED_TO
        | AddWatchFlags::IN_MOVED_FROM
        | AddWatchFlags::IN_CREATE
        | AddWatchFlags::IN_DELETE
        | AddWatchFlags::IN_ATTRIB;
    // Per watched directory: the names that matter, or every name.
    let mut names: HashMap<i32, Option<Vec<OsString>>> = HashMap::new();
    let mut add = |dir: &Path, name: Option<OsString>, extra: AddWatchFlags| -> std::io::Result<()> {
        if !dir.is_dir() {
            return Ok(());
        }
        let wd = inotify.add_watch(dir, entry_changes | extra)?;
        let entry = names.entry(wd.as_raw()).or_insert_with(|| Some(Vec::new()));
        match (entry, name) {
            (Some(list), Some(name)) => list.push(name),
            (entry, _) => *entry = None,
        }
        Ok(())
    };
    let file_in_dir = |path: &Path| -> Option<(PathBuf, OsString)> {
        let dir = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
        Some((dir.to_owned(), path.file_name()?.to_owned()))
    };
    for file in [&sources.dpkg_status, &sources.haproxy_cmd] {
        if let Some((dir, name)) = file_in_dir(file) {
            add(&dir, Some(name), AddWatchFlags::empty())?;
        }
    }
    // The RPM databases change in place (SQLite, Berkeley DB).
    for dir in &sources.rpm_databases {
        add(dir, None, AddWatchFlags::IN_MODIFY)?;
    }
    // SAFETY: `Watch` owns the inotify descriptor; it stays open, and
    // `as_raw_fd` returns it, for as long as the AsyncFd owns the `Watch`.
    let fd = unsafe { AsyncFd::register_with_interest(Watch(inotify), Interest::READABLE) }?;
    let changes = Arc::new(AtomicU64::new(0));
    tokio::spawn(follow(fd, names, Arc::downgrade(&changes)));
    Ok(changes)
}

/// Counts relevant events until the `Packages` is gone.
async fn follow(fd: AsyncFd<Watch>, names: HashMap<i32, Option<Vec<OsString>>>, changes: Weak<AtomicU64>) {
    loop {
        let mut ready = match fd.readable().await {
            Ok(ready) => ready,
            Err(e) => {
                tracing::warn!(error = %e, "package database watch failed");
                return;
            }
        };
        let events = match ready.try_io(|fd| fd.get_ref().0.read_events().map_err(std::io::Error::from)) {
            Ok(Ok(events)) => events,
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "cannot read package database events");
                return;
            }
            Err(_would_block) => continue,
        };
        let relevant = events.iter().any(|event| {
            // Lost events, or a watched directory gone: assume a change.
            if event.mask.intersects(AddWatchFlags::IN_Q_OVERFLOW | AddWatchFlags::IN_IGNORED) {
                return true;
            }
            match names.get(&event.wd.as_raw()) {
                Some(None) => true,
                Some(Some(list)) => event.name.as_ref().is_some_and(|n| list.contains(n)),
                None => false,
            }
        });
        let Some(changes) = changes.upgrade() else { return };
        if relevant {
            changes.fetch_add(1, Ordering::AcqRel);
        }
    }
}

async fn read_versions(sources: &Sources) -> Versions {
    let status = sources.dpkg_status.clone();
    let parsed = tokio::task::spawn_blocking(move || {
        std::fs::read_to_string(&status).ok().map(|text| parse_dpkg_status(&text, TRACKED))
    })
    .await
    .ok()
    .flatten();
    let mut versions = match parsed {
        Some(versions) => versions,
        None => rpm_versions(TRACKED).await,
    };
    if !versions.contains_key("haproxy")
        && let Ok(out) = tokio::process::Command::new(&sources.haproxy_cmd).arg("-v").output().await
        && let Some(version) = parse_haproxy_version(&String::from_utf8_lossy(&out.stdout))
    {
        versions.insert("haproxy".into(), version);
    }
    versions
}

/// Versions of `wanted` packages that dpkg's status file lists as installed.
pub fn parse_dpkg_status(text: &str, wanted: &[&str]) -> Versions {
    let mut versions = Versions::new();
    for stanza in text.split("\n\n") {
        let (mut name, mut version, mut installed) = (None, None, false);
        for line in stanza.lines() {
            if let Some(v) = line.strip_prefix("Package: ") {
                name = Some(v.trim());
            } else if let Some(v) = line.strip_prefix("Version: ") {
                version = Some(v.trim());
            } else if let Some(v) = line.strip_prefix("Status: ") {
                installed = v.split_whitespace().last() == Some("installed");
            }
        }
        if let (Some(name), Some(version), true) = (name, version, installed)
            && wanted.contains(&name)
        {
            versions.insert(name.to_owned(), version.to_owned());
        }
    }
    versions
}

async fn rpm_versions(wanted: &[&str]) -> Versions {
    let mut versions = Versions::new();
    for name in wanted {
        let Ok(out) =
            tokio::process::Command::new("rpm").args(["-q", "--queryformat", "%{VERSION}", *name]).output().await
        else {
            // No rpm at all: nothing more to ask.
            break;
        };
        if out.status.success() {
            versions.insert(name.to_string(), String::from_utf8_lossy(&out.stdout).trim().to_owned());
        }
    }
    versions
}

/// The version out of `haproxy -v`: "HAProxy version 2.6.12-1+deb12u3 2025/10/03 - ..."
pub fn parse_haproxy_version(text: &str) -> Option<String> {
    let line = text.lines().next()?;
    let mut words = line.split_whitespace();
    words.find(|w| *w == "version")?;
    words.next().map(str::to_owned)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn dpkg_status_installed_packages_only() {
        let text = "\
Package: haproxy
Status: install ok installed
Version: 2.6.12-1+deb12u3

Package: keepalived
Status: deinstall ok config-files
Version: 1:2.2.7-1+b2

Package: bash
Status: install ok installed
Version: 5.2.15-2+b7

Package: openssl
Status: install ok installed
Priority: optional
Version: 3.0.19-1~deb12u1
";
        let versions = parse_dpkg_status(text, TRACKED);
        assert_eq!(
            versions,
            Versions::from([
                ("haproxy".to_owned(), "2.6.12-1+deb12u3".to_owned()),
                ("openssl".to_owned(), "3.0.19-1~deb12u1".to_owned()),
            ])
        );
    }

    #[test]
    fn haproxy_dash_v() {
        let text = "HAProxy version 2.6.12-1+deb12u3 2025/10/03 - https://haproxy.org/\nStatus: long-term\n";
        assert_eq!(parse_haproxy_version(text).as_deref(), Some("2.6.12-1+deb12u3"));
        assert_eq!(parse_haproxy_version("nonsense"), None);
    }

    fn status_file(haproxy: &str) -> String {
        format!(
            "Package: haproxy\nStatus: install ok installed\nVersion: {haproxy}\n\n\
             Package: keepalived\nStatus: install ok installed\nVersion: 1:2.2.7-1+b2\n"
        )
    }

    /// A fake system: a dpkg status file and an haproxy that is never run
    /// (the status file lists haproxy).
    fn fake_sources(dir: &Path) -> Sources {
        Sources {
            dpkg_status: dir.join("dpkg").join("status"),
            rpm_databases: vec![dir.join("no-rpm")],
            haproxy_cmd: dir.join("sbin").join("haproxy"),
        }
    }

    /// dpkg's way: write `status-new`, rename it over `status`.
    fn install(sources: &Sources, haproxy: &str) {
        let staged = sources.dpkg_status.with_file_name("status-new");
        std::fs::write(&staged, status_file(haproxy)).expect("write");
        std::fs::rename(&staged, &sources.dpkg_status).expect("rename");
    }

    #[tokio::test(flavor = "current_thread")]
    async fn versions_follow_a_replaced_package_database() {
        let dir = tempfile::tempdir().expect("tempdir");
        let sources = fake_sources(dir.path());
        std::fs::create_dir_all(sources.dpkg_status.parent().expect("dir")).expect("mkdir");
        install(&sources, "2.6.12-1");
        let packages = Packages::new(sources.clone());
        assert!(packages.changes.is_some(), "the database is watched");
        let first = packages.versions().await;
        assert_eq!(first.get("haproxy").map(String::as_str), Some("2.6.12-1"));
        assert_eq!(first.get("keepalived").map(String::as_str), Some("1:2.2.7-1+b2"));
        // Unchanged: the very same answer, not a new read.
        assert!(Arc::ptr_eq(&first, &packages.versions().await));

        install(&sources, "2.8.5-1");
        let upgraded = amphora_testkit::wait::until("the upgrade to show", Duration::from_secs(10), || async {
            let versions = packages.versions().await;
            (versions.get("haproxy").map(String::as_str) == Some("2.8.5-1")).then_some(versions)
        })
        .await;
        assert!(Arc::ptr_eq(&upgraded, &packages.versions().await), "cached again after the change");
    }

    #[tokio::test(flavor = "current_thread")]
    async fn other_files_beside_the_database_do_not_invalidate_it() {
        let dir = tempfile::tempdir().expect("tempdir");
        let sources = fake_sources(dir.path());
        std::fs::create_dir_all(sources.dpkg_status.parent().expect("dir")).expect("mkdir");
        install(&sources, "2.6.12-1");
        let packages = Packages::new(sources.clone());
        let first = packages.versions().await;
        std::fs::write(sources.dpkg_status.with_file_name("lock"), "x").expect("write");
        // A change to the database itself afterwards, to know the watcher
        // has handled the unrelated event before it.
        install(&sources, "2.6.12-1");
        let second = amphora_testkit::wait::until("the database change", Duration::from_secs(10), || async {
            let versions = packages.versions().await;
            (!Arc::ptr_eq(&versions, &first)).then_some(versions)
        })
        .await;
        assert_eq!(packages.changes.as_ref().expect("watched").load(Ordering::Acquire), 1, "only `status` counted");
        assert_eq!(second, first);
    }

    #[tokio::test(flavor = "current_thread")]
    async fn without_a_database_directory_versions_are_empty_and_cached() {
        let dir = tempfile::tempdir().expect("tempdir");
        let sources = fake_sources(dir.path());
        let packages = Packages::new(sources);
        let first = packages.versions().await;
        assert!(first.get("haproxy").is_none());
        assert!(Arc::ptr_eq(&first, &packages.versions().await));
    }
}
