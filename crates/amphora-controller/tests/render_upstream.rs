//! Our renderers against upstream's own templaters: the same load balancers
//! go, as JSON, to tests/render/upstream_render.py, which builds upstream's
//! data models and calls its haproxy, keepalived and agent templaters from
//! the pinned octavia package; both outputs are parsed into sections and
//! compared as sets of normalised directive lines.
//!
//! Normalisation (documented in docs/compatibility.md, controller section):
//! whitespace is collapsed and blank lines and comments dropped (upstream's
//! template leaves stray blank lines), and the alternatives of
//! `http-check expect rstatus` are sorted (upstream joins a Python set, in
//! no fixed order). Intentional differences are listed in `ALLOWED`.

mod render_support;

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Stdio};

use amphora_controller::render::model::{AmphoraView, LoadBalancer};
use amphora_controller::render::{agent, haproxy, keepalived, lvs};
use render_support::{Setup, VRRP_INTERFACE, all_cases, keepalived_blocks, lvs_listeners, sections};
use serde_json::{Value, json};

/// Intentional differences, as rewrites of upstream's lines: (file kind,
/// what upstream writes, what we write instead). A line only upstream has
/// is forgiven when, so rewritten, it is a line only we have in the same
/// section. Each is explained in docs/compatibility.md.
const ALLOWED: &[(&str, &str, &str)] = &[
    // keepalived 2.2 knows `via`/`gw`, not `gateway`: upstream's host
    // routes are dropped with "unknown route keyword gateway".
    ("keepalived", " gateway ", " via "),
];

/// The haproxy version the amphorae report (the one installed here: the
/// rendering depends on it).
const HAPROXY_VERSION: &str = "2.6";

fn python() -> String {
    std::env::var("UPSTREAM_PYTHON").expect("UPSTREAM_PYTHON: the python of scripts/upstream-venv.sh's venv")
}

fn script() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/render/upstream_render.py")
}

/// Upstream's renderings of each (load balancer, host amphora), in one
/// run of the script.
fn upstream(setup: &Setup, cases: &[(&LoadBalancer, &str)]) -> Vec<Value> {
    let cases: Vec<Value> =
        cases.iter().map(|(lb, host)| json!({"load_balancer": lb, "host_amphora_id": host})).collect();
    let request = json!({
        "config_file": setup.config_file,
        "haproxy_version": HAPROXY_VERSION,
        "vrrp_interface": VRRP_INTERFACE,
        "cases": cases,
    });
    let mut child = Command::new(python())
        .arg(script())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start upstream_render.py");
    child.stdin.take().expect("stdin").write_all(request.to_string().as_bytes()).expect("send the request");
    let output = child.wait_with_output().expect("upstream_render.py");
    assert!(output.status.success(), "upstream_render.py failed:\n{}", String::from_utf8_lossy(&output.stderr));
    let answers: Vec<Value> = serde_json::from_slice(&output.stdout).expect("upstream_render.py answers JSON");
    assert_eq!(answers.len(), cases.len());
    answers
}

/// Sorts the alternatives of `http-check expect rstatus A|B|C`.
fn normalise(line: &str) -> String {
    match line.strip_prefix("http-check expect rstatus ") {
        Some(codes) => {
            let mut codes: Vec<&str> = codes.split('|').collect();
            codes.sort_unstable();
            format!("http-check expect rstatus {}", codes.join("|"))
        }
        None => line.to_owned(),
    }
}

/// The differences between two parsed files, less the allowed ones, as
/// readable lines.
fn differences(
    kind: &str,
    theirs: &BTreeMap<String, BTreeSet<String>>,
    ours: &BTreeMap<String, BTreeSet<String>>,
) -> Vec<String> {
    let mut out = Vec::new();
    let names: BTreeSet<&String> = theirs.keys().chain(ours.keys()).collect();
    for name in names {
        let empty = BTreeSet::new();
        let t: BTreeSet<String> = theirs.get(name).unwrap_or(&empty).iter().map(|l| normalise(l)).collect();
        let o: BTreeSet<String> = ours.get(name).unwrap_or(&empty).iter().map(|l| normalise(l)).collect();
        if theirs.contains_key(name) != ours.contains_key(name) {
            out.push(format!(
                "{kind} section {name:?} only in {}",
                if theirs.contains_key(name) { "upstream's" } else { "ours" }
            ));
        }
        let rewritten = |line: &str| -> Vec<String> {
            ALLOWED
                .iter()
                .filter(|(k, from, _)| *k == kind && line.contains(from))
                .map(|(_, from, to)| line.replace(from, to))
                .collect()
        };
        for line in t.difference(&o) {
            if !rewritten(line).iter().any(|r| o.contains(r) && !t.contains(r)) {
                out.push(format!("{kind} [{name}] only upstream: {line}"));
            }
        }
        for line in o.difference(&t) {
            if !t.difference(&o).any(|up| rewritten(up).iter().any(|r| r == line)) {
                out.push(format!("{kind} [{name}] only ours:     {line}"));
            }
        }
    }
    out
}

#[test]
#[ignore = "needs UPSTREAM_PYTHON (scripts/upstream-venv.sh)"]
fn renderings_match_upstreams_templaters() {
    let setup = Setup::new();
    let hopts = haproxy::HaproxyOptions::from_config(&setup.config);
    let vopts = keepalived::VrrpOptions::from_config(&setup.config);
    let mut cases = all_cases();
    for (_, lb) in &mut cases {
        for amp in &mut lb.amphorae {
            amp.haproxy_version = Some(HAPROXY_VERSION.into());
        }
    }
    let pairs: Vec<(&str, &LoadBalancer, &AmphoraView)> =
        cases.iter().flat_map(|(name, lb)| lb.amphorae.iter().map(move |a| (*name, lb, a))).collect();
    let answers = upstream(&setup, &pairs.iter().map(|(_, lb, a)| (*lb, a.id.as_str())).collect::<Vec<_>>());
    let mut problems = Vec::new();
    let (mut proxies, mut vrrp_blocks) = (0, 0);
    for ((name, lb, host), theirs) in pairs.iter().zip(&answers) {
        let ours = haproxy::combined(lb, host, &hopts).expect("we render haproxy");
        let their_haproxy = theirs["haproxy"].as_str().expect("upstream renders haproxy");
        let their_sections = sections(their_haproxy);
        proxies += their_sections.keys().filter(|k| k.starts_with("frontend ") || k.starts_with("backend ")).count();
        for d in differences("haproxy", &their_sections, &sections(&ours)) {
            problems.push(format!("{name} (amphora {}): {d}", host.id));
        }

        if let Some(their_vrrp) = theirs["keepalived"][&host.id].as_str() {
            let ours = keepalived::vrrp(lb, &lb.amphorae, host, VRRP_INTERFACE, &vopts).expect("we render vrrp");
            let their_blocks = keepalived_blocks(their_vrrp);
            vrrp_blocks += their_blocks.len();
            for d in differences("keepalived", &their_blocks, &keepalived_blocks(&ours)) {
                problems.push(format!("{name} (amphora {}): {d}", host.id));
            }
        } else {
            assert!(lb.vrrp_group.is_none(), "{name}: upstream rendered no keepalived file");
        }

        let ours = agent::agent_config(&host.id, lb.topology, &setup.config).expect("we render the agent's");
        let their_agent = theirs["agent"][&host.id].as_str().expect("upstream renders the agent's");
        for d in differences("agent", &sections(their_agent), &sections(&ours)) {
            problems.push(format!("{name} (amphora {}): {d}", host.id));
        }
    }
    // What was compared (counted from upstream's files): the frontends and
    // backends of every enabled listener, on each amphora; keepalived's
    // nine blocks on the two amphorae of both ACTIVE_STANDBY cases.
    assert_eq!(proxies, 4 + 2 * 6 + 2 * 6 + 5, "frontends and backends compared");
    assert_eq!(vrrp_blocks, 2 * 2 * 9, "keepalived blocks compared");
    assert!(problems.is_empty(), "renderings differ from upstream's:\n{}", problems.join("\n"));
}

/// keepalived's LVS file of every UDP and SCTP listener against upstream's
/// `LvsJinjaTemplater`: the same blocks with the same directives.
#[test]
#[ignore = "needs UPSTREAM_PYTHON (scripts/upstream-venv.sh)"]
fn lvs_renderings_match_upstreams_templater() {
    let setup = Setup::new();
    let opts = lvs::LvsOptions { base_path: setup.config.haproxy_amphora.base_path.clone() };
    let mut cases = all_cases();
    cases.push(("lvs_listeners", lvs_listeners()));
    let requests: Vec<(&LoadBalancer, &str)> = cases.iter().map(|(_, lb)| (lb, lb.amphorae[0].id.as_str())).collect();
    let answers = upstream(&setup, &requests);
    let mut problems = Vec::new();
    let (mut files, mut real_servers, mut checks) = (0, 0, 0);
    for ((name, lb), theirs) in cases.iter().zip(&answers) {
        for listener in lb.listeners.iter().filter(|l| haproxy::is_lvs(&l.protocol)) {
            let their_text = theirs["lvs"][&listener.id].as_str().expect("upstream renders the listener");
            let ours = lvs::listener(lb, listener, &opts).expect("we render the listener");
            let their_blocks = keepalived_blocks(their_text);
            files += 1;
            real_servers += their_blocks.keys().filter(|k| k.ends_with('}') || k.contains("/real_server ")).count();
            checks += their_blocks.keys().filter(|k| k.ends_with("_CHECK") || k.ends_with("HTTP_GET")).count();
            for d in differences("keepalived", &their_blocks, &keepalived_blocks(&ours)) {
                problems.push(format!("{name} (listener {}): {d}", listener.id));
            }
        }
    }
    // What was compared, counted from upstream's files: one file per UDP or
    // SCTP listener (one in each of two earlier cases, eight here), their
    // real servers and their checks.
    assert_eq!(files, 2 + 8, "LVS files compared");
    assert!(real_servers >= 8 && checks >= 7, "{real_servers} real servers, {checks} checks compared");
    assert!(problems.is_empty(), "LVS renderings differ from upstream's:\n{}", problems.join("\n"));
}

/// The comparison itself finds differences (it would pass vacuously if
/// parsing dropped everything).
#[test]
fn the_comparison_sees_a_changed_line() {
    let theirs = sections("global\n    maxconn 10\n\nbackend b\n    http-check expect rstatus 201|200\n");
    let same = sections("global\n  maxconn   10\nbackend b\n    http-check expect rstatus 200|201\n");
    assert!(differences("haproxy", &theirs, &same).is_empty());
    let changed = sections("global\n    maxconn 11\nbackend b\n    http-check expect rstatus 200|201\n");
    assert_eq!(
        differences("haproxy", &theirs, &changed),
        ["haproxy [global] only upstream: maxconn 10", "haproxy [global] only ours:     maxconn 11",]
    );
    // The allowed rewrite forgives exactly the rewritten line.
    let theirs = keepalived_blocks("r {\n  10.1.0.0/16 dev e gateway 10.0.0.1 onlink table 1\n}\n");
    let via = keepalived_blocks("r {\n  10.1.0.0/16 dev e via 10.0.0.1 onlink table 1\n}\n");
    assert!(differences("keepalived", &theirs, &via).is_empty());
    let other = keepalived_blocks("r {\n  10.1.0.0/16 dev e via 10.0.0.2 onlink table 1\n}\n");
    assert_eq!(differences("keepalived", &theirs, &other).len(), 2);
    let theirs = keepalived_blocks("a {\n  b {\n    x\n  }\n  y\n}\n");
    let ours = keepalived_blocks("a {\n  b {\n  }\n  x\n  y\n}\n");
    assert_eq!(
        differences("keepalived", &theirs, &ours),
        ["keepalived [a] only ours:     x", "keepalived [a/b] only upstream: x",]
    );
}
