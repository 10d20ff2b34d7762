//! A background sampler of CPU and network counters, so the details report
//! can give rates over the specification's 30-second window without making
//! the caller wait. The sampler thread lives in the amphora namespace, where
//! the load-balanced traffic flows, and reads that namespace's counters.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use amphora_proto::{Cpu, InterfaceCounters};

use super::procfs::{self, CpuTimes};
use crate::netns::Netns;

/// The span rates are computed over.
pub const WINDOW: Duration = Duration::from_secs(30);
/// Time between samples.
pub const INTERVAL: Duration = Duration::from_secs(5);

#[derive(Debug, Clone)]
struct Sample {
    at: Instant,
    cpu: CpuTimes,
    /// Per interface: (received bytes, sent bytes).
    net: BTreeMap<String, (u64, u64)>,
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
}

impl Sampler {
    /// Starts sampling on a thread of its own, inside `netns` when given.
    pub fn start(netns: Option<Arc<Netns>>) -> std::io::Result<Arc<Self>> {
        let sampler = Arc::new(Sampler::default());
        let weak: Weak<Sampler> = Arc::downgrade(&sampler);
        std::thread::Builder::new().name("sampler".into()).spawn(move || {
            if let Some(netns) = netns
                && let Err(e) = netns.enter()
            {
                tracing::warn!(namespace = netns.name(), error = %e, "sampler cannot enter the namespace");
            }
            while let Some(sampler) = weak.upgrade() {
                sampler.record(read_sample());
                drop(sampler);
                std::thread::sleep(INTERVAL);
            }
        })?;
        Ok(sampler)
    }

    fn record(&self, sample: Sample) {
        let mut samples = self.samples.lock().unwrap_or_else(|e| e.into_inner());
        let horizon = sample.at.checked_sub(WINDOW);
        samples.push_back(sample);
        // Keep the newest sample at least WINDOW old as the baseline.
        while let (Some(horizon), Some(second)) = (horizon, samples.get(1))
            && second.at <= horizon
        {
            samples.pop_front();
        }
    }

    pub fn rates(&self) -> Rates {
        let mut samples = self.samples.lock().unwrap_or_else(|e| e.into_inner());
        compute_rates(samples.make_contiguous())
    }
}

fn read_sample() -> Sample {
    let cpu =
        std::fs::read_to_string("/proc/stat").ok().and_then(|text| procfs::parse_cpu_times(&text)).unwrap_or_default();
    // thread-self: this thread's namespace, not the process's.
    let net = std::fs::read_to_string("/proc/thread-self/net/dev")
        .map(|text| procfs::parse_net_dev(&text))
        .unwrap_or_default();
    Sample { at: Instant::now(), cpu, net }
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

    fn sample(at: Instant, user: u64, idle: u64, rx: u64, tx: u64) -> Sample {
        Sample {
            at,
            cpu: CpuTimes { user, idle, ..Default::default() },
            net: BTreeMap::from([("eth1".to_owned(), (rx, tx))]),
        }
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
