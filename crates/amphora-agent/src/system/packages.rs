//! Installed versions of the packages that matter to a load balancer.
//!
//! Upstream runs `dpkg-query` on every `/info` call (about 47 ms each). We
//! read the package database once and again only when it changes (its
//! modification time moves), so `/info` costs a few `stat` calls.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

/// Packages reported in the details, in this order.
pub const TRACKED: &[&str] = &["haproxy", "keepalived", "ipvsadm", "openssl", "iproute2", "nftables"];

const DPKG_STATUS: &str = "/var/lib/dpkg/status";
const RPM_DATABASES: &[&str] = &["/var/lib/rpm", "/usr/lib/sysimage/rpm"];

pub type Versions = BTreeMap<String, String>;

/// Modification times of the sources versions were read from.
type Stamp = Vec<Option<SystemTime>>;

#[derive(Debug)]
pub struct Packages {
    haproxy_cmd: PathBuf,
    cache: Mutex<Option<(Stamp, Arc<Versions>)>>,
}

impl Packages {
    pub fn new(haproxy_cmd: PathBuf) -> Self {
        Self { haproxy_cmd, cache: Mutex::new(None) }
    }

    /// Versions of the tracked packages that are installed.
    pub fn versions(&self) -> Arc<Versions> {
        let stamp = self.stamp();
        let mut cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((cached_stamp, versions)) = cache.as_ref()
            && *cached_stamp == stamp
        {
            return versions.clone();
        }
        let versions = Arc::new(self.read_versions());
        *cache = Some((stamp, versions.clone()));
        versions
    }

    /// Modification times of everything the versions are read from.
    fn stamp(&self) -> Stamp {
        std::iter::once(Path::new(DPKG_STATUS))
            .chain(RPM_DATABASES.iter().map(Path::new))
            .chain(std::iter::once(self.haproxy_cmd.as_path()))
            .map(|p| fs::metadata(p).and_then(|m| m.modified()).ok())
            .collect()
    }

    fn read_versions(&self) -> Versions {
        let mut versions = match fs::read_to_string(DPKG_STATUS) {
            Ok(text) => parse_dpkg_status(&text, TRACKED),
            Err(_) => rpm_versions(TRACKED),
        };
        if !versions.contains_key("haproxy")
            && let Some(version) = Command::new(&self.haproxy_cmd)
                .arg("-v")
                .output()
                .ok()
                .and_then(|out| parse_haproxy_version(&String::from_utf8_lossy(&out.stdout)))
        {
            versions.insert("haproxy".into(), version);
        }
        versions
    }
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

fn rpm_versions(wanted: &[&str]) -> Versions {
    wanted
        .iter()
        .filter_map(|name| {
            let out = Command::new("rpm").args(["-q", "--queryformat", "%{VERSION}", name]).output().ok()?;
            out.status.success().then(|| (name.to_string(), String::from_utf8_lossy(&out.stdout).trim().to_owned()))
        })
        .collect()
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

    #[test]
    fn versions_are_cached_until_the_database_changes() {
        let packages = Packages::new("/usr/sbin/haproxy".into());
        let first = packages.versions();
        let second = packages.versions();
        assert!(Arc::ptr_eq(&first, &second));
    }
}
