//! Heartbeat figures: CPU time to build and sign one message from haproxy's
//! `show stat` output, ours against upstream's code on the same input, and
//! where a message stops fitting in one UDP datagram.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;
use std::time::Duration;

use amphora_agent::bench_support::{Counters, add_haproxy_stats, encode_fitting, parse_show_stat};
use amphora_proto::heartbeat::{self, Heartbeat, ListenerHealth, ListenerStats, MAX_DATAGRAM, PoolHealth};

fn uuid(a: usize, b: usize) -> String {
    let digest = amphora_testkit::md5_hex(format!("{a}/{b}").as_bytes());
    format!("{}-{}-{}-{}-{}", &digest[..8], &digest[8..12], &digest[12..16], &digest[16..20], &digest[20..32])
}

/// `show stat` output of an Octavia load balancer with `listeners`
/// listeners of one pool of `members` members each.
pub fn show_stat(listeners: usize, members: usize) -> String {
    let mut text = String::from(
        "# pxname,svname,qcur,qmax,scur,smax,slim,stot,bin,bout,dreq,dresp,ereq,econ,eresp,wretr,wredis,status,weight,act,bck\n",
    );
    for l in 0..listeners {
        let listener = uuid(l, 0);
        let pool = format!("{}:{listener}", uuid(l, usize::MAX));
        let _ = writeln!(
            text,
            "{listener},FRONTEND,,,3,9,50000,{},{},{},0,0,0,,,,,OPEN,,,",
            1000 + l,
            123_456 + l,
            654_321 + l
        );
        for m in 0..members {
            let status = if m % 7 == 0 { "DOWN" } else { "UP" };
            let _ = writeln!(text, "{pool},{},0,0,0,1,,5,500,2500,,0,,0,0,0,0,{status},1,1,0", uuid(l, m + 1));
        }
        let _ = writeln!(text, "{pool},BACKEND,0,0,0,1,5000,10,1000,5000,0,0,,0,0,0,0,UP,{members},{members},0");
    }
    text
}

fn thread_cpu() -> Duration {
    let now = nix::time::clock_gettime(nix::time::ClockId::CLOCK_THREAD_CPUTIME_ID).expect("thread CPU clock");
    Duration::new(now.tv_sec() as u64, now.tv_nsec() as u32)
}

/// Median CPU time of parsing, computing deltas, encoding one message and
/// persisting the counters (what upstream's `build_stats_message` plus
/// `wrap_envelope` do).
pub fn ours_build_and_sign(stat: &str, rounds: usize) -> Duration {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut counters = Counters::load(dir.path().join("stats_counters.json"));
    let mut times = Vec::with_capacity(rounds);
    for seq in 0..rounds {
        let started = thread_cpu();
        let mut message = Heartbeat {
            id: "amphora".into(),
            seq: seq as u64,
            listeners: BTreeMap::new(),
            pools: BTreeMap::new(),
            ver: 3,
        };
        add_haproxy_stats(&mut message, &parse_show_stat(stat), &mut counters);
        let (envelope, _) = encode_fitting(&message, "insecure").expect("encode");
        counters.persist_blocking().expect("persist counters");
        std::hint::black_box(envelope);
        times.push(thread_cpu() - started);
    }
    times.sort();
    times[times.len() / 2]
}

/// Upstream's `build_stats_message` and `wrap_envelope` on the same input,
/// timed in upstream's Python with `time.thread_time`.
pub fn upstream_build_and_sign(python: &Path, script: &Path, stat: &str, rounds: usize) -> anyhow::Result<Duration> {
    let dir = tempfile::tempdir()?;
    let input = dir.path().join("show_stat.csv");
    std::fs::write(&input, stat)?;
    let output = std::process::Command::new(python).arg(script).arg(&input).arg(rounds.to_string()).output()?;
    anyhow::ensure!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let seconds: f64 = String::from_utf8_lossy(&output.stdout).trim().parse()?;
    Ok(Duration::from_secs_f64(seconds))
}

fn message(listeners: usize, members: usize) -> Heartbeat {
    let mut message =
        Heartbeat { id: uuid(0, 0), seq: 123_456, listeners: BTreeMap::new(), pools: BTreeMap::new(), ver: 3 };
    for l in 0..listeners {
        let listener = uuid(l, 0);
        message.listeners.insert(
            listener.clone(),
            ListenerHealth {
                status: "OPEN".into(),
                stats: ListenerStats { tx: 123_456, rx: 654_321, conns: 3, totconns: 1000, ereq: 0 },
            },
        );
        let members = (0..members).map(|m| (uuid(l, m + 1), if m % 7 == 0 { "DOWN" } else { "UP" }.into())).collect();
        message
            .pools
            .insert(format!("{}:{listener}", uuid(l, usize::MAX)), PoolHealth { status: "UP".into(), members });
    }
    message
}

/// The most members per listener that still fit one datagram.
pub fn max_members_fitting(listeners: usize) -> usize {
    let fits = |members: usize| {
        heartbeat::encode(&message(listeners, members), "insecure").expect("encode").len() <= MAX_DATAGRAM
    };
    if !fits(0) {
        return 0;
    }
    let (mut low, mut high) = (0usize, 1usize);
    while fits(high) {
        low = high;
        high *= 2;
    }
    while low + 1 < high {
        let mid = (low + high) / 2;
        if fits(mid) { low = mid } else { high = mid }
    }
    low
}

/// The most listeners (without members) that fit one datagram.
pub fn max_listeners_fitting() -> usize {
    let fits =
        |listeners: usize| heartbeat::encode(&message(listeners, 0), "insecure").expect("encode").len() <= MAX_DATAGRAM;
    let (mut low, mut high) = (1usize, 2usize);
    while fits(high) {
        low = high;
        high *= 2;
    }
    while low + 1 < high {
        let mid = (low + high) / 2;
        if fits(mid) { low = mid } else { high = mid }
    }
    low
}
