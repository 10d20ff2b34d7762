//! `amphora-client` against the real agent: every method, over mutual TLS
//! pinned to the amphora id, with the agent's answers read as the proto
//! types. Plugging runs where a controller would see it: the agent in a
//! "VM" namespace, the ports coming from a "hypervisor".

mod common;

use std::time::Duration;

use amphora_client::{ApiErrorKind, Client, ClientError, Credentials, Timeouts};
use amphora_proto::net::{FixedIpRequest, PlugNetworkRequest, PlugVipRequest, RuleProtocol, RuleRequest};
use amphora_proto::v0_1::{Role, TopologyKind, TopologyRequest};
use amphora_proto::{Action, ApiVersion, ListenerProtocol, ListenerState, Message, TopologyStatus};
use amphora_testkit::Agent;
use amphora_testkit::netns::{self, NsRuntime};
use common::*;

const KEY: &str = include_str!("fixtures/rsa2048.key");
const CERT: &str = include_str!("fixtures/rsa2048.crt");
const VIP_MAC: &str = "02:00:00:00:01:01";
const MEMBER_MAC: &str = "02:00:00:00:02:01";

fn quick(retries: u32) -> Timeouts {
    Timeouts {
        connect: Duration::from_secs(5),
        read: Duration::from_secs(30),
        connection_max_retries: retries,
        connection_retry_interval: Duration::from_millis(100),
    }
}

fn client_of(agent: &Agent, timeouts: Timeouts) -> Client {
    let credentials =
        Credentials::from_pem(agent.pki.server_ca.cert_pem().as_bytes(), agent.pki.client.combined_pem().as_bytes())
            .expect("credentials");
    Client::new(&agent.amphora_id, agent.addr, &credentials, timeouts).expect("client")
}

fn md5_of(client_answer: &Option<String>) -> &str {
    client_answer.as_deref().expect("ETag")
}

#[tokio::test]
async fn a_load_balancers_life_through_the_client() {
    let agent = agent();
    let client = client_of(&agent, quick(3));

    let versions = client.versions().await.expect("versions");
    assert_eq!(versions.api_version, ApiVersion::V1_0);
    let info = client.info().await.expect("info");
    assert_eq!(info.uuid, agent.amphora_id);

    let config = lb_config(&agent, LB, LISTENER, 1);
    let stored = client.upload_config(LB, config.clone()).await.expect("upload");
    assert_eq!(stored.message, Message::ok());
    let fetched = client.get_config(LB).await.expect("config");
    assert_eq!(fetched.text, config);
    assert_eq!(fetched.etag.as_deref(), Some(md5_of(&stored.etag)));

    let started = client.start(LB).await.expect("start");
    assert_eq!(
        started.details.as_deref(),
        Some(format!("Configuration file is valid\nhaproxy daemon for {LB} started").as_str())
    );
    let listeners = client.listeners().await.expect("listeners");
    assert_eq!(listeners.len(), 1);
    assert_eq!(
        (&listeners[0].uuid, &listeners[0].status, &listeners[0].kind),
        (&LISTENER.to_owned(), &ListenerState::Active, &ListenerProtocol::Http)
    );
    let detail = client.listener_status(LISTENER).await.expect("listener");
    assert_eq!(detail.uuid, LISTENER);
    assert_eq!(detail.status, ListenerState::Active);
    let details = client.details().await.expect("details");
    assert_eq!((details.haproxy_count, details.listeners.clone()), (1, vec![LISTENER.to_owned()]));
    assert_eq!(client.reload(LB).await.expect("reload").details, Some(format!("Listener {LB} reloaded")));

    let pem = format!("{KEY}{CERT}");
    let stored = client.upload_certificate(LB, "www.example.com.pem", pem.clone()).await.expect("certificate");
    let md5 = client.certificate_md5(LB, "www.example.com.pem").await.expect("md5");
    assert_eq!(md5.md5sum, md5_of(&stored.etag));
    assert_eq!(client.delete_certificate(LB, "www.example.com.pem").await.expect("delete"), Message::ok());
    let missing = client.certificate_md5(LB, "www.example.com.pem").await.expect_err("deleted");
    assert!(missing.is_not_found(), "{missing}");
    assert_eq!(missing.message().map(|m| m.message.as_str()), Some("Certificate Not Found"));

    assert_eq!(client.stop(LB).await.expect("stop").details, Some(format!("Listener {LB} stopped")));
    assert_eq!(client.act(LB, Action::Start).await.expect("start again").message, "OK");
    assert_eq!(client.delete_load_balancer(LB).await.expect("delete"), Message::ok());
    assert!(client.listeners().await.expect("listeners").is_empty());
    let gone = client.stop(LB).await.expect_err("deleted");
    assert_eq!(
        (gone.kind(), gone.message().map(|m| m.message.as_str())),
        (Some(ApiErrorKind::NotFound), Some("Listener Not Found"))
    );

    // All of it over one kept-alive connection.
    assert_eq!(client.connections_opened(), 1);
}

/// A UDP listener's keepalived LVS file as the controller renders it.
fn lvs_config(agent: &Agent, port: u16) -> String {
    format!(
        "net_namespace amphora-haproxy\n\nvirtual_server_group ipv4-group {{\n    203.0.113.9 {port}\n}}\n\n\
         virtual_server group ipv4-group {{\n    lb_algo wrr\n    lb_kind NAT\n    protocol UDP\n\
             delay_loop 5\n    delay_before_retry 5\n    retry 3\n\
             real_server 192.0.2.21 5353 {{\n        weight 1\n        MISC_CHECK {{\n\
                     misc_path \"{}/lvs/check/udp_check.sh 192.0.2.21 5353\"\n            misc_timeout 2\n        }}\n    }}\n}}\n",
        agent.base_path().display()
    )
}

/// Upload, read back, listing and removal of a UDP listener (starting it
/// needs IPVS: tests/lvs.rs does that in the VM).
#[tokio::test]
async fn an_lvs_listener_through_the_client() {
    const UDP_LISTENER: &str = "5b0c3a1e-8f0e-4c6b-9e61-6d1f0c2a7e40";
    let agent = agent();
    let client = client_of(&agent, quick(3));
    let config = lvs_config(&agent, 5353);
    let stored = client.upload_lvs_config(UDP_LISTENER, config.clone()).await.expect("upload");
    assert_eq!(stored.message, Message::ok());
    let fetched = client.get_lvs_config(UDP_LISTENER).await.expect("read back");
    assert_eq!(fetched.text, config);
    let listed = client.listeners().await.expect("listeners");
    let udp = listed.iter().find(|l| l.uuid == UDP_LISTENER).expect("the UDP listener is listed");
    assert_eq!(udp.kind, ListenerProtocol::Udp);

    // A file keepalived refuses leaves the stored one.
    let refused = client.upload_lvs_config(UDP_LISTENER, "virtual_server {\n").await.expect_err("refused");
    assert_eq!(refused.status(), Some(400), "{refused}");
    assert_eq!(client.get_lvs_config(UDP_LISTENER).await.expect("read back").text, config);

    client.delete_lvs_listener(UDP_LISTENER).await.expect("delete");
    let gone = client.get_lvs_config(UDP_LISTENER).await.expect_err("gone");
    assert!(gone.is_not_found(), "{gone}");
    assert!(client.listeners().await.expect("listeners").iter().all(|l| l.uuid != UDP_LISTENER));
}

#[tokio::test]
async fn agent_level_calls_and_their_errors() {
    let agent = agent();
    let client = client_of(&agent, quick(2));

    let config = std::fs::read_to_string(&agent.config_path).expect("config").replace("debug = True", "debug = False");
    let updated = client.update_agent_config(config).await.expect("agent config");
    assert_eq!(updated.message, "OK");
    let refused = client.update_agent_config("[amphora_agent\n").await.expect_err("malformed");
    assert_eq!(refused.kind(), Some(ApiErrorKind::InternalServerError));

    let bad_vip = PlugVipRequest { subnet_cidr: "nonsense".into(), mac_address: VIP_MAC.into(), ..Default::default() };
    let refused = client.plug_vip("10.0.0.10", &bad_vip).await.expect_err("bad subnet");
    assert_eq!(refused.kind(), Some(ApiErrorKind::InvalidRequest));
    assert_eq!(refused.message().map(|m| m.message.as_str()), Some("Invalid subnet information"));
    // A port that is not there yet is what upstream waits for.
    let absent = PlugNetworkRequest { mac_address: MEMBER_MAC.into(), ..Default::default() };
    match client.plug_network(&absent).await {
        Err(ClientError::Unavailable { attempts: 2, last, .. }) => {
            assert!(matches!(*last, ClientError::NotReady { .. }))
        }
        other => panic!("expected the missing port to be waited for: {other:?}"),
    }
    let unknown = client.interface("203.0.113.99").await.expect_err("no such address");
    assert!(unknown.is_not_found());
    let rules = [RuleRequest::new(RuleProtocol::Tcp, None, 80)];
    assert!(client.set_interface_rules("203.0.113.99", &rules).await.expect_err("no such address").is_not_found());

    let refused = client.upload_vrrp_config("vrrp_instance broken {\n    nonsense_keyword 1\n").await.expect_err("bad");
    assert_eq!(refused.message().map(|m| m.message.as_str()), Some("Failed to upload keepalived configuration."));
    let refused = client.vrrp(Action::Start).await.expect_err("no configuration");
    assert_eq!(refused.status(), Some(500));

    // A rotated server certificate is still checked against the amphora id.
    let renewed = agent.pki.server_ca.server(&agent.amphora_id, &[&agent.amphora_id]);
    assert_eq!(client.rotate_server_certificate(renewed.combined_pem()).await.expect("rotate"), Message::ok());
    let fresh = client_of(&agent, quick(1));
    assert_eq!(fresh.info().await.expect("new certificate").uuid, agent.amphora_id);
}

struct Hypervisor {
    name: String,
}

impl Drop for Hypervisor {
    fn drop(&mut self) {
        netns::delete(&self.name);
    }
}

fn keepalived_config() -> &'static str {
    "vrrp_instance lb_vrrp {
    interface eth1
    virtual_router_id 42
    priority 100
    nopreempt
    advert_int 1
    unicast_src_ip 10.0.0.11
    unicast_peer {
        10.0.0.12
    }
    virtual_ipaddress {
        10.0.0.10
    }
}
"
}

#[tokio::test]
async fn plugging_firewall_and_keepalived_through_the_client() {
    let agent = builder().in_vm().start();
    let vm = agent.vm.clone().expect("vm");
    let hypervisor = Hypervisor { name: netns::unique_name("amphyp") };
    netns::create(&hypervisor.name);
    netns::veth(&hypervisor.name, "hv-vip", &vm, "ens3", VIP_MAC);
    netns::veth(&hypervisor.name, "hv-mem", &vm, "ens4", MEMBER_MAC);
    let client = client_of(&agent, quick(3));
    // The agent listens inside the VM: so does the controller's client here.
    let in_vm = NsRuntime::new(&vm);
    let outcome = in_vm
        .spawn(async move {
            let vip = PlugVipRequest {
                subnet_cidr: "10.0.0.0/24".into(),
                gateway: Some("10.0.0.1".into()),
                mac_address: VIP_MAC.into(),
                mtu: Some(1450),
                vrrp_ip: Some("10.0.0.11".into()),
                ..Default::default()
            };
            let plugged = client.plug_vip("10.0.0.10", &vip).await.expect("plug vip");
            assert_eq!(plugged, Message::with_details("OK", "VIP 10.0.0.10 plugged on interface eth1"));
            let again = client.plug_vip("10.0.0.10", &vip).await;
            assert!(again.as_ref().is_ok() || again.as_ref().is_err_and(ClientError::is_conflict), "{again:?}");
            let member = PlugNetworkRequest {
                mac_address: MEMBER_MAC.into(),
                fixed_ips: Some(vec![FixedIpRequest {
                    ip_address: "10.1.0.5".into(),
                    subnet_cidr: Some("10.1.0.0/24".into()),
                    ..Default::default()
                }]),
                mtu: Some(1500),
                vip_net_info: None,
            };
            let plugged = client.plug_network(&member).await.expect("plug network");
            assert_eq!(plugged, Message::with_details("OK", "Plugged interface eth2"));
            assert_eq!(client.interface("10.0.0.10").await.expect("vip interface").interface, "eth1");
            assert_eq!(client.interface("10.1.0.5").await.expect("member interface").interface, "eth2");
            let rules = [
                RuleRequest::new(RuleProtocol::Tcp, None, 8080),
                RuleRequest::new(RuleProtocol::Vrrp, Some("10.0.0.12/32"), 112),
            ];
            assert_eq!(client.set_interface_rules("10.0.0.10", &rules).await.expect("rules"), Message::ok());
            let odd = [RuleRequest::new(RuleProtocol::Other("ICMP".into()), None, 1)];
            let refused = client.set_interface_rules("10.0.0.10", &odd).await.expect_err("unknown protocol");
            assert_eq!(refused.kind(), Some(ApiErrorKind::InvalidRequest));

            let stored = client.upload_vrrp_config(keepalived_config()).await.expect("keepalived configuration");
            assert!(stored.etag.is_some());
            assert_eq!(client.vrrp(Action::Start).await.expect("start").details.as_deref(), Some("keepalived started"));
            assert_eq!(
                client.vrrp(Action::Reload).await.expect("reload").details.as_deref(),
                Some("keepalived reloaded")
            );
            assert_eq!(client.vrrp(Action::Stop).await.expect("stop").details.as_deref(), Some("keepalived stopped"));
        })
        .await;
    if let Err(e) = outcome {
        std::panic::resume_unwind(e.into_panic());
    }
}

#[tokio::test]
async fn the_0_1_api_through_the_client() {
    // In a VM namespace of its own, so no port of this host looks unplugged.
    let agent = builder().in_vm().start();
    let client = client_of(&agent, quick(1));
    let in_vm = NsRuntime::new(agent.vm.as_deref().expect("vm"));
    let config = lb_config(&agent, LB, LISTENER, 1);
    let outcome = in_vm.spawn(async move { the_0_1_api(&client, config).await }).await;
    if let Err(e) = outcome {
        std::panic::resume_unwind(e.into_panic());
    }
}

async fn the_0_1_api(client: &Client, config: String) {
    let v0_1 = client.v0_1();

    let topology = v0_1.topology().await.expect("topology");
    assert_eq!((topology.topology, topology.role), (TopologyKind::Single, Role::Active));
    assert_eq!(topology.topology_status, TopologyStatus::Ok);
    let unchanged = TopologyRequest { topology: "SINGLE".into(), ..Default::default() };
    assert_eq!(v0_1.set_topology(&unchanged).await.expect("set topology"), Message::ok());
    let refused = v0_1.set_topology(&TopologyRequest { topology: "MESH".into(), ..Default::default() }).await;
    assert_eq!(refused.expect_err("unknown topology").kind(), Some(ApiErrorKind::InvalidRequest));
    assert_eq!(v0_1.info().await.expect("info").api_version, ApiVersion::V0_1);
    assert_eq!(v0_1.details().await.expect("details").topology, TopologyKind::Single);

    let stored = v0_1.upload_config(LB, config.clone()).await.expect("upload");
    assert_eq!(stored.etag.as_deref(), Some(amphora_testkit::md5_hex(config.as_bytes()).as_str()));
    assert_eq!(v0_1.get_config(LB).await.expect("config").text, config);
    assert_eq!(v0_1.act(LB, Action::Start).await.expect("start").message, "OK");
    let listeners = v0_1.listeners().await.expect("listeners");
    assert_eq!(listeners.iter().map(|l| l.uuid.as_str()).collect::<Vec<_>>(), vec![LISTENER]);
    assert_eq!(v0_1.listener(LB).await.expect("listener").status, ListenerState::Active);

    let pem = format!("{KEY}{CERT}");
    let stored = v0_1.upload_certificate(LB, "www.example.com.pem", pem).await.expect("certificate");
    let md5 = v0_1.certificate_md5(LB, "www.example.com.pem").await.expect("md5");
    assert_eq!(Some(md5.md5sum.as_str()), stored.etag.as_deref());
    assert_eq!(v0_1.delete_certificate(LB, "www.example.com.pem").await.expect("delete"), Message::ok());
    assert!(v0_1.delete_certificate(LB, "www.example.com.pem").await.expect_err("gone").is_not_found());

    assert_eq!(v0_1.act(LB, Action::Stop).await.expect("stop").details, Some(format!("Listener {LB} stopped")));
    assert_eq!(v0_1.delete_listener(LB).await.expect("delete"), Message::ok());
    assert!(v0_1.delete_listener(LB).await.expect_err("gone").is_not_found());

    // Nothing to plug: what upstream takes for a port not there yet.
    for plugged in [v0_1.plug_vip("10.0.0.10").await, v0_1.plug_network().await] {
        match plugged {
            Err(ClientError::Unavailable { last, .. }) => assert!(matches!(*last, ClientError::NotReady { .. })),
            other => panic!("expected the missing port to be waited for: {other:?}"),
        }
    }
}

#[tokio::test]
async fn the_appliance_api_through_the_client() {
    let agent = agent();
    let client = client_of(&agent, quick(3));
    let appliance = client.appliance();
    assert!(appliance.instances().await.expect("instances").is_empty());
    // A text 404 is the appliance's "no such instance", not "not ready".
    assert!(!appliance.instance_exists(LB).await.expect("exists"));
    assert!(appliance.delete_instance(LB).await.expect_err("no instance").is_not_found());

    assert!(client.upload_config(LB, lb_config(&agent, LB, LISTENER, 1)).await.is_ok());
    assert_eq!(appliance.instances().await.expect("instances"), vec![LB.to_owned()]);
    assert!(appliance.instance_exists(LB).await.expect("exists"));
    client.start(LB).await.expect("start");
    let status = appliance.status().await.expect("status");
    assert_eq!((status.haproxy_count.as_str(), status.active_node), ("1", 1));
    assert!(appliance.service_status().await.expect("service status").starts_with(LB));

    let pem = format!("{KEY}{CERT}");
    let stored = appliance.upload_certificate(LB, "www.example.com.pem", pem).await.expect("certificate");
    assert_eq!(stored, format!("OK\nhaproxy daemon {LB} reloaded.\n"));
    let refused = appliance.upload_certificate(LB, "www.example.com.pem", "junk").await.expect_err("junk");
    assert_eq!(refused.kind(), Some(ApiErrorKind::Conflict));

    let deleted = appliance.delete_instance(LB).await.expect("delete");
    assert_eq!(deleted, format!("OK\nhaproxy daemon {LB} killed.\n"));
    assert!(!appliance.instance_exists(LB).await.expect("exists"));
}
