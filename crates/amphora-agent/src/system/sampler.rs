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
        let samples = self.samples.lock().unwrap_or_else(|e| e.into_inner());
        compute_rates(samples.front(), samples.back())
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

fn compute_rates(oldest: Option<&Sample>, newest: Option<&Sample>) -> Rates {
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

    let (mut network_rx, mut network_tx) = (0, 0);
    if let Some(oldest) = oldest.filter(|o| o.at < newest.at) {
        let seconds = (newest.at - oldest.at).as_secs_f64();
        let mut rx = 0u64;
        let mut tx = 0u64;
        for (name, (new_rx, new_tx)) in &newest.net {
            let (old_rx, old_tx) = oldest.net.get(name).copied().unwrap_or((*new_rx, *new_tx));
            rx += new_rx.saturating_sub(old_rx);
            tx += new_tx.saturating_sub(old_tx);
        }
        network_rx = (rx as f64 / seconds).round() as u64;
        network_tx = (tx as f64 / seconds).round() as u64;
    }
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
        let rates = compute_rates(Some(&old), Some(&new));
        assert_eq!(rates.cpu.user, 30.0);
        assert_eq!(rates.cpu.total, 30.0);
        assert_eq!(rates.network_rx, 1_000);
        assert_eq!(rates.network_tx, 2_000);
        assert_eq!(rates.networks["eth1"], InterfaceCounters { network_rx: 31_000, network_tx: 65_000 });
    }

    #[test]
    fn a_single_sample_gives_averages_since_boot_and_no_rates() {
        let only = sample(Instant::now(), 25, 75, 10, 10);
        let rates = compute_rates(Some(&only), Some(&only));
        assert_eq!(rates.cpu.user, 25.0);
        assert_eq!(rates.network_rx, 0);
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
