//! Runs `tests/compat/test_upstream_client.py`: upstream Octavia's own
//! controller client (`AmphoraAPIClient1_0`) driving our real agent. This
//! test prepares what the suite needs (an agent in a VM namespace with ports
//! to plug, certificates, configurations) and runs it inside that namespace
//! with upstream's virtualenv (UPSTREAM_PYTHON, set by scripts/test.sh).

mod common;

use std::path::Path;

use amphora_testkit::netns;
use common::*;

struct Cleanup(String);

impl Drop for Cleanup {
    fn drop(&mut self) {
        netns::delete(&self.0);
    }
}

#[tokio::test]
#[ignore = "needs upstream octavia; scripts/test.sh runs it with UPSTREAM_PYTHON set"]
async fn upstreams_controller_client_works_against_our_agent() {
    let python = std::env::var("UPSTREAM_PYTHON").expect("UPSTREAM_PYTHON must name a python with upstream octavia");
    let agent = builder().in_vm().start();
    let vm = agent.vm.clone().expect("vm");
    let hyp = netns::unique_name("amphyp");
    netns::create(&hyp);
    let _cleanup = Cleanup(hyp.clone());
    netns::veth(&hyp, "hv-vip", &vm, "ens3", "02:00:00:00:01:01");
    netns::veth(&hyp, "hv-mem", &vm, "ens4", "02:00:00:00:02:01");

    let dir = agent.dir.path();
    let write = |name: &str, content: &str| {
        let path = dir.join(name);
        std::fs::write(&path, content).expect("write");
        path.display().to_string()
    };
    let client_cert = write("controller-client.pem", &agent.pki.client.combined_pem());
    let server_ca = write("server-ca.pem", &agent.pki.server_ca.cert_pem());
    let haproxy_config = write(
        "haproxy.cfg",
        &format!(
            "global\n    daemon\n    user nobody\n    group nogroup\n    stats socket {socket} mode 0666 level user\n    maxconn 1000\n\
             defaults\n    timeout connect 5s\n    timeout client 30s\n    timeout server 30s\n\
             frontend {LISTENER}\n    bind 10.0.0.10:8080\n    mode http\n    default_backend pool:{LISTENER}\n\
             backend pool:{LISTENER}\n    mode http\n    server member-1 10.1.0.1:8081\n",
            socket = agent.stats_socket(LB).display()
        ),
    );
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    let fixture = |name: &str| std::fs::read_to_string(fixtures.join(name)).expect("fixture");
    let lb_pem = write("lb.pem", &format!("{}{}{}", fixture("rsa2048.key"), fixture("rsa2048.crt"), fixture("ca.crt")));
    let keepalived = write(
        "keepalived.conf",
        &format!(
            "vrrp_script check_script {{\n    script {check}\n    interval 5\n    fall 2\n    rise 2\n}}\n\
             vrrp_instance lb_vrrp {{\n    interface eth1\n    virtual_router_id 7\n    priority 100\n    nopreempt\n    accept\n\
             \x20   advert_int 1\n    authentication {{\n        auth_type PASS\n        auth_pass secret\n    }}\n\
             \x20   unicast_src_ip 10.0.0.11\n    unicast_peer {{\n        10.0.0.12\n    }}\n\
             \x20   virtual_ipaddress {{\n        10.0.0.10\n    }}\n    track_script {{\n        check_script\n    }}\n}}\n",
            check = agent.base_path().join("vrrp/check_script.sh").display()
        ),
    );
    let new_server = agent.pki.server_ca.server(&agent.amphora_id, &[&agent.amphora_id, "127.0.0.1"]);
    let new_server_pem = write("new-server.pem", &new_server.combined_pem());

    let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let output = std::process::Command::new("ip")
        .args(["netns", "exec", &vm])
        .arg(&python)
        .args(["-m", "unittest", "-v", "tests/compat/test_upstream_client.py"])
        .current_dir(&workspace)
        .env("AGENT_PORT", agent.addr.port().to_string())
        .env("AMPHORA_ID", &agent.amphora_id)
        .env("CLIENT_CERT", client_cert)
        .env("SERVER_CA", server_ca)
        .env("LB_ID", LB)
        .env("LISTENER_ID", LISTENER)
        .env("VIP_MAC", "02:00:00:00:01:01")
        .env("MEMBER_MAC", "02:00:00:00:02:01")
        .env("HAPROXY_CONFIG", haproxy_config)
        .env("LB_PEM", lb_pem)
        .env("KEEPALIVED_CONFIG", keepalived)
        .env("AGENT_CONFIG", agent.config_path.display().to_string())
        .env("AGENT_BASE_PATH", agent.base_path().display().to_string())
        .env("NEW_SERVER_PEM", new_server_pem)
        .output()
        .expect("run the compatibility suite");
    let report = format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    assert!(output.status.success(), "upstream's client failed against our agent:\n{report}");
    assert!(report.contains("OK"), "{report}");
    eprintln!("{report}");
}
