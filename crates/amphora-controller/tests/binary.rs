//! The controller binary itself: `db upgrade`, a first start that creates
//! its SQLite file, roles run apart, clean exit on SIGTERM, and
//! configuration errors that name the option.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_amphora-controller");

fn write_conf(dir: &Path, extra: &str) -> std::path::PathBuf {
    let conf = dir.join("octavia.conf");
    let db = dir.join("state/octavia.db");
    std::fs::write(
        &conf,
        format!(
            "[api_settings]\nauth_strategy = noauth\nbind_host = 127.0.0.1\nbind_port = 0\n\
             [health_manager]\nbind_port = 0\n[database]\nconnection = sqlite:///{}\n{extra}",
            db.display()
        ),
    )
    .expect("write configuration");
    conf
}

fn wait_exit(child: &mut Child, limit: Duration) -> std::process::ExitStatus {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(status) = child.try_wait().expect("wait") {
            return status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("the controller did not exit within {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn wait_file(path: &Path, limit: Duration) -> String {
    let deadline = Instant::now() + limit;
    loop {
        if let Ok(s) = std::fs::read_to_string(path)
            && !s.is_empty()
        {
            return s;
        }
        assert!(Instant::now() < deadline, "{} never appeared", path.display());
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn db_upgrade_creates_the_database_file_and_schema() {
    let dir = tempfile::tempdir().expect("temp dir");
    let conf = write_conf(dir.path(), "");
    let out = Command::new(BIN).arg("--config-file").arg(&conf).args(["db", "upgrade"]).output().expect("run");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let db = dir.path().join("state/octavia.db");
    assert!(db.is_file());
    // Running it again is a no-op.
    let again = Command::new(BIN).arg("--config-file").arg(&conf).args(["db", "upgrade"]).output().expect("run");
    assert!(again.status.success());
}

#[test]
fn sigterm_stops_every_role_cleanly() {
    let dir = tempfile::tempdir().expect("temp dir");
    let conf = write_conf(dir.path(), "");
    let ready = dir.path().join("ready");
    let mut child = Command::new(BIN)
        .arg("--config-file")
        .arg(&conf)
        .args(["run", "--ready-file"])
        .arg(&ready)
        .stderr(Stdio::null())
        .spawn()
        .expect("start");
    let addr = wait_file(&ready, Duration::from_secs(30));
    let mut stream = std::net::TcpStream::connect(addr.trim()).expect("the API listens");
    std::io::Write::write_all(&mut stream, b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").expect("send");
    let mut answer = String::new();
    std::io::Read::read_to_string(&mut stream, &mut answer).expect("read");
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    terminate(child.id());
    let status = wait_exit(&mut child, Duration::from_secs(20));
    assert!(status.success(), "exit status {status}");
}

#[test]
fn roles_run_apart_and_unknown_roles_are_refused() {
    let dir = tempfile::tempdir().expect("temp dir");
    let conf = write_conf(dir.path(), "");
    // A worker alone serves no API: no ready address is written.
    let mut worker = Command::new(BIN)
        .arg("--config-file")
        .arg(&conf)
        .args(["run", "--roles", "worker,housekeeping"])
        .stderr(Stdio::null())
        .spawn()
        .expect("start");
    // It has started once its database exists; it must still be running.
    let db = dir.path().join("state/octavia.db");
    let deadline = Instant::now() + Duration::from_secs(30);
    while !db.is_file() {
        assert!(Instant::now() < deadline, "the worker never opened its database");
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(worker.try_wait().expect("wait").is_none(), "the worker role keeps running");
    terminate(worker.id());
    assert!(wait_exit(&mut worker, Duration::from_secs(20)).success());
    let out =
        Command::new(BIN).arg("--config-file").arg(&conf).args(["run", "--roles", "api,chef"]).output().expect("run");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown role \"chef\""));
}

#[test]
fn a_bad_option_is_named_and_exits_2() {
    let dir = tempfile::tempdir().expect("temp dir");
    let conf = write_conf(dir.path(), "[health_manager]\nheartbeat_timeout = soon\n");
    let out = Command::new(BIN).arg("--config-file").arg(&conf).args(["db", "upgrade"]).output().expect("run");
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("[health_manager] heartbeat_timeout"), "{err}");
}

fn terminate(pid: u32) {
    let status = Command::new("kill").args(["-TERM", &pid.to_string()]).status().expect("kill");
    assert!(status.success());
}
