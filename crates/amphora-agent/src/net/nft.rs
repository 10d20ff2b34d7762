//! The amphora firewall: nftables rules per plugged interface, rendered from
//! validated rules (never from raw text) and loaded in one `nft -f`
//! transaction, so the previous ruleset stays until the new one is whole;
//! with it, the masquerading UDP and SCTP listeners need.

use std::fmt::Write as _;
use std::process::Stdio;

use ipnet::IpNet;
use tokio::io::AsyncWriteExt;
use tokio::process::Command;

use super::model::{FirewallRule, InterfaceDef, Protocol};
use crate::netns::Netns;

/// The table the agent owns (upstream's name).
pub const TABLE: &str = "amphora_table";
/// The table that masquerades UDP and SCTP leaving the plugged interfaces
/// (upstream's `lvs-masquerade.sh`): IPVS forwards UDP and SCTP listeners
/// by NAT, and members answer the amphora, not the client.
pub const NAT_TABLE: &str = "amphora_nat";
/// More rules than this for one interface is refused.
pub const MAX_RULES: usize = 4096;

/// One entry of `PUT /1.0/interface/{ip}/rules`, as sent.
pub use amphora_proto::net::{RuleProtocol, RuleRequest};

/// Validates a rule set; the error names the offending entry.
pub fn validate(rules: &[RuleRequest]) -> Result<Vec<FirewallRule>, String> {
    if rules.len() > MAX_RULES {
        return Err(format!("{} rules; at most {MAX_RULES} are accepted", rules.len()));
    }
    rules
        .iter()
        .enumerate()
        .map(|(i, rule)| {
            let describe = || format!("rule {i} ({rule:?})");
            let protocol = match &rule.protocol {
                RuleProtocol::Tcp => Protocol::Tcp,
                RuleProtocol::Udp => Protocol::Udp,
                RuleProtocol::Sctp => Protocol::Sctp,
                RuleProtocol::Vrrp => Protocol::Vrrp,
                RuleProtocol::Other(other) => {
                    return Err(format!("{}: unknown protocol {other:?} (TCP, UDP, SCTP or VRRP)", describe()));
                }
            };
            let port = rule
                .port
                .as_u64()
                .filter(|p| (1..=65535).contains(p))
                .ok_or_else(|| format!("{}: port must be an integer from 1 to 65535", describe()))?
                as u16;
            let cidr = match rule.cidr.as_deref() {
                None => None,
                Some(raw) => {
                    let net: IpNet = raw.parse().map_err(|_| format!("{}: {raw:?} is not a CIDR", describe()))?;
                    // Upstream treats 0.0.0.0/0 as "any source", of either family.
                    (raw != "0.0.0.0/0").then(|| net.trunc())
                }
            };
            Ok(FirewallRule { protocol, cidr, port })
        })
        .collect()
}

fn chain_name(interface: &str) -> String {
    format!("iface_{interface}")
}

/// The whole ruleset for every interface that has firewall rules.
pub fn render(defs: &[InterfaceDef]) -> String {
    let mut script = String::new();
    // Create then delete, so the delete cannot fail: one transaction
    // replaces the table atomically.
    let _ = writeln!(script, "table inet {TABLE} {{}}\ndelete table inet {TABLE}\ntable inet {TABLE} {{");
    script.push_str("  chain amphora_chain {\n    type filter hook input priority filter; policy accept;\n");
    let guarded: Vec<(&InterfaceDef, &Vec<FirewallRule>)> =
        defs.iter().filter_map(|d| d.firewall.as_ref().map(|rules| (d, rules))).collect();
    for (def, _) in &guarded {
        let _ = writeln!(script, "    iifname \"{}\" jump {}", def.name, chain_name(&def.name));
    }
    script.push_str("  }\n");
    for (def, rules) in &guarded {
        let _ = writeln!(script, "  chain {} {{", chain_name(&def.name));
        script.push_str(
            "    ct state vmap { established : accept, related : accept, invalid : drop }\n\
             \x20   icmp type destination-unreachable accept\n\
             \x20   icmpv6 type { nd-neighbor-solicit, nd-router-advert, nd-neighbor-advert, packet-too-big, destination-unreachable } accept\n\
             \x20   udp sport 67 udp dport 68 accept\n\
             \x20   udp sport 547 udp dport 546 accept\n",
        );
        for rule in rules.iter() {
            let source = match rule.cidr {
                Some(IpNet::V4(net)) => format!("ip saddr {net} "),
                Some(IpNet::V6(net)) => format!("ip6 saddr {net} "),
                None => String::new(),
            };
            let matcher = match rule.protocol {
                Protocol::Tcp => format!("tcp dport {}", rule.port),
                Protocol::Udp => format!("udp dport {}", rule.port),
                Protocol::Sctp => format!("sctp dport {}", rule.port),
                Protocol::Vrrp => "meta l4proto 112".to_owned(),
            };
            let _ = writeln!(script, "    {source}{matcher} accept");
        }
        script.push_str("    drop\n  }\n");
    }
    script.push_str("}\n");
    let _ = writeln!(script, "table inet {NAT_TABLE} {{}}\ndelete table inet {NAT_TABLE}");
    if !defs.is_empty() {
        let names: Vec<String> = defs.iter().map(|d| format!("\"{}\"", d.name)).collect();
        let _ = writeln!(
            script,
            "table inet {NAT_TABLE} {{\n  chain postrouting {{\n    type nat hook postrouting priority srcnat; policy accept;\n\
             \x20   oifname {{ {} }} meta l4proto {{ udp, sctp }} masquerade\n  }}\n}}",
            names.join(", ")
        );
    }
    script
}

/// Loads a ruleset inside the namespace in one transaction.
pub async fn load(script: &str, netns: &Netns) -> Result<(), String> {
    let mut command = Command::new("nft");
    command.args(["-f", "-"]).stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped());
    netns.enter_on_spawn(&mut command);
    let mut child = command.spawn().map_err(|e| format!("cannot run nft: {e}"))?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin.write_all(script.as_bytes()).await.map_err(|e| format!("cannot feed nft: {e}"))?;
    }
    let output = child.wait_with_output().await.map_err(|e| format!("nft failed: {e}"))?;
    if output.status.success() { Ok(()) } else { Err(String::from_utf8_lossy(&output.stderr).trim().to_owned()) }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::net::model::{Mac, Role};

    fn rules(json: &str) -> Vec<RuleRequest> {
        serde_json::from_str(json).expect("json")
    }

    #[test]
    fn rules_are_validated_strictly() {
        let ok = validate(&rules(
            r#"[{"protocol": "TCP", "cidr": "0.0.0.0/0", "port": 80},
                {"protocol": "UDP", "cidr": "192.0.2.0/24", "port": 53},
                {"protocol": "SCTP", "cidr": "fd00::/64", "port": 9000},
                {"protocol": "VRRP", "cidr": "203.0.113.5/32", "port": 112},
                {"protocol": "TCP", "cidr": null, "port": 443}]"#,
        ))
        .expect("valid");
        assert_eq!(ok[0].cidr, None);
        assert_eq!(ok[1].cidr, Some("192.0.2.0/24".parse().expect("net")));
        for (json, hint) in [
            (r#"[{"protocol": "ICMP", "cidr": null, "port": 1}]"#, "unknown protocol"),
            (r#"[{"protocol": "TCP", "cidr": "1.2.3.4/33", "port": 80}]"#, "not a CIDR"),
            (r#"[{"protocol": "TCP", "cidr": "1.2.3.4/8; flush ruleset", "port": 80}]"#, "not a CIDR"),
            (r#"[{"protocol": "TCP", "cidr": null, "port": 0}]"#, "port"),
            (r#"[{"protocol": "TCP", "cidr": null, "port": 65536}]"#, "port"),
            (r#"[{"protocol": "TCP", "cidr": null, "port": 8.5}]"#, "port"),
        ] {
            let err = validate(&rules(json)).expect_err(json);
            assert!(err.contains(hint) && err.contains("rule 0"), "{err}");
        }
        assert!(
            serde_json::from_str::<Vec<RuleRequest>>(r#"[{"protocol": "TCP", "cidr": null, "port": 1, "x": 1}]"#)
                .is_err()
        );
    }

    #[test]
    fn the_ruleset_drops_by_default_on_guarded_interfaces_only() {
        let def = InterfaceDef {
            name: "eth1".into(),
            mac: Mac([2, 0, 0, 0, 0, 1]),
            role: Role::Vip,
            mtu: None,
            addresses: vec![],
            routes: vec![],
            rules: vec![],
            advertise: vec![],
            firewall: Some(validate(&rules(
                r#"[{"protocol": "TCP", "cidr": "192.0.2.0/24", "port": 80}, {"protocol": "VRRP", "cidr": null, "port": 1}]"#,
            ))
            .expect("valid")),
        };
        let unguarded = InterfaceDef { name: "eth2".into(), firewall: None, ..def.clone() };
        let whole = render(&[def, unguarded]);
        let (script, nat) = whole.split_once("table inet amphora_nat {}").expect("nat table");
        assert!(script.starts_with("table inet amphora_table {}\ndelete table inet amphora_table\n"));
        assert!(script.contains("    iifname \"eth1\" jump iface_eth1\n"));
        assert!(!script.contains("eth2"));
        // UDP and SCTP leaving any plugged interface are masqueraded.
        assert!(nat.contains("oifname { \"eth1\", \"eth2\" } meta l4proto { udp, sctp } masquerade"), "{nat}");
        assert!(render(&[]).ends_with("delete table inet amphora_nat\n"), "no interface, no NAT");
        assert!(script.contains("    ip saddr 192.0.2.0/24 tcp dport 80 accept\n"));
        assert!(script.contains("    meta l4proto 112 accept\n"));
        assert!(script.contains("    drop\n  }\n"));
    }
}
