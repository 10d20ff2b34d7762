//! Runs tests/controller (pytest) against the real controller binary:
//! openstacksdk and the `openstack loadbalancer` CLI in noauth mode, on
//! SQLite and on PostgreSQL, and the same clients through a real Keystone
//! (tests/controller/keystone_server.py). The clients' virtualenv comes
//! from scripts/clients-venv.sh (CLIENTS_PYTHON, set by scripts/test.sh).

mod common;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn python() -> String {
    std::env::var("CLIENTS_PYTHON").expect("CLIENTS_PYTHON must name the python of scripts/clients-venv.sh")
}

/// A child process killed when the test ends, however it ends.
struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Waits until `path` holds something, or panics after `limit`.
fn wait_for_file(path: &Path, limit: Duration, child: &mut Child) -> String {
    let deadline = Instant::now() + limit;
    loop {
        if let Ok(text) = std::fs::read_to_string(path)
            && !text.trim().is_empty()
        {
            return text.trim().to_owned();
        }
        if let Ok(Some(status)) = child.try_wait() {
            panic!("process exited with {status} before writing {}", path.display());
        }
        assert!(Instant::now() < deadline, "nothing in {} after {limit:?}", path.display());
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Starts the controller on `port` (0: any) with `extra` appended to its
/// configuration; returns it and its API URL.
fn controller(dir: &Path, db_url: &str, port: u16, extra: &str) -> (Killed, String) {
    let conf = dir.join("octavia.conf");
    std::fs::write(
        &conf,
        format!(
            "[api_settings]\nbind_host = 127.0.0.1\nbind_port = {port}\n[database]\nconnection = {db_url}\n\
             [health_manager]\nbind_port = 0\n[noop_drivers]\nstep_delay = 0.05\n[house_keeping]\ncleanup_interval = 3600\n{extra}"
        ),
    )
    .expect("write configuration");
    let ready = dir.join("ready");
    let log = std::fs::File::create(dir.join("controller.log")).expect("log file");
    let mut child = Command::new(env!("CARGO_BIN_EXE_amphora-controller"))
        .arg("--config-file")
        .arg(&conf)
        .arg("run")
        .arg("--ready-file")
        .arg(&ready)
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("start the controller");
    let addr = wait_for_file(&ready, Duration::from_secs(60), &mut child);
    (Killed(child), format!("http://{addr}"))
}

fn pytest(args: &[&str], envs: &[(&str, &str)], dir: &Path) {
    let output = Command::new(python())
        .args(["-m", "pytest", "-v", "-p", "no:cacheprovider"])
        .args(args)
        .current_dir(workspace())
        .env("HOME", dir)
        .envs(envs.iter().copied())
        .output()
        .expect("run pytest");
    let report = format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    let log = std::fs::read_to_string(dir.join("controller.log")).unwrap_or_default();
    assert!(output.status.success(), "clients failed against the controller:\n{report}\ncontroller log:\n{log}");
    assert!(report.contains(" passed"), "{report}");
    assert!(!report.contains(" skipped"), "every client test must run:\n{report}");
    eprintln!("{report}");
}

#[test]
#[ignore = "needs the clients virtualenv; scripts/test.sh runs it with CLIENTS_PYTHON set"]
fn openstacksdk_and_the_cli_work_in_noauth_mode_on_every_database() {
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let databases = runtime.block_on(common::databases());
    // The databases run side by side: the CLI's start-up, not the
    // controller, is what takes the time.
    std::thread::scope(|scope| {
        for db in &databases {
            scope.spawn(move || {
                let dir = tempfile::tempdir().expect("temp dir");
                let (_controller, url) = controller(dir.path(), &db.url, 0, "[api_settings]\nauth_strategy = noauth\n");
                eprintln!("== {} ==", db.name);
                // The CLI's subnet lookups go to the controller's own network answers.
                pytest(
                    &["tests/controller", "-m", "noauth"],
                    &[("OCTAVIA_ENDPOINT", &url), ("NEUTRON_ENDPOINT", &url)],
                    dir.path(),
                );
            });
        }
    });
}

#[test]
#[ignore = "needs the clients virtualenv (Keystone); scripts/test.sh runs it with CLIENTS_PYTHON set"]
fn the_clients_work_through_a_real_keystone_with_its_roles() {
    let dir = tempfile::tempdir().expect("temp dir");
    // The controller's port must be known before Keystone's catalog is
    // written: take a free one.
    let port = std::net::TcpListener::bind("127.0.0.1:0").expect("port").local_addr().expect("addr").port();
    let url = format!("http://127.0.0.1:{port}");
    let ks_dir = dir.path().join("keystone");
    let mut keystone = Command::new(python())
        .arg(workspace().join("tests/controller/keystone_server.py"))
        .arg("--dir")
        .arg(&ks_dir)
        .args(["--octavia-url", &url])
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(dir.path().join("keystone.log")).expect("log"))
        .spawn()
        .expect("start keystone");
    let stdout = keystone.stdout.take().expect("stdout");
    let keystone = Killed(keystone);
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut line = String::new();
        let _ = BufReader::new(stdout).read_line(&mut line);
        let _ = tx.send(line);
    });
    let line = rx.recv_timeout(Duration::from_secs(420)).expect("keystone ready within 420 s");
    let info: serde_json::Value = serde_json::from_str(&line).unwrap_or_else(|e| {
        let log = std::fs::read_to_string(dir.path().join("keystone.log")).unwrap_or_default();
        panic!("keystone printed {line:?} ({e}):\n{log}")
    });
    let ks_json = dir.path().join("keystone.json");
    std::fs::write(&ks_json, &line).expect("write keystone json");
    let octavia = &info["users"]["octavia"];
    let s = |v: &serde_json::Value| v.as_str().unwrap_or_default().to_owned();
    let extra = format!(
        "[api_settings]\nauth_strategy = keystone\n[keystone_authtoken]\nauth_url = {}\n\
         www_authenticate_uri = {}\nusername = {}\npassword = {}\nproject_name = {}\n",
        s(&info["auth_url"]),
        s(&info["auth_url"]),
        s(&octavia["username"]),
        s(&octavia["password"]),
        s(&octavia["project_name"]),
    );
    let db_dir = tempfile::tempdir().expect("temp dir");
    let db_url = format!("sqlite:///{}/octavia.db", db_dir.path().display());
    let (_controller, _) = controller(dir.path(), &db_url, port, &extra);
    pytest(
        &["tests/controller", "-m", "keystone"],
        &[("KEYSTONE_JSON", &ks_json.display().to_string()), ("OCTAVIA_KEYSTONE_ENDPOINT", &url)],
        dir.path(),
    );
    drop(keystone);
}
