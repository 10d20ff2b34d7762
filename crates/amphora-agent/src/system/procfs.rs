//! Parsers for the `/proc` files the details report draws on.

use std::collections::BTreeMap;

use amphora_proto::Memory;

/// Cumulative CPU time counters (jiffies) from the first line of `/proc/stat`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CpuTimes {
    pub user: u64,
    pub nice: u64,
    pub system: u64,
    pub idle: u64,
    pub iowait: u64,
    pub irq: u64,
    pub softirq: u64,
    pub steal: u64,
}

impl CpuTimes {
    pub fn total(&self) -> u64 {
        self.user + self.nice + self.system + self.idle + self.iowait + self.irq + self.softirq + self.steal
    }

    /// Counters accumulated since `earlier`.
    pub fn since(&self, earlier: &CpuTimes) -> CpuTimes {
        CpuTimes {
            user: self.user.saturating_sub(earlier.user),
            nice: self.nice.saturating_sub(earlier.nice),
            system: self.system.saturating_sub(earlier.system),
            idle: self.idle.saturating_sub(earlier.idle),
            iowait: self.iowait.saturating_sub(earlier.iowait),
            irq: self.irq.saturating_sub(earlier.irq),
            softirq: self.softirq.saturating_sub(earlier.softirq),
            steal: self.steal.saturating_sub(earlier.steal),
        }
    }
}

pub fn parse_cpu_times(proc_stat: &str) -> Option<CpuTimes> {
    let line = proc_stat.lines().find(|l| l.starts_with("cpu "))?;
    let mut fields = line.split_whitespace().skip(1).map(|f| f.parse::<u64>().unwrap_or(0));
    let mut next = || fields.next().unwrap_or(0);
    Some(CpuTimes {
        user: next(),
        nice: next(),
        system: next(),
        idle: next(),
        iowait: next(),
        irq: next(),
        softirq: next(),
        steal: next(),
    })
}

/// `/proc/meminfo` figures, in kilobytes.
pub fn parse_meminfo(text: &str) -> Memory {
    let mut values = BTreeMap::new();
    for line in text.lines() {
        let Some((key, rest)) = line.split_once(':') else { continue };
        if let Some(value) = rest.split_whitespace().next().and_then(|v| v.parse::<u64>().ok()) {
            values.insert(key.trim(), value);
        }
    }
    let get = |key: &str| values.get(key).copied().unwrap_or(0);
    Memory {
        total: get("MemTotal"),
        free: get("MemFree"),
        available: get("MemAvailable"),
        buffers: get("Buffers"),
        cached: get("Cached"),
        swap_used: get("SwapTotal").saturating_sub(get("SwapFree")),
        shared: get("Shmem"),
        slab: get("Slab"),
        committed_as: get("Committed_AS"),
    }
}

pub fn parse_loadavg(text: &str) -> [f64; 3] {
    let mut fields = text.split_whitespace().map(|f| f.parse::<f64>().unwrap_or(0.0));
    [fields.next().unwrap_or(0.0), fields.next().unwrap_or(0.0), fields.next().unwrap_or(0.0)]
}

/// Byte counters per interface from `/proc/net/dev`: (received, sent).
/// Loopback is left out: it carries no load-balanced traffic.
pub fn parse_net_dev(text: &str) -> BTreeMap<String, (u64, u64)> {
    let mut interfaces = BTreeMap::new();
    for line in text.lines().skip(2) {
        let Some((name, counters)) = line.split_once(':') else { continue };
        let name = name.trim();
        if name == "lo" {
            continue;
        }
        let fields: Vec<u64> = counters.split_whitespace().map(|f| f.parse().unwrap_or(0)).collect();
        if fields.len() >= 9 {
            interfaces.insert(name.to_owned(), (fields[0], fields[8]));
        }
    }
    interfaces
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_line() {
        let text = "cpu  10 2 30 400 5 6 7 8 0 0\ncpu0 1 1 1 1 1 1 1 1 0 0\n";
        let cpu = parse_cpu_times(text).expect("cpu");
        assert_eq!(cpu, CpuTimes { user: 10, nice: 2, system: 30, idle: 400, iowait: 5, irq: 6, softirq: 7, steal: 8 });
        assert_eq!(cpu.total(), 468);
        assert_eq!(cpu.since(&CpuTimes { user: 4, ..Default::default() }).user, 6);
    }

    #[test]
    fn meminfo() {
        let text = "MemTotal:        4087402 kB\nMemFree:          760656 kB\nMemAvailable:    2655901 kB\n\
Buffers:           90980 kB\nCached:          1830143 kB\nSwapTotal:        1000 kB\nSwapFree:          57 kB\n\
Shmem:            105792 kB\nSlab:             158819 kB\nCommitted_AS:    2643480 kB\nHugePages_Total:       0\n";
        assert_eq!(
            parse_meminfo(text),
            Memory {
                total: 4087402,
                free: 760656,
                available: 2655901,
                buffers: 90980,
                cached: 1830143,
                swap_used: 943,
                shared: 105792,
                slab: 158819,
                committed_as: 2643480,
            }
        );
    }

    #[test]
    fn loadavg() {
        assert_eq!(parse_loadavg("0.50 0.45 0.47 1/123 4567\n"), [0.5, 0.45, 0.47]);
    }

    #[test]
    fn net_dev() {
        let text = "Inter-|   Receive                                                |  Transmit\n \
face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets errs drop fifo colls carrier compressed\n    \
lo:  100  1    0    0    0     0          0         0      100  1    0    0    0     0       0          0\n  \
eth1: 982001 10 0 0 0 0 0 0 3300138 20 0 0 0 0 0 0\n";
        let map = parse_net_dev(text);
        assert_eq!(map.len(), 1);
        assert_eq!(map.get("eth1"), Some(&(982001, 3300138)));
    }
}
