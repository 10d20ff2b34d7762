//! Host-wide resources that concurrently running test processes must not
//! share. Tests run in parallel within a binary and, under cargo-nextest,
//! every test is a process of its own: a counter in a static no longer
//! keeps two tests apart. A lease is an exclusive lock on a file under
//! `/run/amphora-testkit`; the kernel drops it when its holder exits, so a
//! crashed test never leaves a stale reservation behind.

use std::fs::{File, OpenOptions};
use std::hash::{BuildHasher, RandomState};
use std::path::PathBuf;

const DIR: &str = "/run/amphora-testkit";

/// A /24 of the benchmarking range 198.18.0.0/15 that no other test
/// process holds while this value lives. For what a test puts in the host
/// namespace (a controller's end of its management network, a host veth
/// into a VIP network), where two tests with the same subnet would share
/// routes.
#[derive(Debug)]
pub struct SubnetLease {
    cidr: String,
    _lock: File,
}

impl SubnetLease {
    /// Takes a free /24, probing from a random one.
    pub fn take() -> SubnetLease {
        std::fs::create_dir_all(DIR).unwrap_or_else(|e| panic!("cannot create {DIR}: {e}"));
        let slots = 512u64;
        let start = RandomState::new().hash_one(std::process::id()) % slots;
        for i in 0..slots {
            let n = (start + i) % slots;
            let cidr = format!("198.{}.{}.0/24", 18 + n / 256, n % 256);
            let path = PathBuf::from(DIR).join(format!("subnet-198-{}-{}", 18 + n / 256, n % 256));
            let file = OpenOptions::new()
                .create(true)
                .truncate(false)
                .write(true)
                .open(&path)
                .unwrap_or_else(|e| panic!("cannot open {}: {e}", path.display()));
            if file.try_lock().is_ok() {
                return SubnetLease { cidr, _lock: file };
            }
        }
        panic!("all {slots} test subnets of 198.18.0.0/15 are leased");
    }

    /// The subnet, as `198.X.Y.0/24`.
    pub fn cidr(&self) -> &str {
        &self.cidr
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn two_leases_held_at_once_are_different_subnets_and_a_dropped_one_is_free_again() {
        let first = SubnetLease::take();
        let second = SubnetLease::take();
        assert_ne!(first.cidr(), second.cidr());
        // The lock is per open file, so the same process cannot take a
        // held subnet either: opening the first one's file and locking it
        // must fail while it is held, and succeed once it is dropped.
        let octets: Vec<&str> = first.cidr().trim_end_matches(".0/24").split('.').collect();
        let path = PathBuf::from(DIR).join(format!("subnet-198-{}-{}", octets[1], octets[2]));
        let again = OpenOptions::new().write(true).open(&path).expect("the lease file");
        assert!(again.try_lock().is_err(), "{} was leased twice", first.cidr());
        drop(first);
        assert!(again.try_lock().is_ok(), "a dropped lease stayed locked");
    }
}
