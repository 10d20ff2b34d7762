//! Address advertisements, so neighbours learn at once where a VIP lives:
//! a gratuitous ARP for IPv4, an unsolicited neighbour advertisement for
//! IPv6, sent from inside the amphora namespace, as upstream does after
//! plugging and after each haproxy start or reload in SINGLE topology.

use std::io;
use std::mem;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

use super::model::Mac;

const ETH_P_ARP: u16 = 0x0806;
const BROADCAST: [u8; 6] = [0xff; 6];

/// The Ethernet frame of a gratuitous ARP request for `ip` from `mac`.
pub fn garp_frame(mac: Mac, ip: Ipv4Addr) -> [u8; 42] {
    let mut frame = [0u8; 42];
    frame[0..6].copy_from_slice(&BROADCAST);
    frame[6..12].copy_from_slice(&mac.0);
    frame[12..14].copy_from_slice(&ETH_P_ARP.to_be_bytes());
    frame[14..16].copy_from_slice(&1u16.to_be_bytes()); // Ethernet
    frame[16..18].copy_from_slice(&0x0800u16.to_be_bytes()); // IPv4
    frame[18] = 6;
    frame[19] = 4;
    frame[20..22].copy_from_slice(&1u16.to_be_bytes()); // request
    frame[22..28].copy_from_slice(&mac.0);
    frame[28..32].copy_from_slice(&ip.octets());
    frame[32..38].copy_from_slice(&BROADCAST);
    frame[38..42].copy_from_slice(&ip.octets());
    frame
}

/// The ICMPv6 unsolicited neighbour advertisement for `ip` (checksum left
/// to the kernel, which computes it for ICMPv6 raw sockets).
pub fn na_message(mac: Mac, ip: Ipv6Addr) -> [u8; 32] {
    let mut message = [0u8; 32];
    message[0] = 136; // neighbour advertisement
    message[4..8].copy_from_slice(&0x2000_0000u32.to_be_bytes()); // override
    message[8..24].copy_from_slice(&ip.octets());
    message[24] = 2; // target link-layer address option
    message[25] = 1; // length in units of 8 octets
    message[26..32].copy_from_slice(&mac.0);
    message
}

fn check(result: libc::c_int) -> io::Result<libc::c_int> {
    if result < 0 { Err(io::Error::last_os_error()) } else { Ok(result) }
}

fn socket(domain: libc::c_int, kind: libc::c_int, protocol: libc::c_int) -> io::Result<OwnedFd> {
    // SAFETY: socket() takes plain integers and returns a new descriptor
    // that we own exclusively.
    let fd = check(unsafe { libc::socket(domain, kind | libc::SOCK_CLOEXEC, protocol) })?;
    // SAFETY: `fd` was just returned by socket() and is owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

fn send_garp(ifindex: u32, mac: Mac, ip: Ipv4Addr) -> io::Result<()> {
    let fd = socket(libc::AF_PACKET, libc::SOCK_RAW, i32::from(ETH_P_ARP.to_be()))?;
    // SAFETY: sockaddr_ll is plain old data; all-zero is a valid value.
    let mut address: libc::sockaddr_ll = unsafe { mem::zeroed() };
    address.sll_family = libc::AF_PACKET as u16;
    address.sll_protocol = ETH_P_ARP.to_be();
    address.sll_ifindex = ifindex as i32;
    address.sll_halen = 6;
    address.sll_addr[..6].copy_from_slice(&BROADCAST);
    let frame = garp_frame(mac, ip);
    // SAFETY: the buffer and the address are valid for the lengths given.
    check(unsafe {
        libc::sendto(
            fd.as_raw_fd(),
            frame.as_ptr().cast(),
            frame.len(),
            0,
            (&address as *const libc::sockaddr_ll).cast(),
            mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t,
        ) as libc::c_int
    })?;
    Ok(())
}

fn send_na(ifindex: u32, mac: Mac, ip: Ipv6Addr) -> io::Result<()> {
    let fd = socket(libc::AF_INET6, libc::SOCK_RAW, libc::IPPROTO_ICMPV6)?;
    let hops: libc::c_int = 255; // RFC 4861: neighbour discovery uses 255
    let interface = ifindex as libc::c_uint;
    // SAFETY: the option values are valid for the lengths given.
    unsafe {
        check(libc::setsockopt(
            fd.as_raw_fd(),
            libc::IPPROTO_IPV6,
            libc::IPV6_MULTICAST_HOPS,
            (&hops as *const libc::c_int).cast(),
            mem::size_of::<libc::c_int>() as libc::socklen_t,
        ))?;
        check(libc::setsockopt(
            fd.as_raw_fd(),
            libc::IPPROTO_IPV6,
            libc::IPV6_MULTICAST_IF,
            (&interface as *const libc::c_uint).cast(),
            mem::size_of::<libc::c_uint>() as libc::socklen_t,
        ))?;
    }
    // SAFETY: sockaddr_in6 is plain old data; all-zero is a valid value.
    let mut source: libc::sockaddr_in6 = unsafe { mem::zeroed() };
    source.sin6_family = libc::AF_INET6 as u16;
    source.sin6_addr.s6_addr = ip.octets();
    // SAFETY: the address is valid for the length given.
    check(unsafe {
        libc::bind(
            fd.as_raw_fd(),
            (&source as *const libc::sockaddr_in6).cast(),
            mem::size_of::<libc::sockaddr_in6>() as libc::socklen_t,
        )
    })?;
    let mut destination: libc::sockaddr_in6 = source;
    destination.sin6_addr.s6_addr = Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 1).octets();
    destination.sin6_scope_id = ifindex;
    let message = na_message(mac, ip);
    // SAFETY: the buffer and the address are valid for the lengths given.
    check(unsafe {
        libc::sendto(
            fd.as_raw_fd(),
            message.as_ptr().cast(),
            message.len(),
            0,
            (&destination as *const libc::sockaddr_in6).cast(),
            mem::size_of::<libc::sockaddr_in6>() as libc::socklen_t,
        ) as libc::c_int
    })?;
    Ok(())
}

/// Advertises `ip` on the interface `ifindex` (whose address is `mac`).
/// Must run on a thread inside the interface's namespace.
pub fn advertise(ifindex: u32, mac: Mac, ip: IpAddr) -> io::Result<()> {
    match ip {
        IpAddr::V4(v4) => send_garp(ifindex, mac, v4),
        IpAddr::V6(v6) => send_na(ifindex, mac, v6),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_gratuitous_arp_as_upstream_sends_it() {
        let frame = garp_frame(Mac([2, 0, 0, 0, 0, 7]), Ipv4Addr::new(203, 0, 113, 2));
        let expected: [u8; 42] = [
            0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 2, 0, 0, 0, 0, 7, 0x08, 0x06, // Ethernet
            0, 1, 0x08, 0x00, 6, 4, 0, 1, // ARP request, Ethernet/IPv4
            2, 0, 0, 0, 0, 7, 203, 0, 113, 2, // sender
            0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 203, 0, 113, 2, // target
        ];
        assert_eq!(frame, expected);
    }

    #[test]
    fn a_neighbour_advertisement_carries_the_target_and_its_mac() {
        let ip: Ipv6Addr = "fd00::2".parse().expect("ip");
        let message = na_message(Mac([2, 0, 0, 0, 0, 7]), ip);
        assert_eq!(message[0], 136);
        assert_eq!(&message[4..8], &[0x20, 0, 0, 0], "override, not solicited, not router");
        assert_eq!(&message[8..24], &ip.octets());
        assert_eq!(&message[24..32], &[2, 1, 2, 0, 0, 0, 0, 7]);
    }
}
