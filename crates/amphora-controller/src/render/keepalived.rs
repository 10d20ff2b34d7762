//! keepalived's VRRP configuration of an ACTIVE_STANDBY amphora, as
//! upstream's `octavia/amphorae/drivers/keepalived/jinja/` renders it: one
//! unicast VRRP instance per load balancer, the VIP with its routes and rules
//! in table 1, and the agent's check script tracked. One intentional
//! difference: host routes say `via`, not upstream's `gateway` (which
//! keepalived rejects).

use std::fmt::Write as _;
use std::net::IpAddr;

use ipnet::IpNet;

use super::RenderError;
use super::model::{AmphoraView, LoadBalancer};
use crate::config::Config;

/// `[keepalived_vrrp]` options, and where the amphora keeps its files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VrrpOptions {
    /// `[haproxy_amphora] base_path`: the check script is
    /// `{base_path}/vrrp/check_script.sh`.
    pub base_path: String,
    pub check_interval: u64,
    pub fail_count: u64,
    pub success_count: u64,
    pub garp_refresh_interval: u64,
    pub garp_refresh_count: u64,
}

impl VrrpOptions {
    pub fn from_config(config: &Config) -> VrrpOptions {
        let k = &config.keepalived_vrrp;
        VrrpOptions {
            base_path: config.haproxy_amphora.base_path.clone(),
            check_interval: k.vrrp_check_interval,
            fail_count: k.vrrp_fail_count,
            success_count: k.vrrp_success_count,
            garp_refresh_interval: k.vrrp_garp_refresh_interval,
            garp_refresh_count: k.vrrp_garp_refresh_count,
        }
    }

    /// The agent's script keepalived tracks (upstream's
    /// `keepalived_check_script_path`).
    pub fn check_script_path(&self) -> String {
        format!("{}/vrrp/check_script.sh", self.base_path)
    }
}

fn ip(text: &str, what: &str) -> Result<IpAddr, RenderError> {
    text.parse().map_err(|_| RenderError(format!("{what} {text:?} is not an IP address")))
}

/// Renders keepalived's configuration for `this`, one of the load
/// balancer's `amphorae`, whose VRRP port is `vrrp_interface` inside the
/// amphora. Needs the load balancer's VRRP group and VIP subnet.
pub fn vrrp(
    lb: &LoadBalancer,
    amphorae: &[AmphoraView],
    this: &AmphoraView,
    vrrp_interface: &str,
    opts: &VrrpOptions,
) -> Result<String, RenderError> {
    let group =
        lb.vrrp_group.as_ref().ok_or_else(|| RenderError(format!("load balancer {} has no VRRP group", lb.id)))?;
    let subnet = lb
        .vip_subnet
        .as_ref()
        .ok_or_else(|| RenderError(format!("load balancer {}: the VIP subnet is unknown", lb.id)))?;
    let missing = |what: &str| RenderError(format!("amphora {} has no {what}", this.id));
    let this_vrrp_ip = this.vrrp_ip.as_deref().ok_or_else(|| missing("VRRP address"))?;
    let vrrp_id = this.vrrp_id.ok_or_else(|| missing("VRRP id"))?;
    let priority = this.vrrp_priority.ok_or_else(|| missing("VRRP priority"))?;
    if !(1..=255).contains(&vrrp_id) {
        return Err(RenderError(format!("amphora {}: VRRP id {vrrp_id} is not in 1..255", this.id)));
    }
    if !(1..=255).contains(&priority) {
        return Err(RenderError(format!("amphora {}: VRRP priority {priority} is not in 1..255", this.id)));
    }
    if vrrp_interface.is_empty() || vrrp_interface.chars().any(|c| c.is_whitespace() || c == '{' || c == '}') {
        return Err(RenderError(format!("{vrrp_interface:?} is not an interface name")));
    }
    let vrrp_v6 = ip(this_vrrp_ip, "VRRP address")?.is_ipv6();
    let vip = ip(&lb.vip.address, "VIP")?;
    let network: IpNet =
        subnet.cidr.parse().map_err(|_| RenderError(format!("VIP subnet {:?} is not a CIDR", subnet.cidr)))?;
    if network.trunc() != network {
        return Err(RenderError(format!("VIP subnet {:?} has host bits set", subnet.cidr)));
    }
    if let Some(gateway) = &subnet.gateway_ip {
        ip(gateway, "gateway")?;
    }
    for route in &subnet.host_routes {
        route
            .destination
            .parse::<IpNet>()
            .map_err(|_| RenderError(format!("host route destination {:?} is not a CIDR", route.destination)))?;
        ip(&route.nexthop, "host route next hop")?;
    }
    let vip_excluded = vip.is_ipv6() != vrrp_v6;
    let mut peers = Vec::new();
    for amp in amphorae.iter().filter(|a| a.status == "ALLOCATED") {
        let peer_ip =
            amp.vrrp_ip.as_deref().ok_or_else(|| RenderError(format!("amphora {} has no VRRP address", amp.id)))?;
        if peer_ip != this_vrrp_ip {
            ip(peer_ip, "VRRP address")?;
            peers.push(peer_ip);
        }
    }

    let intf = vrrp_interface;
    let mut out = String::new();
    let _ = write!(
        out,
        "vrrp_script check_script {{\n    script {}\n    interval {}\n    fall {}\n    rise {}\n}}\n\n",
        opts.check_script_path(),
        opts.check_interval,
        opts.fail_count,
        opts.success_count
    );
    let _ = writeln!(out, "vrrp_instance {} {{", group.name);
    let _ = writeln!(out, "    interface {intf}");
    let _ = writeln!(out, "    virtual_router_id {vrrp_id}");
    let _ = writeln!(out, "    priority {priority}");
    out.push_str("    nopreempt\n    accept\n");
    let _ = writeln!(out, "    garp_master_refresh {}", opts.garp_refresh_interval);
    let _ = writeln!(out, "    garp_master_refresh_repeat {}", opts.garp_refresh_count);
    let _ = writeln!(out, "    advert_int {}", group.advert_int);
    let _ = writeln!(
        out,
        "    authentication {{\n        auth_type {}\n        auth_pass {}\n    }}\n",
        group.auth_type, group.auth_pass
    );
    let _ = writeln!(out, "    unicast_src_ip {this_vrrp_ip}");
    out.push_str("    unicast_peer {\n");
    for peer in peers {
        let _ = writeln!(out, "        {peer}");
    }
    out.push_str("    }\n\n    virtual_ipaddress {\n");
    if !vip_excluded {
        let _ = writeln!(out, "        {}", lb.vip.address);
    }
    out.push_str("    }\n\n    virtual_ipaddress_excluded {\n");
    if vip_excluded {
        let _ = writeln!(out, "        {}", lb.vip.address);
    }
    out.push_str("    }\n\n    virtual_routes {\n");
    let _ = writeln!(out, "        {network} dev {intf} src {} scope link table 1", lb.vip.address);
    if let Some(gateway) = subnet.gateway_ip.as_deref().filter(|g| !g.is_empty()) {
        let _ = writeln!(out, "        default via {gateway} dev {intf} onlink table 1");
    }
    // Upstream writes `gateway NEXTHOP`, which keepalived does not know
    // ("unknown route keyword gateway": the route is dropped); `via` is
    // keepalived's word for it.
    for route in &subnet.host_routes {
        let _ = writeln!(out, "        {} dev {intf} via {} onlink table 1", route.destination, route.nexthop);
    }
    out.push_str("    }\n\n    virtual_rules {\n");
    let _ =
        writeln!(out, "        from {}/{} table 1 priority 100", lb.vip.address, if vip.is_ipv6() { 128 } else { 32 });
    out.push_str("    }\n\n    track_script {\n        check_script\n    }\n}\n");
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Topology;
    use crate::render::model::{HostRoute, Subnet, VrrpGroup};

    fn lb(vip: &str, cidr: &str) -> (LoadBalancer, Vec<AmphoraView>) {
        let mut lb = LoadBalancer::new("lb-1", "proj", Topology::ActiveStandby, vip);
        lb.vrrp_group = Some(VrrpGroup {
            name: "lb1".into(),
            auth_type: "PASS".into(),
            auth_pass: "abc1234".into(),
            advert_int: 1,
        });
        lb.vip_subnet = Some(Subnet {
            cidr: cidr.into(),
            gateway_ip: Some("10.0.0.1".into()),
            host_routes: vec![HostRoute { destination: "172.16.0.0/16".into(), nexthop: "10.0.0.254".into() }],
        });
        let mut amps = Vec::new();
        for (id, ip, prio) in [("amp-a", "10.0.0.4", 100), ("amp-b", "10.0.0.5", 90)] {
            let mut a = AmphoraView::new(id, Some(if prio == 100 { "MASTER" } else { "BACKUP" }));
            a.vrrp_ip = Some(ip.into());
            a.vrrp_id = Some(1);
            a.vrrp_priority = Some(prio);
            amps.push(a);
        }
        (lb, amps)
    }

    fn opts() -> VrrpOptions {
        VrrpOptions::from_config(&Config::for_tests("sqlite:///tmp/unused.db"))
    }

    #[test]
    fn renders_upstreams_vrrp_instance() {
        let (lb, amps) = lb("10.0.0.10", "10.0.0.0/24");
        let text = vrrp(&lb, &amps, &amps[0], "eth1", &opts()).expect("renders");
        let expected = "vrrp_script check_script {
    script /var/lib/octavia/vrrp/check_script.sh
    interval 5
    fall 2
    rise 2
}

vrrp_instance lb1 {
    interface eth1
    virtual_router_id 1
    priority 100
    nopreempt
    accept
    garp_master_refresh 5
    garp_master_refresh_repeat 2
    advert_int 1
    authentication {
        auth_type PASS
        auth_pass abc1234
    }

    unicast_src_ip 10.0.0.4
    unicast_peer {
        10.0.0.5
    }

    virtual_ipaddress {
        10.0.0.10
    }

    virtual_ipaddress_excluded {
    }

    virtual_routes {
        10.0.0.0/24 dev eth1 src 10.0.0.10 scope link table 1
        default via 10.0.0.1 dev eth1 onlink table 1
        172.16.0.0/16 dev eth1 via 10.0.0.254 onlink table 1
    }

    virtual_rules {
        from 10.0.0.10/32 table 1 priority 100
    }

    track_script {
        check_script
    }
}
";
        assert_eq!(text, expected);
        let backup = vrrp(&lb, &amps, &amps[1], "eth1", &opts()).expect("renders");
        assert!(backup.contains("priority 90\n"), "{backup}");
        assert!(backup.contains("unicast_src_ip 10.0.0.5\n    unicast_peer {\n        10.0.0.4\n    }"), "{backup}");
    }

    #[test]
    fn a_vip_of_the_other_family_is_excluded() {
        let (mut lb, amps) = lb("fd00::10", "fd00:0::/64");
        lb.vip_subnet.as_mut().expect("subnet").gateway_ip = None;
        lb.vip_subnet.as_mut().expect("subnet").host_routes.clear();
        let text = vrrp(&lb, &amps, &amps[0], "eth1", &opts()).expect("renders");
        assert!(text.contains("    virtual_ipaddress {\n    }"), "{text}");
        assert!(text.contains("    virtual_ipaddress_excluded {\n        fd00::10\n    }"), "{text}");
        assert!(text.contains("        fd00::/64 dev eth1 src fd00::10 scope link table 1\n    }"), "{text}");
        assert!(text.contains("from fd00::10/128 table 1 priority 100"), "{text}");
    }

    #[test]
    fn peers_are_the_other_allocated_amphorae() {
        let (lb, mut amps) = lb("10.0.0.10", "10.0.0.0/24");
        amps[1].status = "ERROR".into();
        let text = vrrp(&lb, &amps, &amps[0], "eth1", &opts()).expect("renders");
        assert!(text.contains("unicast_peer {\n    }"), "{text}");
    }

    #[test]
    fn missing_facts_are_errors() {
        let (mut lb, mut amps) = lb("10.0.0.10", "10.0.0.0/24");
        let err = vrrp(&lb, &amps, &amps[0], "eth 1", &opts()).expect_err("bad interface");
        assert!(err.to_string().contains("not an interface name"), "{err}");
        amps[0].vrrp_priority = None;
        let err = vrrp(&lb, &amps, &amps[0], "eth1", &opts()).expect_err("no priority");
        assert!(err.to_string().contains("amp-a has no VRRP priority"), "{err}");
        lb.vip_subnet.as_mut().expect("subnet").cidr = "10.0.0.7/24".into();
        let err = vrrp(&lb, &amps, &amps[1], "eth1", &opts()).expect_err("host bits");
        assert!(err.to_string().contains("host bits"), "{err}");
        lb.vip_subnet = None;
        let err = vrrp(&lb, &amps, &amps[1], "eth1", &opts()).expect_err("no subnet");
        assert!(err.to_string().contains("VIP subnet is unknown"), "{err}");
        lb.vrrp_group = None;
        let err = vrrp(&lb, &amps, &amps[1], "eth1", &opts()).expect_err("no group");
        assert!(err.to_string().contains("no VRRP group"), "{err}");
    }
}
