//! `amphora-vrrp-check SOCKET...`: keepalived's track check for haproxy
//! (upstream: `haproxy-vrrp-check`). Asks each stats socket for its
//! statistics; the exit status is the number that did not answer, so
//! keepalived gives up the VIP when any load balancer is down. Kept tiny:
//! keepalived runs it every few seconds.

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

fn main() -> ExitCode {
    let failed = std::env::args().skip(1).filter(|socket| !answers(socket)).count();
    ExitCode::from(failed.min(255) as u8)
}
