//! The agent's own log records sent to the local syslog socket, as
//! upstream's agent sends them (oslo.log's `use_syslog`, facility
//! `LOG_LOCAL<administrative_log_facility>`), so that the image's rsyslog
//! forwards them to the operator's admin log targets.
//!
//! One datagram per record, `<PRI>amphora-agent[PID]: LEVEL message`, the
//! format both rsyslog and journald parse (identifier, pid, severity). The
//! socket is non-blocking and looked up on every record: a missing,
//! restarting or stuck syslog daemon costs that record its syslog copy, which
//! then goes to standard error instead; the agent never waits for it.

use std::io::Write;
use std::os::unix::net::UnixDatagram;
use std::path::PathBuf;

use tracing::{Level, Metadata};
use tracing_subscriber::fmt::MakeWriter;

/// A syslog facility (RFC 5424 code, 0-23).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Facility(u8);

/// Facility names as Python's `SysLogHandler` (and so oslo.log's
/// `syslog_log_facility`) knows them, by code.
const NAMES: &[(&str, u8)] = &[
    ("kern", 0),
    ("user", 1),
    ("mail", 2),
    ("daemon", 3),
    ("auth", 4),
    ("syslog", 5),
    ("lpr", 6),
    ("news", 7),
    ("uucp", 8),
    ("cron", 9),
    ("authpriv", 10),
    ("ftp", 11),
    ("local0", 16),
    ("local1", 17),
    ("local2", 18),
    ("local3", 19),
    ("local4", 20),
    ("local5", 21),
    ("local6", 22),
    ("local7", 23),
];

impl Facility {
    /// `LOG_LOCAL<n>`, as upstream numbers its log facilities (0-7).
    pub fn local(n: u8) -> Option<Facility> {
        (n <= 7).then_some(Facility(16 + n))
    }

    /// Parses oslo.log's spelling: `LOG_LOCAL1`, `local1`, `LOG_USER`...
    /// (case-insensitive, `LOG_` optional).
    pub fn parse(value: &str) -> Result<Facility, String> {
        let lower = value.to_ascii_lowercase();
        let name = lower.strip_prefix("log_").unwrap_or(&lower);
        NAMES
            .iter()
            .find(|(known, _)| *known == name)
            .map(|(_, code)| Facility(*code))
            .ok_or_else(|| "expected a syslog facility such as LOG_LOCAL1, LOG_USER or LOG_DAEMON".to_owned())
    }

    pub fn code(self) -> u8 {
        self.0
    }

    /// `LOG_<NAME>`, as a configuration file would spell it.
    pub fn name(self) -> String {
        let name = NAMES.iter().find(|(_, code)| *code == self.0).map_or("user", |(name, _)| name);
        format!("LOG_{}", name.to_ascii_uppercase())
    }
}

/// The syslog severity of a tracing level (RFC 5424: 3 error, 4 warning,
/// 6 informational, 7 debug).
pub fn severity(level: &Level) -> u8 {
    match *level {
        Level::ERROR => 3,
        Level::WARN => 4,
        Level::INFO => 6,
        Level::DEBUG | Level::TRACE => 7,
    }
}

/// Where and how records go: a `MakeWriter` for tracing's fmt layer, which
/// writes each formatted record once into the writer it makes.
#[derive(Debug)]
pub struct Syslog {
    socket: Option<UnixDatagram>,
    path: PathBuf,
    facility: Facility,
    tag: String,
}

impl Syslog {
    pub fn new(path: PathBuf, facility: Facility) -> Syslog {
        let socket = UnixDatagram::unbound().and_then(|s| s.set_nonblocking(true).map(|()| s)).ok();
        Syslog { socket, path, facility, tag: format!("amphora-agent[{}]", std::process::id()) }
    }

    /// Sends one record; on any failure writes it to standard error.
    fn send(&self, severity: u8, record: &[u8]) {
        let record = record.strip_suffix(b"\n").unwrap_or(record);
        let mut datagram =
            format!("<{}>{}: ", u16::from(self.facility.0) * 8 + u16::from(severity), self.tag).into_bytes();
        datagram.extend_from_slice(record);
        let sent = self.socket.as_ref().is_some_and(|socket| socket.send_to(&datagram, &self.path).is_ok());
        if !sent {
            let mut stderr = std::io::stderr().lock();
            let _ = stderr.write_all(record).and_then(|()| stderr.write_all(b"\n"));
        }
    }
}

/// One record being formatted; sent when the fmt layer drops it.
#[derive(Debug)]
pub struct Record<'a> {
    sink: &'a Syslog,
    severity: u8,
    buffer: Vec<u8>,
}

impl Write for Record<'_> {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.buffer.extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Drop for Record<'_> {
    fn drop(&mut self) {
        if !self.buffer.is_empty() {
            self.sink.send(self.severity, &self.buffer);
        }
    }
}

impl<'a> MakeWriter<'a> for Syslog {
    type Writer = Record<'a>;

    fn make_writer(&'a self) -> Record<'a> {
        Record { sink: self, severity: severity(&Level::INFO), buffer: Vec::new() }
    }

    fn make_writer_for(&'a self, meta: &Metadata<'_>) -> Record<'a> {
        Record { sink: self, severity: severity(meta.level()), buffer: Vec::new() }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;
    use tracing_subscriber::layer::SubscriberExt;

    #[test]
    fn facilities_parse_in_oslo_spellings() {
        assert_eq!(Facility::parse("LOG_LOCAL1"), Ok(Facility(17)));
        assert_eq!(Facility::parse("local7"), Ok(Facility(23)));
        assert_eq!(Facility::parse("log_daemon"), Ok(Facility(3)));
        assert_eq!(Facility::parse("LOG_USER"), Ok(Facility(1)));
        assert!(Facility::parse("LOG_LOCAL8").is_err());
        assert!(Facility::parse("").is_err());
        assert_eq!(Facility::local(0), Some(Facility(16)));
        assert_eq!(Facility::local(8), None);
        assert_eq!(Facility(17).name(), "LOG_LOCAL1");
    }

    fn receive(socket: &UnixDatagram) -> String {
        let mut buffer = [0u8; 4096];
        let n = socket.recv(&mut buffer).expect("a record within the timeout");
        String::from_utf8_lossy(&buffer[..n]).into_owned()
    }

    #[test]
    fn each_record_is_one_datagram_with_facility_and_severity() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("log");
        let server = UnixDatagram::bind(&path).expect("bind");
        server.set_read_timeout(Some(Duration::from_secs(10))).expect("timeout");
        let syslog = Syslog::new(path, Facility::local(4).expect("local4"));
        let subscriber = tracing_subscriber::registry().with(
            tracing_subscriber::fmt::layer().with_ansi(false).without_time().with_target(false).with_writer(syslog),
        );
        tracing::subscriber::with_default(subscriber, || {
            tracing::error!("disk full");
            tracing::warn!(lb = "x", "slow");
            tracing::info!("hello");
            tracing::debug!("details");
        });
        let tag = format!("amphora-agent[{}]: ", std::process::id());
        // local4 is 20; PRI = 20 * 8 + severity.
        assert_eq!(receive(&server), format!("<163>{tag}ERROR disk full"));
        assert_eq!(receive(&server), format!("<164>{tag} WARN slow lb=\"x\""));
        assert_eq!(receive(&server), format!("<166>{tag} INFO hello"));
        assert_eq!(receive(&server), format!("<167>{tag}DEBUG details"));
    }

    #[test]
    fn a_missing_socket_does_not_fail_the_writer() {
        let dir = tempfile::tempdir().expect("tempdir");
        let syslog = Syslog::new(dir.path().join("absent"), Facility::local(1).expect("local1"));
        let mut record = syslog.make_writer();
        record.write_all(b"still here\n").expect("write");
        drop(record);
    }
}
