//! The kernel's IPVS table as `ipvsadm` shows it, read inside the amphora
//! namespace: virtual services with their counters, and the real servers
//! keepalived currently keeps in each (a real server failing its health
//! check is taken out).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::process::Stdio;
use std::sync::Arc;

use tokio::process::Command;

use super::config::Protocol;
use crate::netns::Netns;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RealServer {
    pub address: SocketAddr,
    pub weight: u32,
    pub active: u64,
    pub inactive: u64,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Counters {
    pub conns: u64,
    pub in_bytes: u64,
    pub out_bytes: u64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VirtualService {
    pub protocol: Protocol,
    pub address: SocketAddr,
    pub counters: Counters,
    pub real_servers: Vec<RealServer>,
}

fn protocol(word: &str) -> Option<Protocol> {
    match word {
        "UDP" => Some(Protocol::Udp),
        "SCTP" => Some(Protocol::Sctp),
        _ => None,
    }
}

/// `ipvsadm -Ln --exact`: services and their real servers.
pub fn parse_list(text: &str) -> Vec<VirtualService> {
    let mut services: Vec<VirtualService> = Vec::new();
    let mut current_is_ours = false;
    for line in text.lines() {
        let words: Vec<&str> = line.split_whitespace().collect();
        match words.as_slice() {
            ["->", address, _forward, weight, active, inactive, ..] if current_is_ours => {
                if let (Ok(address), Ok(weight), Ok(active), Ok(inactive)) =
                    (address.parse(), weight.parse(), active.parse(), inactive.parse())
                    && let Some(service) = services.last_mut()
                {
                    service.real_servers.push(RealServer { address, weight, active, inactive });
                }
            }
            [proto, address, ..] if !proto.starts_with("->") => {
                current_is_ours = false;
                if let (Some(protocol), Ok(address)) = (protocol(proto), address.parse()) {
                    services.push(VirtualService {
                        protocol,
                        address,
                        counters: Counters::default(),
                        real_servers: Vec::new(),
                    });
                    current_is_ours = true;
                }
            }
            _ => {}
        }
    }
    services
}

/// `ipvsadm -Ln --stats --exact`: each service's counters.
pub fn parse_stats(text: &str) -> HashMap<(Protocol, SocketAddr), Counters> {
    let mut counters = HashMap::new();
    for line in text.lines() {
        let words: Vec<&str> = line.split_whitespace().collect();
        if let [proto, address, conns, _in_packets, _out_packets, in_bytes, out_bytes] = words.as_slice()
            && let (Some(protocol), Ok(address)) = (protocol(proto), address.parse())
            && let (Ok(conns), Ok(in_bytes), Ok(out_bytes)) = (conns.parse(), in_bytes.parse(), out_bytes.parse())
        {
            counters.insert((protocol, address), Counters { conns, in_bytes, out_bytes });
        }
    }
    counters
}

async fn ipvsadm(netns: Option<&Arc<Netns>>, args: &[&str]) -> Result<String, String> {
    let mut command = Command::new("ipvsadm");
    command.args(args).stdin(Stdio::null());
    if let Some(netns) = netns {
        netns.enter_on_spawn(&mut command);
    }
    let output = command.output().await.map_err(|e| format!("cannot run ipvsadm: {e}"))?;
    if output.status.success() {
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    } else {
        Err(format!("ipvsadm {}: {}", args.join(" "), String::from_utf8_lossy(&output.stderr).trim()))
    }
}

/// The whole table with counters.
pub async fn read(netns: Option<&Arc<Netns>>) -> Result<Vec<VirtualService>, String> {
    let (list, stats) =
        tokio::try_join!(ipvsadm(netns, &["-Ln", "--exact"]), ipvsadm(netns, &["-Ln", "--stats", "--exact"]))?;
    let stats = parse_stats(&stats);
    let mut services = parse_list(&list);
    for service in &mut services {
        if let Some(counters) = stats.get(&(service.protocol, service.address)) {
            service.counters = counters.clone();
        }
    }
    Ok(services)
}

#[cfg(test)]
mod tests {
    use super::*;

    // Printed by ipvsadm 1.31 on Debian's 6.1 kernel.
    const LIST: &str = "IP Virtual Server version 1.2.1 (size=4096)
Prot LocalAddress:Port Scheduler Flags
  -> RemoteAddress:Port           Forward Weight ActiveConn InActConn
UDP  10.0.0.10:5353 rr
  -> 10.1.0.5:5353                Masq    3      0          2         
  -> 10.1.0.6:5353                Masq    0      1          0         
SCTP 10.0.0.10:9000 sh
UDP  [fd00::10]:53 wrr persistent 33
  -> [fd00:1::5]:53               Masq    1      0          0         
";
    const STATS: &str = "IP Virtual Server version 1.2.1 (size=4096)
Prot LocalAddress:Port               Conns   InPkts  OutPkts  InBytes OutBytes
  -> RemoteAddress:Port
UDP  10.0.0.10:5353                      7        9        8      1288     1312
  -> 10.1.0.5:5353                       4        5        4      644      656
  -> 10.1.0.6:5353                       3        4        4      644      656
SCTP 10.0.0.10:9000                      0        0        0        0        0
UDP  [fd00::10]:53                   12345678901 1 1 98765432109 5
";

    #[test]
    fn services_with_real_servers() {
        let services = parse_list(LIST);
        assert_eq!(services.len(), 3);
        assert_eq!((services[0].protocol, services[0].address), (Protocol::Udp, "10.0.0.10:5353".parse().expect("a")));
        assert_eq!(
            services[0].real_servers,
            vec![
                RealServer { address: "10.1.0.5:5353".parse().expect("a"), weight: 3, active: 0, inactive: 2 },
                RealServer { address: "10.1.0.6:5353".parse().expect("a"), weight: 0, active: 1, inactive: 0 },
            ]
        );
        assert_eq!(services[1].protocol, Protocol::Sctp);
        assert!(services[1].real_servers.is_empty());
        assert_eq!(services[2].address, "[fd00::10]:53".parse().expect("a"));
        assert_eq!(services[2].real_servers[0].address, "[fd00:1::5]:53".parse().expect("a"));
    }

    #[test]
    fn counters_are_exact() {
        let stats = parse_stats(STATS);
        assert_eq!(stats.len(), 3);
        assert_eq!(
            stats[&(Protocol::Udp, "10.0.0.10:5353".parse().expect("a"))],
            Counters { conns: 7, in_bytes: 1288, out_bytes: 1312 }
        );
        assert_eq!(
            stats[&(Protocol::Udp, "[fd00::10]:53".parse().expect("a"))],
            Counters { conns: 12345678901, in_bytes: 98765432109, out_bytes: 5 }
        );
    }
}
