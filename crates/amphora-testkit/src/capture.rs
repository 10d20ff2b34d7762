//! Watching a link for gratuitous ARP, with a raw packet socket opened
//! inside the namespace the link lives in.

use std::ffi::CString;
use std::fs::File;
use std::net::Ipv4Addr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::time::{Duration, Instant};

use nix::sched::CloneFlags;

const ETH_P_ARP: u16 = 0x0806;

/// ARP frames arriving on one interface.
#[derive(Debug)]
pub struct ArpListener {
    fd: OwnedFd,
}

impl ArpListener {
    /// Listens on `interface` of namespace `netns`.
    pub fn open(netns: &str, interface: &str) -> Self {
        let path = format!("/run/netns/{netns}");
        let name = CString::new(interface).expect("name");
        std::thread::scope(|scope| {
            scope
                .spawn(|| {
                    let file = File::open(&path).expect("namespace");
                    nix::sched::setns(&file, CloneFlags::CLONE_NEWNET).expect("setns");
                    // SAFETY: plain system calls on values we own.
                    unsafe {
                        let index = libc::if_nametoindex(name.as_ptr());
                        assert!(index > 0, "no interface {interface} in {netns}");
                        let fd = libc::socket(
                            libc::AF_PACKET,
                            libc::SOCK_RAW | libc::SOCK_CLOEXEC,
                            i32::from(ETH_P_ARP.to_be()),
                        );
                        assert!(fd >= 0, "packet socket: {}", std::io::Error::last_os_error());
                        let fd = OwnedFd::from_raw_fd(fd);
                        let mut address: libc::sockaddr_ll = std::mem::zeroed();
                        address.sll_family = libc::AF_PACKET as u16;
                        address.sll_protocol = ETH_P_ARP.to_be();
                        address.sll_ifindex = index as i32;
                        let bound = libc::bind(
                            fd.as_raw_fd(),
                            (&address as *const libc::sockaddr_ll).cast(),
                            std::mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t,
                        );
                        assert_eq!(bound, 0, "bind: {}", std::io::Error::last_os_error());
                        let timeout = libc::timeval { tv_sec: 0, tv_usec: 200_000 };
                        libc::setsockopt(
                            fd.as_raw_fd(),
                            libc::SOL_SOCKET,
                            libc::SO_RCVTIMEO,
                            (&timeout as *const libc::timeval).cast(),
                            std::mem::size_of::<libc::timeval>() as libc::socklen_t,
                        );
                        Self { fd }
                    }
                })
                .join()
                .expect("listener thread")
        })
    }

    /// Waits for a gratuitous ARP (sender and target address both `ip`);
    /// returns the sender MAC.
    pub fn wait_for_garp(&self, ip: Ipv4Addr, timeout: Duration) -> Option<[u8; 6]> {
        let deadline = Instant::now() + timeout;
        let mut frame = [0u8; 128];
        while Instant::now() < deadline {
            // SAFETY: the buffer is valid for its length.
            let n = unsafe { libc::recv(self.fd.as_raw_fd(), frame.as_mut_ptr().cast(), frame.len(), 0) };
            if n < 42 {
                continue;
            }
            let is_arp = frame[12..14] == ETH_P_ARP.to_be_bytes();
            if is_arp && frame[28..32] == ip.octets() && frame[38..42] == ip.octets() {
                let mut mac = [0u8; 6];
                mac.copy_from_slice(&frame[22..28]);
                return Some(mac);
            }
        }
        None
    }
}
