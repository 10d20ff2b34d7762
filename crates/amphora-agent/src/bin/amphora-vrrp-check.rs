//! `amphora-vrrp-check [SOCKET | --pid-file FILE]...`: keepalived's track
//! check (upstream: `haproxy-vrrp-check` and `lvs_udp_check.sh`). Asks each
//! haproxy stats socket for its statistics and checks that each UDP/SCTP
//! listener's keepalived (by pid file) is alive; the exit status is the
//! number that failed, so keepalived gives up the VIP when any listener is
//! down. Kept tiny: keepalived runs it every few seconds.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::process::ExitCode;
use std::time::Duration;

fn answers(path: &str) -> bool {
    let result = ask(path);
    if let Err(e) = &result {
        eprintln!("{path}: {e}");
    }
    matches!(result, Ok(true))
}

fn ask(path: &str) -> std::io::Result<bool> {
    let mut stream = UnixStream::connect(path)?;
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    stream.set_write_timeout(Some(Duration::from_secs(5)))?;
    stream.write_all(b"show stat -1 -1 -1\n")?;
    stream.shutdown(std::net::Shutdown::Write)?;
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer)?;
    if answer.is_empty() {
        eprintln!("{path}: empty answer");
    }
    Ok(!answer.is_empty())
}

/// Whether the process in a pid file is alive (a UDP/SCTP listener's
/// keepalived).
fn alive(pid_file: &str) -> bool {
    let pid = std::fs::read_to_string(pid_file).ok().and_then(|text| text.trim().parse::<i32>().ok());
    let Some(pid) = pid.filter(|pid| *pid > 0) else {
        eprintln!("{pid_file}: no pid");
        return false;
    };
    // Alive, and not a zombie waiting for its parent.
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let state = stat.rfind(')').and_then(|i| stat[i + 1..].split_whitespace().next());
    let running = !matches!(state, None | Some("Z") | Some("X"));
    if !running {
        eprintln!("{pid_file}: process {pid} is not running");
    }
    running
}

fn main() -> ExitCode {
    let mut failed = 0usize;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let ok = if arg == "--pid-file" { args.next().is_some_and(|file| alive(&file)) } else { answers(&arg) };
        failed += usize::from(!ok);
    }
    ExitCode::from(failed.min(255) as u8)
}
