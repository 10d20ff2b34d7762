//! The fabric: a network namespace holding one Linux bridge per configured
//! network (`br-mgmt`, `br-vip`, `br-member`), which every port's veth
//! joins. The controller reaches the management network through a veth of
//! its own in the host namespace (`{prefix}-hm0`, upstream's `o-hm0`)
//! holding the management gateway address: it connects to the agents and
//! receives their heartbeats over it. With `host_vip_access`, a second veth
//! (`{prefix}-vip0`) puts the VIP gateways on the host.
//!
//! Everything is done with iproute2 (`ip`), whose commands are idempotent
//! here by checking before creating, so `ensure` can run at every start.

use std::collections::HashSet;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use tokio::process::Command;

use super::{LocalNetworkSettings, NetworkRole};

pub const NETNS_DIR: &str = "/run/netns";

/// Runs `ip ARGS`; the error carries ip's own message.
pub async fn ip(args: &[&str]) -> anyhow::Result<String> {
    let out = Command::new("ip")
        .args(args)
        .kill_on_drop(true)
        .output()
        .await
        .context("cannot run ip (iproute2 is required by the local drivers)")?;
    if !out.status.success() {
        bail!("ip {}: {}", args.join(" "), String::from_utf8_lossy(&out.stderr).trim());
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Runs `ip -n NS ARGS`.
pub async fn ip_in(ns: &str, args: &[&str]) -> anyhow::Result<String> {
    let mut all = vec!["-n", ns];
    all.extend_from_slice(args);
    ip(&all).await
}

pub fn netns_exists(name: &str) -> bool {
    Path::new(NETNS_DIR).join(name).exists()
}

/// Creates a namespace with loopback up, unless it exists.
pub async fn ensure_netns(name: &str) -> anyhow::Result<()> {
    if !netns_exists(name)
        && let Err(e) = ip(&["netns", "add", name]).await
        && !netns_exists(name)
    {
        return Err(e);
    }
    ip_in(name, &["link", "set", "lo", "up"]).await?;
    Ok(())
}

/// Whether interface `name` exists (in `ns`, or the host's namespace).
pub async fn link_exists(ns: Option<&str>, name: &str) -> bool {
    match ns {
        Some(ns) => ip_in(ns, &["link", "show", "dev", name]).await.is_ok(),
        None => ip(&["link", "show", "dev", name]).await.is_ok(),
    }
}

/// Deletes an interface; a missing one is fine.
pub async fn delete_link(ns: Option<&str>, name: &str) -> anyhow::Result<()> {
    if !link_exists(ns, name).await {
        return Ok(());
    }
    let result = match ns {
        Some(ns) => ip_in(ns, &["link", "delete", "dev", name]).await,
        None => ip(&["link", "delete", "dev", name]).await,
    };
    match result {
        Err(e) if link_exists(ns, name).await => Err(e),
        _ => Ok(()),
    }
}

/// The names of every interface of a namespace.
pub async fn link_names(ns: &str) -> anyhow::Result<HashSet<String>> {
    let out = ip_in(ns, &["-o", "link", "show"]).await?;
    Ok(out
        .lines()
        .filter_map(|line| line.split(": ").nth(1))
        .map(|name| name.split('@').next().unwrap_or(name).to_owned())
        .collect())
}

/// Whether a process is gone (or a zombie: it runs nothing any more).
pub fn process_gone(pid: i32) -> bool {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    stat.rsplit_once(')').is_none_or(|(_, rest)| matches!(rest.split_whitespace().next(), Some("Z" | "X")))
}

/// Kills every process of a namespace (agent, haproxy, keepalived...) and
/// waits until they are gone, then deletes the namespace. Missing is fine.
pub async fn destroy_netns(name: &str) -> anyhow::Result<()> {
    if !netns_exists(name) {
        return Ok(());
    }
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        // `ip netns pids` lists the processes whose network namespace is it.
        let pids: Vec<i32> = ip(&["netns", "pids", name])
            .await
            .unwrap_or_default()
            .split_whitespace()
            .filter_map(|p| p.parse().ok())
            .filter(|p| !process_gone(*p))
            .collect();
        if pids.is_empty() {
            break;
        }
        if Instant::now() > deadline {
            bail!("processes {pids:?} of namespace {name} do not die");
        }
        for pid in pids {
            let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    if let Err(e) = ip(&["netns", "delete", name]).await
        && netns_exists(name)
    {
        return Err(e);
    }
    Ok(())
}

/// The fabric of one controller (see the module documentation).
#[derive(Debug)]
pub struct Fabric {
    pub settings: LocalNetworkSettings,
    ready: tokio::sync::OnceCell<()>,
}

impl Fabric {
    pub fn new(settings: LocalNetworkSettings) -> Fabric {
        Fabric { settings, ready: tokio::sync::OnceCell::new() }
    }

    pub fn namespace(&self) -> &str {
        &self.settings.fabric_namespace
    }

    /// The bridge of a network id, when it is configured.
    pub fn bridge_of(&self, network_id: &str) -> Option<&'static str> {
        self.settings.network(network_id).map(|n| n.role.bridge())
    }

    /// Brings the fabric up once per instance (and checks it is complete).
    pub async fn ensure(&self) -> anyhow::Result<()> {
        self.ready.get_or_try_init(|| async { self.build().await.context("setting up the local fabric") }).await?;
        Ok(())
    }

    async fn build(&self) -> anyhow::Result<()> {
        let s = &self.settings;
        let ns = s.fabric_namespace.as_str();
        let mtu = s.mtu.to_string();
        self.check_host_routes().await?;
        ensure_netns(ns).await?;
        for net in &s.networks {
            let bridge = net.role.bridge();
            if !link_exists(Some(ns), bridge).await {
                ip_in(ns, &["link", "add", "name", bridge, "mtu", &mtu, "type", "bridge"]).await?;
            }
            ip_in(ns, &["link", "set", "dev", bridge, "up"]).await?;
        }
        let management = s.management();
        let gateway = &management.subnets[0];
        let address = format!("{}/{}", s.controller_ip(), gateway.cidr.prefix_len());
        self.host_veth(&s.host_management_interface(), "hm0", NetworkRole::Management, &[address]).await?;
        if s.host_vip_access {
            let vip = s.networks.iter().find(|n| n.role == NetworkRole::Vip).expect("configured");
            let addresses: Vec<String> = vip
                .subnets
                .iter()
                .filter_map(|sub| sub.gateway.map(|g| format!("{g}/{}", sub.cidr.prefix_len())))
                .collect();
            self.host_veth(&s.host_vip_interface(), "vip0", NetworkRole::Vip, &addresses).await?;
        }
        tracing::info!(namespace = ns, controller_ip = %s.controller_ip(), "local fabric ready");
        Ok(())
    }

    /// Refuses subnets that would put a host leg (the management gateway,
    /// and the VIP gateways with `host_vip_access`) into a range the host
    /// already routes elsewhere: the controller would talk to the wrong
    /// machines, or cut the host off from its own network.
    async fn check_host_routes(&self) -> anyhow::Result<()> {
        let s = &self.settings;
        let ours = [s.host_management_interface(), s.host_vip_interface()];
        let mut subnets: Vec<ipnet::IpNet> = s.management().subnets.iter().map(|sub| sub.cidr).collect();
        if s.host_vip_access {
            let vip = s.networks.iter().filter(|n| n.role == NetworkRole::Vip);
            subnets.extend(vip.flat_map(|n| n.subnets.iter().map(|sub| sub.cidr)));
        }
        for family in ["-4", "-6"] {
            let routes: Vec<HostRoute> =
                serde_json::from_str(&ip(&["-j", family, "route", "show", "table", "main"]).await?)
                    .context("reading the host's routes (ip -j route)")?;
            for route in routes.iter().filter(|r| !ours.contains(&r.dev)) {
                let Some(dst) = route.destination() else { continue };
                if let Some(subnet) =
                    subnets.iter().find(|sub| sub.contains(&dst.network()) || dst.contains(&sub.network()))
                {
                    bail!(
                        "the local network {subnet} overlaps the host's route to {} on {}: \
                         choose another range in [local_network] (the management and VIP subnets)",
                        route.dst,
                        route.dev
                    );
                }
            }
        }
        Ok(())
    }

    /// A veth from the host (`host_end`, holding `addresses`) to a bridge.
    async fn host_veth(
        &self,
        host_end: &str,
        fabric_end: &str,
        role: NetworkRole,
        addresses: &[String],
    ) -> anyhow::Result<()> {
        let ns = self.namespace();
        let mtu = self.settings.mtu.to_string();
        if !link_exists(None, host_end).await || !link_exists(Some(ns), fabric_end).await {
            delete_link(None, host_end).await?;
            ip(&[
                "link", "add", "name", host_end, "mtu", &mtu, "type", "veth", "peer", "name", fabric_end, "netns", ns,
            ])
            .await?;
        }
        ip_in(ns, &["link", "set", "dev", fabric_end, "master", role.bridge(), "up"]).await?;
        for address in addresses {
            // No duplicate address detection: the address is ours by
            // configuration, and DAD would delay its use.
            let mut args = vec!["addr", "replace", address.as_str(), "dev", host_end];
            if address.contains(':') {
                args.push("nodad");
            }
            ip(&args).await?;
        }
        ip(&["link", "set", "dev", host_end, "up"]).await?;
        Ok(())
    }
}

/// One route of `ip -j route show`.
#[derive(Debug, serde::Deserialize)]
struct HostRoute {
    dst: String,
    #[serde(default)]
    dev: String,
}

impl HostRoute {
    /// The routed range; None for the default route (it overlaps every
    /// range by design) and for what is not a prefix.
    fn destination(&self) -> Option<ipnet::IpNet> {
        if self.dst == "default" {
            return None;
        }
        self.dst.parse().ok().or_else(|| self.dst.parse::<std::net::IpAddr>().ok().map(ipnet::IpNet::from))
    }
}

/// Deletes everything the local drivers of a controller made on this host:
/// every amphora (its processes and namespaces), the fabric namespace (and
/// with it every port's veth), the host veths, and the amphora directories
/// under `state_dir`. Database rows are left as they are. Safe to repeat.
pub async fn teardown(network: &LocalNetworkSettings, state_dir: &Path) -> anyhow::Result<()> {
    let amp = format!("{}-amp-", network.name_prefix);
    let lb = format!("{}-lb-", network.name_prefix);
    let mut names: Vec<String> = match std::fs::read_dir(NETNS_DIR) {
        Ok(entries) => entries.filter_map(Result::ok).filter_map(|e| e.file_name().into_string().ok()).collect(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
        Err(e) => return Err(e).context(NETNS_DIR),
    };
    names.retain(|n| n.starts_with(&amp) || n.starts_with(&lb));
    // The agents first, so none restarts haproxy in a namespace being removed.
    names.sort_by_key(|n| !n.starts_with(&amp));
    for name in &names {
        destroy_netns(name).await?;
    }
    destroy_netns(&network.fabric_namespace).await?;
    delete_link(None, &network.host_management_interface()).await?;
    delete_link(None, &network.host_vip_interface()).await?;
    super::compute::remove_instance_dirs(state_dir)?;
    Ok(())
}
