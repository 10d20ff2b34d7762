//! `amphora-health-checker {udp|sctp} [-t SECONDS] ADDRESS PORT`: the
//! member health checks keepalived runs for UDP and SCTP pools (upstream:
//! `udp_check.sh`, which needs netcat, and the Python
//! `amphora-health-checker`). Exit status 0 when the member is up.
//!
//! - udp: sends one datagram; the member is down when the kernel reports
//!   an ICMP port unreachable before the timeout (nothing listens), up
//!   otherwise (an answer, or silence: UDP cannot tell more).
//! - sctp: opens an association (INIT, INIT-ACK, COOKIE) and aborts it at
//!   once; up when the association was established.

use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::os::fd::{AsFd, AsRawFd};
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, ValueEnum};
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sys::socket::{self, AddressFamily, SockFlag, SockProtocol, SockType, SockaddrIn, SockaddrIn6, sockopt};

#[derive(Clone, Copy, ValueEnum)]
enum Check {
    Udp,
    Sctp,
}

#[derive(Parser)]
#[command(about = "Health check of a UDP or SCTP member, for keepalived's MISC_CHECK")]
struct Args {
    check: Check,
    /// Seconds to wait for an answer.
    #[arg(short = 't', long = "timeout", default_value_t = 1)]
    timeout: u64,
    address: IpAddr,
    port: u16,
}

fn udp(target: SocketAddr, timeout: Duration) -> Result<(), String> {
    let local: SocketAddr = if target.is_ipv4() { "0.0.0.0:0" } else { "[::]:0" }.parse().expect("literal");
    let socket = UdpSocket::bind(local).map_err(|e| format!("cannot open a UDP socket: {e}"))?;
    socket.connect(target).map_err(|e| format!("cannot reach {target}: {e}"))?;
    socket.set_read_timeout(Some(timeout)).map_err(|e| e.to_string())?;
    socket.send(b"\n").map_err(|e| format!("{target}: {e}"))?;
    let mut buf = [0u8; 512];
    match socket.recv(&mut buf) {
        Ok(_) => Ok(()),
        Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => Ok(()),
        Err(e) => Err(format!("{target}: {e}")),
    }
}

fn sctp(target: SocketAddr, timeout: Duration) -> Result<(), String> {
    let family = if target.is_ipv4() { AddressFamily::Inet } else { AddressFamily::Inet6 };
    let fd = socket::socket(family, SockType::Stream, SockFlag::SOCK_NONBLOCK, SockProtocol::Sctp)
        .map_err(|e| format!("cannot open an SCTP socket: {e}"))?;
    // Closing aborts the association instead of shutting it down.
    socket::setsockopt(&fd, sockopt::Linger, &libc::linger { l_onoff: 1, l_linger: 0 }).map_err(|e| e.to_string())?;
    let connected = match target {
        SocketAddr::V4(v4) => socket::connect(fd.as_raw_fd(), &SockaddrIn::from(v4)),
        SocketAddr::V6(v6) => socket::connect(fd.as_raw_fd(), &SockaddrIn6::from(v6)),
    };
    match connected {
        Ok(()) => return Ok(()),
        Err(nix::errno::Errno::EINPROGRESS) => {}
        Err(e) => return Err(format!("{target}: {e}")),
    }
    let mut fds = [PollFd::new(fd.as_fd(), PollFlags::POLLOUT)];
    let millis = u16::try_from(timeout.as_millis()).unwrap_or(u16::MAX);
    let ready = poll(&mut fds, PollTimeout::from(millis)).map_err(|e| e.to_string())?;
    if ready == 0 {
        return Err(format!("{target}: no answer within {timeout:?}"));
    }
    match socket::getsockopt(&fd, sockopt::SocketError).map_err(|e| e.to_string())? {
        0 => Ok(()),
        errno => Err(format!("{target}: {}", nix::errno::Errno::from_raw(errno))),
    }
}

fn main() -> ExitCode {
    let args = Args::parse();
    let target = SocketAddr::new(args.address, args.port);
    let timeout = Duration::from_secs(args.timeout.max(1));
    let result = match args.check {
        Check::Udp => udp(target, timeout),
        Check::Sctp => sctp(target, timeout),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("{e}");
            ExitCode::FAILURE
        }
    }
}
