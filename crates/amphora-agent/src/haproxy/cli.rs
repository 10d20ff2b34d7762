//! haproxy's command sockets: the stats socket every Octavia configuration
//! declares, and the master CLI socket the agent gives each master process.
//! One command per connection, answered and closed by haproxy.

use std::io;
use std::path::Path;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;

/// How long one command may take before the socket is deemed unresponsive.
const QUERY_TIMEOUT: Duration = Duration::from_secs(10);
/// Upper bound on an answer; `show stat` of a very large configuration is a
/// few megabytes.
const MAX_ANSWER: u64 = 64 * 1024 * 1024;

/// Sends one command and returns haproxy's whole answer.
pub async fn query(socket: &Path, command: &str) -> io::Result<String> {
    let exchange = async {
        let mut stream = UnixStream::connect(socket).await?;
        stream.write_all(command.as_bytes()).await?;
        stream.write_all(b"\n").await?;
        stream.shutdown().await?;
        let mut answer = Vec::new();
        stream.take(MAX_ANSWER).read_to_end(&mut answer).await?;
        Ok(String::from_utf8_lossy(&answer).into_owned())
    };
    tokio::time::timeout(QUERY_TIMEOUT, exchange)
        .await
        .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, format!("{command:?} timed out")))?
}

/// The master process's view of itself, from `show proc`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MasterStatus {
    /// Reloads since the master started, including failed ones.
    pub reloads: u32,
    /// Reloads that failed (the old workers kept serving).
    pub failed: u32,
    /// Workers of the current generation.
    pub current_workers: u32,
}

/// Parses the master CLI's `show proc` answer.
pub fn parse_show_proc(text: &str) -> Option<MasterStatus> {
    let mut master = None;
    let mut current_workers = 0;
    for line in text.lines() {
        let words: Vec<&str> = line.split_whitespace().collect();
        match words.get(1) {
            Some(&"master") => {
                let reloads = words.get(2)?.parse().ok()?;
                let failed = match (words.get(3), words.get(4)) {
                    (Some(&"[failed:"), Some(n)) => n.trim_end_matches(']').parse().ok()?,
                    _ => 0,
                };
                master = Some((reloads, failed));
            }
            Some(&"worker") if words.get(2) == Some(&"0") => current_workers += 1,
            _ => {}
        }
    }
    master.map(|(reloads, failed)| MasterStatus { reloads, failed, current_workers })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn show_proc_after_a_failed_reload() {
        let text = "\
#<PID>          <type>          <reloads>       <uptime>        <version>
2566            master          2 [failed: 1]   0d00h10m37s     2.6.12-1+deb12u3
# workers
2649            worker          1               0d00h10m19s     2.6.12-1+deb12u3
# programs
";
        assert_eq!(parse_show_proc(text), Some(MasterStatus { reloads: 2, failed: 1, current_workers: 0 }));
    }

    #[test]
    fn show_proc_of_a_fresh_master() {
        let text = "\
#<PID>          <type>          <reloads>       <uptime>        <version>
2566            master          0 [failed: 0]   0d00h00m06s     2.6.12-1+deb12u3
# workers
2567            worker          0               0d00h00m06s     2.6.12-1+deb12u3
# programs
";
        assert_eq!(parse_show_proc(text), Some(MasterStatus { reloads: 0, failed: 0, current_workers: 1 }));
        assert_eq!(parse_show_proc("Unknown command\n"), None);
    }
}
