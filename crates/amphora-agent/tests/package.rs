//! The agent's Debian package (packaging/deb): built with its build.sh,
//! checked with dpkg-deb, installed on this machine with dpkg, its units
//! verified with systemd-analyze, the installed agent started as its unit's
//! ExecStart says and driven with the typed client; then started again with
//! the configuration upstream's controller renders (its own templater) at
//! the unit's configuration path and driven with upstream's controller
//! client; then purged, leaving nothing behind. Needs root (dpkg, network
//! namespaces), jq, dpkg-deb and systemd-analyze (systemd need not run),
//! and upstream's virtualenv (UPSTREAM_PYTHON, else scripts/upstream-venv.sh
//! makes it). A second test installs the package into a clean root (a
//! minimal Debian of this machine's release, made once with debootstrap and
//! kept under target/chroot), runs its binaries there, purges it and
//! checks that the root is as before; a third runs the image element's
//! hooks (packaging/dib) in such a root after imitating upstream's
//! amphora-agent element, and checks the package took its place.

mod common;

use std::collections::BTreeSet;
use std::net::{SocketAddr, UdpSocket};
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use amphora_client::{Client, Credentials, Timeouts};
use amphora_proto::{ApiVersion, ListenerState, Message};
use amphora_testkit::pki::Pki;
use amphora_testkit::{Agent, netns, wait};
use common::*;

const PACKAGE: &str = "amphora-agent";
const AGENT_UNIT: &str = "/lib/systemd/system/amphora-agent.service";
const NETNS_UNIT: &str = "/lib/systemd/system/amphora-netns.service";
const CONFIG: &str = "/etc/octavia/amphora-agent.conf";
const STATE_DIR: &str = "/var/lib/octavia";
/// Where deb-systemd-helper enables a unit wanted by multi-user.target.
const ENABLED_AGENT: &str = "/etc/systemd/system/multi-user.target.wants/amphora-agent.service";

/// Every path the package must hold, written down here rather than read
/// from build.sh.
const EXPECTED_PATHS: &[&str] = &[
    "/usr/bin/amphora-agent",
    "/usr/bin/amphora-vrrp-check",
    "/usr/bin/amphora-health-checker",
    AGENT_UNIT,
    NETNS_UNIT,
    CONFIG,
    "/etc/octavia/certs",
    STATE_DIR,
];

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..").canonicalize().expect("workspace root")
}

/// Runs a command to success and returns its standard output.
fn run(command: &mut Command) -> String {
    let output = command.output().unwrap_or_else(|e| panic!("cannot run {command:?}: {e}"));
    assert!(
        output.status.success(),
        "{command:?} failed with {}:\n{}{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).expect("UTF-8 output")
}

fn installed(package: &str) -> bool {
    Command::new("dpkg-query")
        .args(["-W", "-f=${db:Status-Status}", package])
        .output()
        .is_ok_and(|o| o.status.success() && o.stdout == b"installed")
}

/// The package installed on this machine; purged on drop, also when the
/// test failed.
struct Installation;

impl Installation {
    fn install(deb: &Path) -> Self {
        assert!(
            !installed(PACKAGE),
            "{PACKAGE} is already installed on this machine: remove it (dpkg --purge {PACKAGE}) to run this test"
        );
        for path in [STATE_DIR, CONFIG] {
            assert!(!Path::new(path).exists(), "{path} exists already: this test would remove it");
        }
        let guard = Installation;
        run(Command::new("dpkg").arg("-i").arg(deb));
        guard
    }

    fn purge(self) {
        drop(self);
    }
}

impl Drop for Installation {
    fn drop(&mut self) {
        let output = Command::new("dpkg").args(["--purge", PACKAGE]).output();
        if !std::thread::panicking() {
            let output = output.expect("dpkg --purge");
            assert!(output.status.success(), "dpkg --purge failed: {}", String::from_utf8_lossy(&output.stderr));
        }
    }
}

/// Whether an ELF file has no symbol table (`.symtab`, section type
/// SHT_SYMTAB), read from its section headers.
fn is_stripped(elf: &[u8]) -> bool {
    const SHT_SYMTAB: u32 = 2;
    assert!(elf.len() > 64 && &elf[..4] == b"\x7fELF", "not an ELF file");
    assert_eq!((elf[4], elf[5]), (2, 1), "expected a 64-bit little-endian ELF file");
    let u16_at = |at: usize| u16::from_le_bytes(elf[at..at + 2].try_into().expect("2 bytes")) as usize;
    let u32_at = |at: usize| u32::from_le_bytes(elf[at..at + 4].try_into().expect("4 bytes"));
    let offset = u64::from_le_bytes(elf[0x28..0x30].try_into().expect("8 bytes")) as usize;
    let (size, count) = (u16_at(0x3a), u16_at(0x3c));
    assert!(offset + size * count <= elf.len(), "section headers beyond the file");
    (0..count).all(|i| u32_at(offset + i * size + 4) != SHT_SYMTAB)
}

/// The paths of `dpkg-deb --contents` (its last column), without the
/// leading "." and trailing "/".
fn deb_contents(deb: &Path) -> BTreeSet<String> {
    run(Command::new("dpkg-deb").arg("--contents").arg(deb))
        .lines()
        .filter_map(|line| line.split_whitespace().last())
        .map(|path| path.trim_start_matches('.').trim_end_matches('/').to_owned())
        .filter(|path| !path.is_empty())
        .collect()
}

/// The command line of a unit's only ExecStart=.
fn exec_start(unit_text: &str) -> Vec<String> {
    let lines: Vec<&str> = unit_text.lines().filter_map(|l| l.trim().strip_prefix("ExecStart=")).collect();
    assert_eq!(lines.len(), 1, "expected one ExecStart in:\n{unit_text}");
    let line = lines[0];
    assert!(!line.contains(['"', '\'', '\\', '$']), "ExecStart needs no quoting or expansion: {line}");
    line.split_whitespace().map(str::to_owned).collect()
}

/// build.sh as a shell would run it: without the variables cargo sets for
/// a test (package name, manifest dir, rustc...), which would make the
/// nested release build differ from a standalone one and rebuild the
/// release target every time.
fn build_command() -> Command {
    let mut command = Command::new(workspace_root().join("packaging/deb/build.sh"));
    command.current_dir(workspace_root());
    for (name, _) in std::env::vars_os() {
        let Some(name) = name.to_str() else { continue };
        let set_by_cargo = (name.starts_with("CARGO") && !matches!(name, "CARGO_HOME" | "CARGO_TARGET_DIR"))
            || name.starts_with("RUSTC")
            || name.starts_with("RUSTDOC")
            || name.starts_with("__CARGO")
            || name == "OUT_DIR";
        if set_by_cargo {
            command.env_remove(name);
        }
    }
    command
}

/// The namespace the netns unit created for the test; deleted on drop.
struct Namespace(String);

impl Drop for Namespace {
    fn drop(&mut self) {
        netns::delete(&self.0);
    }
}

/// Runs every ExecStart= of the namespace unit as systemd would (a "-"
/// prefix tolerates failure), with upstream's namespace name replaced by
/// `name` so the test does not take the host's "amphora-haproxy".
fn run_netns_unit(unit_text: &str, name: &str) {
    for line in unit_text.lines().filter_map(|l| l.trim().strip_prefix("ExecStart=")) {
        let (may_fail, line) = match line.strip_prefix('-') {
            Some(rest) => (true, rest),
            None => (false, line),
        };
        assert!(!line.contains(['"', '\'', '\\', '$']), "ExecStart needs no quoting or expansion: {line}");
        let words: Vec<String> = line.split_whitespace().map(|w| w.replace("amphora-haproxy", name)).collect();
        let status = Command::new(&words[0]).args(&words[1..]).output().expect("run ExecStart").status;
        assert!(may_fail || status.success(), "{line} failed with {status}");
    }
}

fn client_of(agent: &Agent) -> Client {
    let credentials =
        Credentials::from_pem(agent.pki.server_ca.cert_pem().as_bytes(), agent.pki.client.combined_pem().as_bytes())
            .expect("credentials");
    let timeouts = Timeouts {
        connect: Duration::from_secs(5),
        read: Duration::from_secs(30),
        connection_max_retries: 3,
        connection_retry_interval: Duration::from_millis(100),
    };
    Client::new(&agent.amphora_id, agent.addr, &credentials, timeouts).expect("client")
}

/// The python of upstream's virtualenv: UPSTREAM_PYTHON, or the one
/// scripts/upstream-venv.sh makes (pinned octavia) under target/.
fn upstream_python() -> String {
    match std::env::var("UPSTREAM_PYTHON") {
        Ok(python) if !python.is_empty() => python,
        _ => run(&mut Command::new(workspace_root().join("scripts/upstream-venv.sh"))).trim().to_owned(),
    }
}

/// The agent configuration upstream's controller would put on the config
/// drive, rendered by upstream's own templater with `overrides` standing in
/// for the controller's octavia.conf.
fn upstream_agent_config(python: &str, amphora_id: &str, overrides: &serde_json::Value) -> String {
    run(Command::new(python)
        .args(["-W", "ignore"])
        .arg(workspace_root().join("tests/compat/render_agent_config.py"))
        .args([amphora_id, "SINGLE", &overrides.to_string()]))
}

/// Files the test put under the package's directories, removed before the
/// purge (also when the test failed), so that the purge check sees only
/// what the package itself left.
struct Placed(Vec<PathBuf>);

impl Placed {
    fn write(&mut self, path: &str, content: &str) {
        std::fs::write(path, content).unwrap_or_else(|e| panic!("write {path}: {e}"));
        self.0.push(path.into());
    }
}

impl Drop for Placed {
    fn drop(&mut self) {
        for path in &self.0 {
            let _ = std::fs::remove_file(path);
        }
    }
}

/// The installed agent started exactly as its unit's ExecStart, plus the
/// harness's --ready-file; on drop it is killed, and so is every process
/// left in `namespace` (its haproxy).
struct UnitAgent {
    child: Child,
    namespace: String,
    log: PathBuf,
    addr: SocketAddr,
}

impl UnitAgent {
    fn start(command: &[String], dir: &Path, namespace: &str) -> Self {
        let log = dir.join("unit-agent.log");
        let ready = dir.join("unit-agent.ready");
        let output = std::fs::File::create(&log).expect("log file");
        let child = Command::new(&command[0])
            .args(&command[1..])
            .arg("--ready-file")
            .arg(&ready)
            .stdin(Stdio::null())
            .stdout(output.try_clone().expect("log"))
            .stderr(output)
            .spawn()
            .expect("run the unit's ExecStart");
        let mut agent = UnitAgent { child, namespace: namespace.to_owned(), log, addr: SocketAddr::from(([0; 4], 0)) };
        agent.addr = wait::until_blocking("the installed agent to serve", WAIT, || {
            if let Ok(Some(status)) = agent.child.try_wait() {
                panic!("the installed agent exited with {status}:\n{}", agent.logs());
            }
            std::fs::read_to_string(&ready).ok().and_then(|text| text.trim().parse().ok())
        });
        agent
    }

    fn logs(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for UnitAgent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let pids = Command::new("ip").args(["netns", "pids", &self.namespace]).output();
        for pid in pids.map(|o| String::from_utf8_lossy(&o.stdout).into_owned()).unwrap_or_default().lines() {
            if let Ok(pid) = pid.trim().parse::<i32>() {
                let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGKILL);
            }
        }
    }
}

/// Datagrams received on `socket` until `wanted` accepts one, or a panic
/// naming `what` at the deadline.
fn receive_until<T>(
    what: &str,
    socket: impl Fn(&mut [u8]) -> std::io::Result<usize>,
    wanted: impl Fn(&[u8]) -> Option<T>,
) -> T {
    let deadline = Instant::now() + WAIT;
    let mut buffer = vec![0u8; 65536];
    while Instant::now() < deadline {
        if let Ok(n) = socket(&mut buffer)
            && let Some(found) = wanted(&buffer[..n])
        {
            return found;
        }
    }
    panic!("no {what} within {WAIT:?}");
}

/// Upstream's controller client (octavia's `AmphoraAPIClient1_0`, the
/// tests of tests/compat/test_upstream_client.py that need no plugged
/// ports) against the agent the package installed, configured as upstream's
/// controller configures it; then its heartbeats and syslog records.
fn drive_with_upstream_client(command: &[String], namespace: &str) {
    let python = upstream_python();
    let amphora_id = amphora_testkit::agent::unique_amphora_id();
    let pki = Pki::new(&amphora_id);
    let dir = tempfile::tempdir().expect("temp dir");
    let mut placed = Placed(Vec::new());
    // Where upstream's defaults (and so its image) keep the certificates.
    placed.write("/etc/octavia/certs/client_ca.pem", &pki.client_ca.cert_pem());
    placed.write("/etc/octavia/certs/server.pem", &pki.server.combined_pem());

    let heartbeats = UdpSocket::bind("127.0.0.1:0").expect("heartbeat socket");
    heartbeats.set_read_timeout(Some(Duration::from_millis(200))).expect("timeout");
    let syslog_path = dir.path().join("log");
    let syslog = UnixDatagram::bind(&syslog_path).expect("syslog socket");
    syslog.set_read_timeout(Some(Duration::from_millis(200))).expect("timeout");

    // What an operator's octavia.conf would say: the agent listens where
    // the test can reach it, heartbeats go to the test's socket.
    let overrides = serde_json::json!({
        "haproxy_amphora.bind_host": "127.0.0.1",
        "haproxy_amphora.bind_port": 0,
        "health_manager.controller_ip_port_list": [heartbeats.local_addr().expect("address").to_string()],
        "health_manager.heartbeat_key": "insecure",
        "health_manager.heartbeat_interval": 1,
    });
    let rendered = upstream_agent_config(&python, &amphora_id, &overrides);
    for line in ["use_syslog = True", "syslog_log_facility = LOG_LOCAL1", &format!("amphora_id = {amphora_id}")] {
        assert!(rendered.lines().any(|l| l == line), "upstream's templater wrote no {line:?}:\n{rendered}");
    }
    // Our options only: the test's namespace instead of the host's
    // amphora-haproxy, and a socket standing in for the image's syslog.
    let patched = rendered.replacen(
        "[amphora_agent]\n",
        &format!("[amphora_agent]\nnetwork_namespace = {namespace}\nsyslog_socket = {}\n", syslog_path.display()),
        1,
    );
    assert_ne!(patched, rendered, "no [amphora_agent] section in:\n{rendered}");
    placed.write(CONFIG, &patched);

    let agent = UnitAgent::start(command, dir.path(), namespace);
    let write = |name: &str, content: &str| {
        let path = dir.path().join(name);
        std::fs::write(&path, content).expect("write");
        path.display().to_string()
    };
    let haproxy_config = write(
        "haproxy.cfg",
        &format!(
            "global\n    daemon\n    user nobody\n    group nogroup\n    stats socket {STATE_DIR}/{LB}.sock mode 0666 level user\n\
             \x20   maxconn 1000\n\
             defaults\n    timeout connect 5s\n    timeout client 30s\n    timeout server 30s\n\
             frontend {LISTENER}\n    bind 127.0.0.1:{FRONTEND_PORT}\n    mode http\n    default_backend pool:{LISTENER}\n\
             backend pool:{LISTENER}\n    mode http\n    server member-1 127.0.0.1:{BACKEND_PORT}\n"
        ),
    );
    let new_server = pki.server_ca.server(&amphora_id, &[&amphora_id, "127.0.0.1"]);
    let mut suite = Command::new(&python);
    suite.args(["-W", "ignore", "-m", "unittest", "-v", "tests/compat/test_upstream_client.py"]);
    for test in ["test_01", "test_02", "test_03", "test_20", "test_21", "test_50", "test_60", "test_70", "test_80"] {
        suite.args(["-k", test]);
    }
    let output = suite
        .current_dir(workspace_root())
        .env("AGENT_PORT", agent.addr.port().to_string())
        .env("AMPHORA_ID", &amphora_id)
        .env("CLIENT_CERT", write("controller-client.pem", &pki.client.combined_pem()))
        .env("SERVER_CA", write("server-ca.pem", &pki.server_ca.cert_pem()))
        .env("LB_ID", LB)
        .env("LISTENER_ID", LISTENER)
        .env("HAPROXY_CONFIG", haproxy_config)
        .env("AGENT_CONFIG", CONFIG)
        .env("NEW_SERVER_PEM", write("new-server.pem", &new_server.combined_pem()))
        .output()
        .expect("run upstream's client");
    let report = format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    assert!(
        output.status.success(),
        "upstream's client failed against the installed agent:\n{report}\n{}",
        agent.logs()
    );
    assert!(report.contains("Ran 9 tests"), "{report}");

    // The rendered [health_manager] settings: heartbeats signed with the
    // key (the suite's config update rotated it), naming this amphora.
    let id = receive_until(
        "heartbeat",
        |b| heartbeats.recv(b),
        |datagram| {
            ["insecure", "rotated"]
                .iter()
                .find_map(|key| amphora_proto::heartbeat::decode::<serde_json::Value>(datagram, key, 1 << 20).ok())
        },
    );
    assert_eq!(id["id"], amphora_id.as_str(), "{id}");
    // The rendered use_syslog/syslog_log_facility: records at LOG_LOCAL1
    // (17; informational is severity 6, so PRI 17 * 8 + 6).
    let record = receive_until(
        "syslog record",
        |b| syslog.recv(b),
        |datagram| {
            let text = String::from_utf8_lossy(datagram).into_owned();
            text.starts_with("<142>amphora-agent[").then_some(text)
        },
    );
    assert!(record.contains("]: "), "{record}");
    drop(agent);
}

#[tokio::test(flavor = "multi_thread")]
async fn the_package_installs_runs_the_agent_from_its_unit_and_purges_clean() {
    // Systemd is not needed (and usually not PID 1 here): the agent is run
    // the way its unit would run it.
    let deb = built_deb();

    let info = run(Command::new("dpkg-deb").arg("--info").arg(&deb));
    for field in
        ["Package: amphora-agent", "Depends: haproxy, keepalived, iproute2, nftables", "Version: ", "Description: "]
    {
        assert!(info.lines().any(|l| l.trim_start().starts_with(field)), "no {field:?} in:\n{info}");
    }
    assert!(
        info.lines().any(|l| l.split_whitespace().last() == Some("conffiles")),
        "no conffiles in the package:\n{info}"
    );
    let contents = deb_contents(&deb);
    for path in EXPECTED_PATHS {
        assert!(contents.contains(*path), "{path} missing from the package: {contents:?}");
    }
    let extracted = tempfile::tempdir().expect("temp dir");
    run(Command::new("dpkg-deb").arg("-x").arg(&deb).arg(extracted.path()));
    for binary in ["usr/bin/amphora-agent", "usr/bin/amphora-vrrp-check", "usr/bin/amphora-health-checker"] {
        let elf = std::fs::read(extracted.path().join(binary)).expect("binary");
        assert!(is_stripped(&elf), "{binary} is not stripped");
    }
    let mode = |path: &Path| std::os::unix::fs::PermissionsExt::mode(&path.metadata().expect("metadata").permissions());
    assert_eq!(mode(&extracted.path().join("var/lib/octavia")) & 0o7777, 0o755);

    // What existed before, so that purging can be checked against it.
    let existed_before: BTreeSet<&String> = contents.iter().filter(|p| Path::new(p).exists()).collect();
    let installation = Installation::install(&deb);

    let listed: BTreeSet<String> =
        run(Command::new("dpkg").args(["-L", PACKAGE])).lines().map(str::to_owned).filter(|l| l != "/.").collect();
    for path in EXPECTED_PATHS {
        assert!(listed.contains(*path), "dpkg -L does not list {path}");
        assert!(Path::new(path).exists(), "{path} not installed");
    }
    let conffiles = run(Command::new("dpkg-query").args(["-W", "-f=${Conffiles}", PACKAGE]));
    assert!(conffiles.lines().any(|l| l.split_whitespace().next() == Some(CONFIG)), "{CONFIG} is no conffile");
    assert_eq!(mode(Path::new(STATE_DIR)) & 0o7777, 0o755);
    assert!(Path::new(ENABLED_AGENT).symlink_metadata().is_ok(), "the agent's unit was not enabled");
    run(Command::new("systemd-analyze").args(["verify", NETNS_UNIT, AGENT_UNIT]));

    let unit = std::fs::read_to_string(AGENT_UNIT).expect("installed unit");
    let command = exec_start(&unit);
    assert_eq!(command[1..], ["--config-file", CONFIG], "the unit's arguments");
    let binary = &command[0];
    assert!(listed.contains(binary), "ExecStart runs {binary}, which the package does not install");

    // The namespace unit, run twice as a restart would: the second run must
    // succeed on the namespace the first left.
    let namespace = Namespace(netns::unique_name("ampdeb"));
    let netns_unit = std::fs::read_to_string(NETNS_UNIT).expect("installed unit");
    assert!(unit.contains("After=network-online.target amphora-netns.service"), "agent not ordered after netns");
    for _ in 0..2 {
        run_netns_unit(&netns_unit, &namespace.0);
    }
    let lo = run(Command::new("ip").args(["-n", &namespace.0, "-o", "link", "show", "lo"]));
    assert!(lo.contains(",UP"), "loopback of the unit's namespace is not up: {lo}");

    {
        // The unit's command with the configuration path replaced by the
        // test's own (the harness adds --ready-file to learn the port),
        // serving in the namespace the netns unit made.
        let agent = Agent::builder(binary).option("amphora_agent", "network_namespace", &namespace.0).start();
        let client = client_of(&agent);
        assert_eq!(client.versions().await.expect("versions").api_version, ApiVersion::V1_0);
        let info = client.info().await.expect("info");
        assert_eq!(info.uuid, agent.amphora_id);

        let stored = client.upload_config(LB, lb_config(&agent, LB, LISTENER, 1)).await.expect("upload");
        assert_eq!(stored.message, Message::ok());
        client.start(LB).await.expect("start");
        let listeners = client.listeners().await.expect("listeners");
        assert_eq!(
            listeners.iter().map(|l| (l.uuid.as_str(), &l.status)).collect::<Vec<_>>(),
            [(LISTENER, &ListenerState::Active)]
        );
        let pid = agent.haproxy_pid(LB).expect("haproxy pid file");
        let exe = std::fs::read_link(format!("/proc/{pid}/exe")).expect("haproxy runs");
        assert_eq!(exe.file_name().and_then(|n| n.to_str()), Some("haproxy"));
        let inode = |path: String| std::os::unix::fs::MetadataExt::ino(&std::fs::metadata(path).expect("namespace"));
        assert_eq!(
            inode(format!("/proc/{pid}/ns/net")),
            inode(format!("/run/netns/{}", namespace.0)),
            "haproxy does not run in the namespace the unit made"
        );
    }

    // Upstream's side: its templater's configuration at the unit's path,
    // its controller client.
    drive_with_upstream_client(&command, &namespace.0);

    installation.purge();
    assert!(!installed(PACKAGE), "{PACKAGE} is still installed");
    let left: Vec<&String> =
        listed.iter().filter(|p| !existed_before.contains(p) && Path::new(p).symlink_metadata().is_ok()).collect();
    assert!(left.is_empty(), "left after purge: {left:?}");
    for path in [STATE_DIR, "/etc/octavia", ENABLED_AGENT] {
        assert!(Path::new(path).symlink_metadata().is_err(), "{path} left after purge");
    }
}

/// The package, built once for all the tests of this binary (build.sh
/// writes one file, which two builds at once would both write).
fn built_deb() -> PathBuf {
    static DEB: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    DEB.get_or_init(|| PathBuf::from(run(&mut build_command()).trim())).clone()
}

/// This machine's Debian release, which the clean root is made of (the
/// package's binaries are built against its libc).
fn host_codename() -> String {
    let release = std::fs::read_to_string("/etc/os-release").expect("/etc/os-release");
    release
        .lines()
        .find_map(|l| l.strip_prefix("VERSION_CODENAME="))
        .map(|c| c.trim_matches('"').to_owned())
        .expect("VERSION_CODENAME in /etc/os-release")
}

/// A minimal Debian root of this machine's release, made once with
/// debootstrap (AMPHORA_DEBIAN_MIRROR, else deb.debian.org) and kept under
/// target/ with its package lists fetched; made in a temporary directory
/// and renamed into place, so an interrupted run leaves none half made.
fn clean_root_image() -> PathBuf {
    let codename = host_codename();
    let cache = workspace_root().join("target/chroot");
    let image = cache.join(&codename);
    if image.join("usr/bin/apt-get").exists() {
        return image;
    }
    std::fs::create_dir_all(&cache).expect("target/chroot");
    let staging = tempfile::Builder::new().prefix(".debootstrap.").tempdir_in(&cache).expect("staging dir");
    let root = staging.path().join("root");
    let mirror = std::env::var("AMPHORA_DEBIAN_MIRROR").unwrap_or_else(|_| "http://deb.debian.org/debian".into());
    run(Command::new("debootstrap").args(["--variant=minbase", &codename]).arg(&root).arg(&mirror));
    std::fs::copy("/etc/resolv.conf", root.join("etc/resolv.conf")).expect("resolv.conf");
    run(Command::new("chroot").arg(&root).args(["apt-get", "update", "-qq"]));
    match std::fs::rename(&root, &image) {
        Ok(()) => {}
        // Another run made it meanwhile.
        Err(_) if image.join("usr/bin/apt-get").exists() => {}
        Err(e) => panic!("cannot keep the clean root at {}: {e}", image.display()),
    }
    image
}

/// One clean-root test at a time in this binary: their apt download cache
/// is one directory, whose lock apt does not wait for.
fn clean_root_turn() -> std::sync::MutexGuard<'static, ()> {
    static TURN: std::sync::Mutex<()> = std::sync::Mutex::new(());
    TURN.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// A throwaway copy of the clean root: an overlay over the kept image (so
/// the image stays clean), with /proc, /dev and apt's download cache
/// (kept under target/) mounted in. Unmounted on drop.
struct CleanRoot {
    dir: tempfile::TempDir,
    mounts: Vec<PathBuf>,
}

impl CleanRoot {
    fn new() -> Self {
        let image = clean_root_image();
        let dir = tempfile::Builder::new().prefix("amphora-clean-root.").tempdir().expect("temp dir");
        for sub in ["upper", "work", "root"] {
            std::fs::create_dir(dir.path().join(sub)).expect("overlay dir");
        }
        let mut root = CleanRoot { dir, mounts: Vec::new() };
        let merged = root.path();
        let options = format!(
            "lowerdir={},upperdir={},workdir={}",
            image.display(),
            root.dir.path().join("upper").display(),
            root.dir.path().join("work").display()
        );
        run(Command::new("mount").args(["-t", "overlay", "overlay", "-o", &options]).arg(&merged));
        root.mounts.push(merged.clone());
        run(Command::new("mount").args(["-t", "proc", "proc"]).arg(merged.join("proc")));
        root.mounts.push(merged.join("proc"));
        run(Command::new("mount").args(["--bind", "/dev"]).arg(merged.join("dev")));
        root.mounts.push(merged.join("dev"));
        let archives = workspace_root().join("target/chroot/apt-archives");
        std::fs::create_dir_all(archives.join("partial")).expect("apt cache");
        run(Command::new("mount").arg("--bind").arg(&archives).arg(merged.join("var/cache/apt/archives")));
        root.mounts.push(merged.join("var/cache/apt/archives"));
        root
    }

    fn path(&self) -> PathBuf {
        self.dir.path().join("root")
    }

    /// Runs a command inside the root, to success; its standard output.
    fn run(&self, args: &[&str]) -> String {
        run(Command::new("chroot").arg(self.path()).args(args).env("DEBIAN_FRONTEND", "noninteractive"))
    }

    /// Every path in the root but the pseudo file systems, apt's and dpkg's
    /// own records and logs (which an install changes by design).
    fn files(&self) -> BTreeSet<String> {
        let root = self.path();
        let skipped =
            ["/proc", "/dev", "/sys", "/run", "/tmp", "/var/cache", "/var/lib/apt", "/var/lib/dpkg", "/var/log"];
        let mut out = BTreeSet::new();
        let mut pending = vec![root.clone()];
        while let Some(dir) = pending.pop() {
            for entry in std::fs::read_dir(&dir).expect("read dir") {
                let entry = entry.expect("entry");
                let path = entry.path();
                let inside = format!("/{}", path.strip_prefix(&root).expect("inside").display());
                if skipped.iter().any(|s| inside == *s || inside.starts_with(&format!("{s}/"))) {
                    continue;
                }
                if entry.file_type().expect("file type").is_dir() {
                    pending.push(path);
                }
                out.insert(inside);
            }
        }
        out
    }
}

impl Drop for CleanRoot {
    fn drop(&mut self) {
        for mount in self.mounts.iter().rev() {
            let _ = Command::new("umount").arg("--lazy").arg(mount).status();
        }
    }
}

#[test]
fn the_package_installs_into_a_clean_root_runs_there_and_purges_to_nothing() {
    let deb = built_deb();
    let _turn = clean_root_turn();
    let root = CleanRoot::new();
    // The package's dependencies first, so that what the package itself
    // adds, and what its purge leaves, can be told apart.
    let depends = run(Command::new("dpkg-deb").args(["--field"]).arg(&deb).arg("Depends"));
    let depends: Vec<&str> = depends.trim().split(',').map(str::trim).collect();
    assert_eq!(depends, ["haproxy", "keepalived", "iproute2", "nftables"]);
    let mut install = vec!["apt-get", "install", "-y", "-qq", "--no-install-recommends"];
    install.extend(&depends);
    root.run(&install);
    let before = root.files();

    std::fs::copy(&deb, root.path().join("tmp/amphora-agent.deb")).expect("copy the package in");
    root.run(&["dpkg", "-i", "/tmp/amphora-agent.deb"]);
    let listed = root.run(&["dpkg", "-L", PACKAGE]);
    for path in EXPECTED_PATHS {
        assert!(listed.lines().any(|l| l == *path), "dpkg -L does not list {path}:\n{listed}");
        assert!(root.path().join(path.trim_start_matches('/')).exists(), "{path} not installed in the clean root");
    }
    let enabled = root.path().join(ENABLED_AGENT.trim_start_matches('/'));
    assert!(enabled.symlink_metadata().is_ok(), "the agent's unit was not enabled in the clean root");

    // The binaries run on the clean root's libraries, and the shipped
    // configuration reads (it lacks only the amphora id, which the
    // controller renders).
    let version = root.run(&["/usr/bin/amphora-agent", "--version"]);
    assert!(version.starts_with("amphora-agent "), "{version}");
    let output = Command::new("chroot")
        .arg(root.path())
        .args(["/usr/bin/amphora-agent", "--config-file", CONFIG])
        .output()
        .expect("run the agent");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("missing required option [amphora_agent] amphora_id"), "{stderr}");
    let output = Command::new("chroot")
        .arg(root.path())
        .args(["/usr/bin/amphora-health-checker", "--help"])
        .output()
        .expect("run the health checker");
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));

    root.run(&["dpkg", "--purge", PACKAGE]);
    let after = root.files();
    let left: Vec<&String> = after.difference(&before).collect();
    let taken: Vec<&String> = before.difference(&after).collect();
    assert!(left.is_empty() && taken.is_empty(), "the purge left {left:?} and took {taken:?}");
}

/// What upstream's amphora-agent element leaves in an image before ours
/// runs (its install.d/75 and post-install.d/11-12): the virtualenv's
/// commands linked into /usr/local/bin, its units (enabled), its
/// logrotate file.
fn imitate_upstreams_element(root: &CleanRoot) {
    let venv = "opt/amphora-agent-venv/bin";
    let commands =
        ["amphora-agent", "amphora-health-checker", "haproxy-vrrp-check", "amphora-interface", "prometheus-proxy"];
    std::fs::create_dir_all(root.path().join(venv)).expect("venv");
    std::fs::create_dir_all(root.path().join("usr/local/bin")).expect("/usr/local/bin");
    for command in commands {
        let path = root.path().join(venv).join(command);
        std::fs::write(&path, "#!/bin/sh\necho upstream's python\n").expect("command");
        std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o755)).expect("chmod");
        std::os::unix::fs::symlink(format!("/{venv}/{command}"), root.path().join("usr/local/bin").join(command))
            .expect("link");
    }
    let units = root.path().join("usr/lib/systemd/system");
    std::fs::create_dir_all(&units).expect("units");
    std::fs::write(
        units.join("amphora-agent.service"),
        "[Unit]\nDescription=OpenStack Octavia Amphora Agent\n[Service]\n\
         ExecStart=/usr/local/bin/amphora-agent --config-file /etc/octavia/amphora-agent.conf\n\
         [Install]\nWantedBy=multi-user.target\n",
    )
    .expect("upstream's unit");
    std::fs::write(
        units.join("prometheus-proxy.service"),
        "[Unit]\nDescription=OpenStack Octavia Prometheus Proxy\n[Service]\nExecStart=/usr/local/bin/prometheus-proxy\n\
         [Install]\nWantedBy=multi-user.target\n",
    )
    .expect("prometheus-proxy unit");
    std::fs::create_dir_all(root.path().join("etc/logrotate.d")).expect("logrotate.d");
    std::fs::write(root.path().join("etc/logrotate.d/amphora-agent"), "/var/log/amphora-agent.log {}\n")
        .expect("logrotate");
    root.run(&["systemctl", "enable", "amphora-agent.service", "prometheus-proxy.service"]);
}

/// Runs the element's hooks as diskimage-builder would: extra-data.d on
/// the host with TMP_HOOKS_PATH, then install.d and post-install.d inside
/// the image, each with `environment`.
fn run_element_hooks(root: &CleanRoot, deb: &Path, environment: &[(&str, &str)]) {
    let element = workspace_root().join("packaging/dib/amphora-agent-rs");
    let hooks = root.path().join("tmp/in_target.d");
    std::fs::create_dir_all(&hooks).expect("hooks dir");
    let mut copy = Command::new(element.join("extra-data.d/10-amphora-agent-rs-copy-deb"));
    copy.env("TMP_HOOKS_PATH", &hooks).env("DIB_AMPHORA_AGENT_RS_DEB", deb);
    run(&mut copy);
    for hook in ["install.d/80-amphora-agent-rs-install", "post-install.d/15-amphora-agent-rs-replace-upstream"] {
        let inside = format!("/tmp/{}", hook.replace('/', "-"));
        std::fs::copy(element.join(hook), root.path().join(inside.trim_start_matches('/'))).expect("copy hook");
        let mut command = Command::new("chroot");
        command.arg(root.path()).args(["/bin/bash", &inside]).env("DEBIAN_FRONTEND", "noninteractive");
        for (name, value) in environment {
            command.env(name, value);
        }
        run(&mut command);
    }
}

#[test]
fn the_image_elements_hooks_put_the_package_in_place_of_upstreams_agent() {
    let deb = built_deb();
    let _turn = clean_root_turn();
    let root = CleanRoot::new();
    // An image with systemd, as upstream's (dib-init-system) has.
    root.run(&["apt-get", "install", "-y", "-qq", "--no-install-recommends", "systemd"]);
    imitate_upstreams_element(&root);
    run_element_hooks(&root, &deb, &[]);

    let status = root.run(&["dpkg-query", "-W", "-f=${db:Status-Status}", PACKAGE]);
    assert_eq!(status, "installed");
    // The package's unit, not upstream's, at the path upstream's was
    // written to, and enabled.
    let unit = std::fs::read_to_string(root.path().join("usr/lib/systemd/system/amphora-agent.service")).expect("unit");
    assert_eq!(exec_start(&unit), ["/usr/bin/amphora-agent", "--config-file", CONFIG], "{unit}");
    let owner = root.run(&["dpkg", "-S", "/lib/systemd/system/amphora-agent.service"]);
    assert!(owner.starts_with("amphora-agent:"), "{owner}");
    assert!(root.path().join(ENABLED_AGENT.trim_start_matches('/')).symlink_metadata().is_ok(), "agent not enabled");
    // The commands the package replaces resolve to it; upstream's others stay.
    let local = root.path().join("usr/local/bin");
    for replaced in ["amphora-agent", "amphora-health-checker", "haproxy-vrrp-check"] {
        assert!(local.join(replaced).symlink_metadata().is_err(), "/usr/local/bin/{replaced} left");
    }
    for kept in ["amphora-interface", "prometheus-proxy"] {
        assert!(local.join(kept).symlink_metadata().is_ok(), "/usr/local/bin/{kept} removed");
    }
    let checker = root.run(&["/bin/sh", "-c", "command -v amphora-health-checker"]);
    assert_eq!(checker.trim(), "/usr/bin/amphora-health-checker");
    assert!(!root.path().join("etc/logrotate.d/amphora-agent").exists(), "upstream's logrotate file left");
    assert!(
        root.path().join("opt/amphora-agent-venv").is_dir(),
        "the virtualenv prometheus-proxy runs from was removed"
    );
    assert!(root.path().join("usr/lib/systemd/system/prometheus-proxy.service").exists());
    assert!(!root.path().join("tmp/in_target.d/amphora-agent-rs").exists(), "the copied package was left in the image");

    // Asked to, the hooks (run again, as on a rebuild) remove the rest of
    // the Python agent.
    run_element_hooks(&root, &deb, &[("DIB_AMPHORA_AGENT_RS_REMOVE_PYTHON", "1")]);
    assert!(!root.path().join("opt/amphora-agent-venv").exists(), "the virtualenv is left");
    assert!(!root.path().join("usr/lib/systemd/system/prometheus-proxy.service").exists(), "prometheus-proxy left");
    assert!(local.join("prometheus-proxy").symlink_metadata().is_err(), "/usr/local/bin/prometheus-proxy left");
    let enabled = root.path().join("etc/systemd/system/multi-user.target.wants/prometheus-proxy.service");
    assert!(enabled.symlink_metadata().is_err(), "prometheus-proxy still enabled");
    assert!(root.path().join(ENABLED_AGENT.trim_start_matches('/')).symlink_metadata().is_ok(), "agent not enabled");
}

#[test]
fn exec_start_reads_the_only_command_line() {
    let unit = "[Service]\nType=simple\nExecStart=/usr/bin/x --config-file /etc/x.conf\nRestart=always\n";
    assert_eq!(exec_start(unit), ["/usr/bin/x", "--config-file", "/etc/x.conf"]);
}

#[test]
fn stripping_is_read_from_the_section_headers() {
    let this_test = std::fs::read(std::env::current_exe().expect("test binary")).expect("read");
    // Test binaries keep their symbol table (the dev profile does not strip).
    assert!(!is_stripped(&this_test));
}
