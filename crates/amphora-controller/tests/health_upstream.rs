//! The operating statuses a heartbeat implies, compared with upstream
//! Octavia's own `UpdateHealthDb._update_health` on the same rows and
//! messages (tests/upstream/health_update.py), over a few hundred generated
//! cases of every message version. Needs upstream's `octavia` package:
//! `scripts/test.sh` creates a virtualenv and sets UPSTREAM_PYTHON.

use std::io::Write;
use std::process::{Command, Stdio};

use amphora_controller::health::status::{self, LbRows, ListenerRow, Message, PoolRow};
use serde_json::{Map, Value, json};

const CASES: u64 = 600;

/// A deterministic choice for case `case`, draw `draw` (splitmix64).
fn pick(case: u64, draw: u64, below: usize) -> usize {
    let mut z = case.wrapping_mul(0x9E37_79B9_7F4A_7C15).wrapping_add(draw.wrapping_mul(0xBF58_476D_1CE4_E5B9));
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^= z >> 31;
    (z % below as u64) as usize
}

const LB_STATUSES: [&str; 4] = ["ONLINE", "OFFLINE", "DEGRADED", "ERROR"];
const MEMBER_STATUSES: [&str; 5] = ["ONLINE", "OFFLINE", "ERROR", "NO_MONITOR", "DRAINING"];
const REPORTED_MEMBER: [&str; 10] =
    ["UP", "UP 1/3", "DOWN", "DOWN 2/3", "DRAIN", "MAINT", "no check", "RESTARTING", "odd", "-"];

/// The draws of one case.
struct Dice {
    case: u64,
    draw: u64,
}

impl Dice {
    fn next(&mut self, below: usize) -> usize {
        self.draw += 1;
        pick(self.case, self.draw, below)
    }
}

fn report_pool(dice: &mut Dice, pool: &PoolRow, key: String, pools: &mut Map<String, Value>) {
    let mut members = Map::new();
    for (id, _) in &pool.members {
        let s = REPORTED_MEMBER[dice.next(REPORTED_MEMBER.len())];
        if s != "-" {
            members.insert(id.clone(), json!(s));
        }
    }
    let status = ["UP", "UP", "DOWN", "MAINT"][dice.next(4)];
    pools.insert(key, json!({"status": status, "members": members}));
}

/// One case: the rows (ours and upstream's dict) and the message.
fn case(n: u64) -> (LbRows, Value, Value) {
    let mut dice = Dice { case: n, draw: 0 };
    let lb = LbRows {
        id: format!("lb-{n}"),
        enabled: dice.next(5) != 0,
        provisioning_status: ["ACTIVE", "ACTIVE", "PENDING_UPDATE", "ERROR"][dice.next(4)].into(),
        operating_status: LB_STATUSES[dice.next(4)].into(),
        listeners: (0..dice.next(4))
            .map(|i| ListenerRow {
                id: format!("l{i}"),
                enabled: dice.next(4) != 0,
                operating_status: LB_STATUSES[dice.next(4)].into(),
            })
            .collect(),
        pools: (0..dice.next(4))
            .map(|i| PoolRow {
                id: format!("p{i}"),
                operating_status: LB_STATUSES[dice.next(4)].into(),
                members: (0..dice.next(4))
                    .map(|m| (format!("p{i}m{m}"), MEMBER_STATUSES[dice.next(5)].into()))
                    .collect(),
            })
            .collect(),
    };
    let version = [None, Some(2), Some(3)][dice.next(3)];
    let mut listeners = Map::new();
    let mut top_pools = Map::new();
    let mut reported: Vec<String> = lb.listeners.iter().filter(|_| dice.next(5) != 0).map(|l| l.id.clone()).collect();
    if dice.next(6) == 0 {
        reported.push("l-unknown".into());
    }
    for (i, listener) in reported.iter().enumerate() {
        let status = ["OPEN", "OPEN", "FULL", "STOP"][dice.next(4)];
        let mut report = json!({"status": status, "stats": {"tx": 1, "rx": 2, "conns": 3, "totconns": 4, "ereq": 0}});
        let mut pools = Map::new();
        for pool in &lb.pools {
            if dice.next(4) == 0 {
                continue;
            }
            let key = if dice.next(3) == 0 { pool.id.clone() } else { format!("{}:{listener}", pool.id) };
            report_pool(&mut dice, pool, key, if version.is_none() { &mut pools } else { &mut top_pools });
        }
        if i == 0 && dice.next(5) == 0 {
            let ghost = PoolRow { id: "p-unknown".into(), operating_status: String::new(), members: vec![] };
            report_pool(&mut dice, &ghost, format!("p-unknown:{listener}"), &mut top_pools);
        }
        if version.is_none() {
            report["pools"] = Value::Object(pools);
        }
        listeners.insert(listener.clone(), report);
    }
    let mut health = json!({"id": "amp", "seq": n, "listeners": listeners, "pools": top_pools});
    if let Some(v) = version {
        health["ver"] = json!(v);
    }
    let upstream_lb = {
        let mut d = json!({"id": lb.id, "enabled": lb.enabled, "provisioning_status": lb.provisioning_status,
            "operating_status": lb.operating_status});
        if !lb.listeners.is_empty() {
            d["listeners"] = lb
                .listeners
                .iter()
                .map(|l| {
                    (
                        l.id.clone(),
                        json!({"operating_status": l.operating_status, "protocol": "HTTP", "enabled": l.enabled}),
                    )
                })
                .collect::<Map<_, _>>()
                .into();
        }
        if !lb.pools.is_empty() {
            d["pools"] = lb
                .pools
                .iter()
                .map(|p| {
                    let members: Map<_, _> =
                        p.members.iter().map(|(id, s)| (id.clone(), json!({"operating_status": s}))).collect();
                    (p.id.clone(), json!({"operating_status": p.operating_status, "members": members}))
                })
                .collect::<Map<_, _>>()
                .into();
        }
        d
    };
    (lb, upstream_lb, health)
}

/// Our updates, in upstream's shape, sorted.
fn ours(lb: &LbRows, health: &Value) -> (Vec<(String, String, String)>, bool) {
    let message: Message = serde_json::from_value(health.clone()).expect("message");
    let c = status::evaluate(lb, &message);
    let mut updates: Vec<(String, String, String)> = Vec::new();
    let mut add = |entity: &str, list: &[(String, &str)]| {
        updates.extend(list.iter().map(|(id, s)| (entity.to_owned(), id.clone(), (*s).to_owned())));
    };
    add("listener", &c.listeners);
    add("pool", &c.pools);
    add("member", &c.members);
    if let Some(s) = c.load_balancer {
        updates.push(("load_balancer".into(), lb.id.clone(), s.into()));
    }
    updates.sort();
    let refreshed = lb.expected_listeners().is_none_or(|n| n == message.listeners.len());
    (updates, refreshed)
}

#[test]
#[ignore = "needs upstream octavia; scripts/test.sh runs it with UPSTREAM_PYTHON set"]
fn heartbeat_statuses_match_upstreams_update_health() {
    let python = std::env::var("UPSTREAM_PYTHON").expect("UPSTREAM_PYTHON must name a python with upstream octavia");
    let cases: Vec<_> = (0..CASES).map(case).collect();
    let input: Vec<Value> = cases.iter().map(|(_, lb, health)| json!({"lb": lb, "health": health})).collect();
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/upstream/health_update.py");
    let mut child = Command::new(&python)
        .arg(script)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start python");
    child.stdin.take().expect("stdin").write_all(Value::Array(input).to_string().as_bytes()).expect("write cases");
    let output = child.wait_with_output().expect("python");
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let upstream: Vec<Value> = serde_json::from_slice(&output.stdout).expect("upstream's JSON");
    assert_eq!(upstream.len(), cases.len());
    let mut changed = 0;
    for ((lb, _, health), theirs) in cases.iter().zip(&upstream) {
        let mut expected: Vec<(String, String, String)> = theirs["updates"]
            .as_array()
            .expect("updates")
            .iter()
            .map(|u| (u[0].as_str().unwrap().into(), u[1].as_str().unwrap().into(), u[2].as_str().unwrap().into()))
            .collect();
        expected.sort();
        let (updates, refreshed) = ours(lb, health);
        assert_eq!(updates, expected, "rows {lb:?}\nheartbeat {health}");
        assert_eq!(refreshed, theirs["health_refreshed"], "rows {lb:?}\nheartbeat {health}");
        changed += usize::from(!updates.is_empty());
    }
    // The generator must exercise the rules, not produce no-ops.
    assert!(changed > CASES as usize / 2, "only {changed} cases changed anything");
}
