//! A background sampler of CPU and network counters and of the machine's
//! figures (memory, load, root disk, CPU count, tuned profile), so the
//! details report can give rates over the specification's 30-second window
//! without making the caller wait, and `/1.0/details` reads no `/proc` or
//! `/sys` file itself: it serves the latest sample, at most [`INTERVAL`]
//! (5 s) old. The sampler thread lives in the amphora namespace, where the
//! load-balanced traffic flows, and reads that namespace's counters.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use amphora_proto::{Cpu, Disk, InterfaceCounters, Memory};
use arc_swap::ArcSwapOption;

use super::procfs::{self, CpuTimes};
use crate::netns::Netns;

/// The span rates are computed over.
pub const WINDOW: Duration = Duration::from_secs(30);
/// Time between samples.
pub const INTERVAL: Duration = Duration::from_secs(5);

#[derive(Debug, Clone)]
pub struct Sample {
    at: Instant,
    cpu: CpuTimes,
    /// Per interface: (received bytes, sent bytes).
    net: BTreeMap<String, (u64, u64)>,
    system: Machine,
}

/// The machine's figures as last read.
#[derive(Debug, Clone, PartialEq)]
pub struct Machine {
    pub memory: Memory,
    pub load: [f64; 3],
    /// Root file system usage in kilobytes.
    pub disk: Disk,
    pub cpu_count: u32,
    pub active_tuned_profiles: String,
}

/// What the details report serves: the rates over the window and the
/// machine's figures, both from the latest sample.
#[derive(Debug, Clone, PartialEq)]
pub struct Snapshot {
    pub rates: Rates,
    pub machine: Machine,
}

/// Rates over the window ending at the latest sample.
#[derive(Debug, Clone, PartialEq)]
pub struct Rates {
    pub cpu: Cpu,
    pub network_rx: u64,
    pub network_tx: u64,
    /// Cumulative counters of the latest sample.
    pub networks: BTreeMap<String, InterfaceCounters>,
}

#[derive(Debug, Default)]
pub struct Sampler {
    samples: Mutex<VecDeque<Sample>>,
    /// Computed once per sample, read by every request.
    latest: ArcSwapOption<Snapshot>,
}

impl Sampler {
    /// Starts sampling on a thread of its own, inside `netns` when given;
    /// returns once the first sample is in.
    pub async fn start(netns: Option<Arc<Netns>>) -> std::io::Result<Arc<Self>> {
        Self::start_with(INTERVAL, move || {
            if let Some(netns) = netns
                && let Err(e) = netns.enter()
            {
                tracing::warn!(namespace = netns.name(), error = %e, "sampler cannot enter the namespace");
            }
            read_sample
        })
        .await
    }

    /// Samples with what `setup` returns (called once, on the sampler's
    /// thread) every `interval`; returns once the first sample is in.
    pub async fn start_with<R>(
        interval: Duration,
        setup: impl FnOnce() -> R + Send + 'static,
    ) -> std::io::Result<Arc<Self>>
    where
        R: FnMut() -> Sample,
    {
        let sampler = Arc::new(Sampler::default());
        let weak: Weak<Sampler> = Arc::downgrade(&sampler);
        let (first_tx, first_rx) = tokio::sync::oneshot::channel();
        std::thread::Builder::new().name("sampler".into()).spawn(move || {
            let mut read = setup();
            let mut first = Some(first_tx);
            while let Some(sampler) = weak.upgrade() {
                sampler.record(read());
                drop(sampler);
                if let Some(first) = first.take() {
                    let _ = first.send(());
                }
                std::thread::sleep(interval);
            }
        })?;
        first_rx.await.map_err(|_| std::io::Error::other("the sampler stopped before its first sample"))?;
        Ok(sampler)
    }

    fn record(&self, sample: Sample) {
        let mut samples = self.samples.lock().unwrap_or_else(|e| e.into_inner());
        let horizon = sample.at.checked_sub(WINDOW);
        let machine = sample.system.clone();
        samples.push_back(sample);
        // Keep the newest sample at least WINDOW old as the baseline.
        while let (Some(horizon), Some(second)) = (horizon, samples.get(1))
            && second.at <= horizon
        {
            samples.pop_front();
        }
        let rates = compute_rates(samples.make_contiguous());
        self.latest.store(Some(Arc::new(Snapshot { rates, machine })));
    }

    /// The latest sample's figures (no I/O). Before the first sample (only
    /// a sampler built without `start`), zeros.
    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.latest.load_full().unwrap_or_else(|| {
            Arc::new(Snapshot {
                rates: compute_rates(&[]),
                machine: Machine {
                    memory: procfs::parse_meminfo(""),
                    load: [0.0; 3],
                    disk: Disk { used: 0, available: 0 },
                    cpu_count: 0,
                    active_tuned_profiles: String::new(),
                },
            })
        })
    }
}

/// Reads everything a sample holds, on the sampler's thread.
pub fn read_sample() -> Sample {
    let cpu =
        std::fs::read_to_string("/proc/stat").ok().and_then(|text| procfs::parse_cpu_times(&text)).unwrap_or_default();
    // thread-self: this thread's namespace, not the process's.
    let net = std::fs::read_to_string("/proc/thread-self/net/dev")
        .map(|text| procfs::parse_net_dev(&text))
        .unwrap_or_default();
    let read = |path: &str| std::fs::read_to_string(path).unwrap_or_default();
    let system = Machine {
        memory: procfs::parse_meminfo(&read("/proc/meminfo")),
        load: procfs::parse_loadavg(&read("/proc/loadavg")),
        disk: root_disk(),
        cpu_count: cpu_count(),
        active_tuned_profiles: read("/etc/tuned/active_profile").trim().to_owned(),
    };
    Sample { at: Instant::now(), cpu, net, system }
}

fn cpu_count() -> u32 {
    nix::unistd::sysconf(nix::unistd::SysconfVar::_NPROCESSORS_ONLN).ok().flatten().map(|n| n as u32).unwrap_or(1)
}

/// Root file system usage in kilobytes.
fn root_disk() -> Disk {
    match nix::sys::statvfs::statvfs("/") {
        Ok(st) => {
            let fragment = st.fragment_size();
            Disk {
                used: (st.blocks() - st.blocks_free()) * fragment / 1024,
                available: st.blocks_available() * fragment / 1024,
            }
        }
        Err(_) => Disk { used: 0, available: 0 },
    }
}

/// Rates over `window` (oldest first). An interface that appeared during
/// the window is measured from the first sample that has it.
fn compute_rates(window: &[Sample]) -> Rates {
    let (oldest, newest) = (window.first(), window.last());
    let Some(newest) = newest else {
        return Rates {
            cpu: Cpu { total: 0.0, user: 0.0, system: 0.0, soft_irq: 0.0 },
            network_rx: 0,
            network_tx: 0,
            networks: BTreeMap::new(),
        };
    };
    // With a single sample, CPU usage is the average since boot.
    let base_cpu = oldest.filter(|o| o.at < newest.at).map(|o| o.cpu).unwrap_or_default();
    let delta = newest.cpu.since(&base_cpu);
    let total = delta.total() as f64;
    let percent = |v: u64| if total > 0.0 { round2(v as f64 * 100.0 / total) } else { 0.0 };
    let cpu = Cpu {
        total: percent(delta.total() - delta.idle - delta.iowait),
        user: percent(delta.user),
        system: percent(delta.system),
        soft_irq: percent(delta.softirq),
    };

    let (mut rx_rate, mut tx_rate) = (0.0, 0.0);
    for (name, (new_rx, new_tx)) in &newest.net {
        let first_seen = window.iter().find_map(|s| s.net.get(name).map(|counters| (s.at, *counters)));
        if let Some((at, (old_rx, old_tx))) = first_seen
            && at < newest.at
        {
            let seconds = (newest.at - at).as_secs_f64();
            rx_rate += new_rx.saturating_sub(old_rx) as f64 / seconds;
            tx_rate += new_tx.saturating_sub(old_tx) as f64 / seconds;
        }
    }
    let (network_rx, network_tx) = (rx_rate.round() as u64, tx_rate.round() as u64);
    let networks = newest
        .net
        .iter()
        .map(|(name, (rx, tx))| (name.clone(), InterfaceCounters { network_rx: *rx, network_tx: *tx }))
        .collect();
    Rates { cpu, network_rx, network_tx, networks }
}

fn round2(v: f64) -> f64 {
    (v * 100.0).round() / 100.0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn machine(memory_total: u64) -> Machine {
        Machine {
            memory: Memory { total: memory_total, ..procfs::parse_meminfo("") },
            load: [0.5, 0.25, 0.125],
            disk: Disk { used: 10, available: 20 },
            cpu_count: 3,
            active_tuned_profiles: "virtual-guest".into(),
        }
    }

    fn sample(at: Instant, user: u64, idle: u64, rx: u64, tx: u64) -> Sample {
        Sample {
            at,
            cpu: CpuTimes { user, idle, ..Default::default() },
            net: BTreeMap::from([("eth1".to_owned(), (rx, tx))]),
            system: machine(1000),
        }
    }

    #[tokio::test]
    async fn snapshots_serve_the_latest_sample_without_reading_again() {
        use std::sync::atomic::{AtomicU64, Ordering};
        let reads = Arc::new(AtomicU64::new(0));
        let counter = reads.clone();
        let t0 = Instant::now();
        // A long interval: only the first sample is taken during the test.
        let sampler = Sampler::start_with(Duration::from_secs(3600), move || {
            move || {
                let n = counter.fetch_add(1, Ordering::SeqCst);
                let mut s = sample(t0 + INTERVAL * n as u32, 10, 90, 0, 0);
                s.system = machine(4242 + n);
                s
            }
        })
        .await
        .expect("start");
        for _ in 0..100 {
            assert_eq!(sampler.snapshot().machine, machine(4242));
        }
        assert_eq!(reads.load(Ordering::SeqCst), 1, "one reading serves every snapshot");
        // A new sample is what the next snapshot serves.
        sampler.record(sample(t0 + INTERVAL, 20, 180, 500, 0));
        let snapshot = sampler.snapshot();
        assert_eq!(snapshot.machine, machine(1000));
        assert_eq!(snapshot.rates.cpu.user, 10.0);
        assert_eq!(snapshot.rates.network_rx, 100);
    }

    #[test]
    fn rates_over_the_window() {
        let t0 = Instant::now();
        let old = sample(t0, 100, 900, 1_000, 5_000);
        let new = sample(t0 + Duration::from_secs(30), 130, 970, 31_000, 65_000);
        let rates = compute_rates(&[old, new]);
        assert_eq!(rates.cpu.user, 30.0);
        assert_eq!(rates.cpu.total, 30.0);
        assert_eq!(rates.network_rx, 1_000);
        assert_eq!(rates.network_tx, 2_000);
        assert_eq!(rates.networks["eth1"], InterfaceCounters { network_rx: 31_000, network_tx: 65_000 });
    }

    #[test]
    fn a_single_sample_gives_averages_since_boot_and_no_rates() {
        let only = sample(Instant::now(), 25, 75, 10, 10);
        let rates = compute_rates(&[only]);
        assert_eq!(rates.cpu.user, 25.0);
        assert_eq!(rates.network_rx, 0);
    }

    #[test]
    fn an_interface_that_appears_is_measured_from_its_first_sample() {
        let t0 = Instant::now();
        let mut before = sample(t0, 0, 100, 0, 0);
        before.net.clear();
        let appeared = sample(t0 + Duration::from_secs(20), 0, 200, 5_000, 0);
        let now = sample(t0 + Duration::from_secs(30), 0, 300, 15_000, 0);
        assert_eq!(compute_rates(&[before, appeared, now]).network_rx, 1_000);
    }

    #[test]
    fn the_machine_figures_are_read_from_the_system() {
        let machine = read_sample().system;
        let total: u64 = std::fs::read_to_string("/proc/meminfo")
            .expect("meminfo")
            .lines()
            .find_map(|l| l.strip_prefix("MemTotal:"))
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
            .expect("MemTotal");
        assert_eq!(machine.memory.total, total);
        assert!(machine.disk.used > 0 && machine.disk.available > 0);
        assert!(machine.cpu_count >= 1);
    }

    #[test]
    fn the_window_keeps_one_baseline_older_than_thirty_seconds() {
        let sampler = Sampler::default();
        let t0 = Instant::now();
        for i in 0..10u64 {
            sampler.record(sample(t0 + INTERVAL * i as u32, i, 0, 0, 0));
        }
        let samples = sampler.samples.lock().expect("lock");
        let span = samples.back().expect("newest").at - samples.front().expect("oldest").at;
        assert_eq!(span, WINDOW);
    }
}
