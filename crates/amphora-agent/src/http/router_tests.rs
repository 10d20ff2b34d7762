//! Every route of every API, called in-process on `http::app` with
//! `tower::ServiceExt::oneshot`: status and body of its answers, errors
//! first. No root, no network namespace, no haproxy started (a route that
//! would start one is tested on its validation and error paths); `haproxy
//! -c` checks an uploaded configuration, as in production.
//!
//! `the_route_table_is_the_tested_one` probes the router with every path
//! template of `amphora_proto::paths` and every method, and fails when a
//! route answers that no case below covers, or a covered one does not.
//!
//! Run: `cargo test -p amphora-agent --lib http::router_tests`.

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::Arc;

use amphora_proto::paths::{self, appliance, v0_1, v1};
use amphora_testkit::Pki;
use axum::Router;
use axum::body::Body;
use axum::http::{Method, Request, StatusCode, header};
use serde_json::{Value, json};
use tempfile::TempDir;
use tower::ServiceExt;

use super::AppState;
use super::error::{ApiError, Kind, render_0_1, render_1_0, render_appliance};
use crate::config;
use crate::haproxy::Haproxy;
use crate::ids::LbId;
use crate::info::{self, InfoService};
use crate::lb::{self, Layout, LbService};
use crate::lvs::LvsService;
use crate::net::NetService;
use crate::settings::LiveConfig;
use crate::system::packages::{Packages, Sources};
use crate::system::sampler::Sampler;
use crate::tls::{TlsFiles, TlsState};
use crate::topology::TopologyService;
use crate::vrrp::Vrrp;

const LB: &str = "5e4bd1ae-4a73-4d26-a4b5-4a3ac1b8a0a2";
const LISTENER: &str = "listener-1";
const PEM: &str = "www.example.com.pem";
/// An address no host holds (TEST-NET-1).
const NOWHERE: &str = "192.0.2.77";

/// An agent's application over its own temporary state directory.
struct Fixture {
    dir: TempDir,
    amphora_id: String,
    pki: Pki,
    app: Router,
}

impl Fixture {
    async fn new() -> Self {
        Self::with_packages(None).await
    }

    /// With `dpkg_status` as the package database instead of the system's.
    async fn with_packages(dpkg_status: Option<std::path::PathBuf>) -> Self {
        // On a memory filesystem where there is one: the agent's durable
        // writes cost a disk flush each elsewhere.
        let shm = Path::new("/dev/shm");
        let mut builder = tempfile::Builder::new();
        builder.prefix("amphora-router-test.");
        let dir = if shm.is_dir() { builder.tempdir_in(shm) } else { builder.tempdir() }.expect("temp dir");
        let amphora_id = amphora_testkit::agent::unique_amphora_id();
        let pki = Pki::new(&amphora_id);
        let path = |name: &str| dir.path().join(name).display().to_string();
        std::fs::write(dir.path().join("client_ca.pem"), pki.client_ca.cert_pem()).expect("write CA");
        std::fs::write(dir.path().join("server.pem"), pki.server.combined_pem()).expect("write server cert");
        let config_path = dir.path().join("amphora-agent.conf");
        let text = format!(
            "[haproxy_amphora]\nbase_path = {state}\nbase_cert_dir = {certs}\nhaproxy_cmd = {haproxy}\n\
             bind_host = 127.0.0.1\nbind_port = 0\n\
             [health_manager]\nheartbeat_key = insecure\n\
             [amphora_agent]\namphora_id = {amphora_id}\nagent_server_ca = {ca}\nagent_server_cert = {cert}\n\
             api_versions = 1.0, 0.1, appliance\n",
            state = path("state"),
            certs = path("state/certs"),
            haproxy = amphora_testkit::agent::haproxy_binary(),
            ca = path("client_ca.pem"),
            cert = path("server.pem"),
        );
        std::fs::write(&config_path, text).expect("write config");
        let loaded = config::load(std::slice::from_ref(&config_path)).expect("configuration");
        let config = loaded.config;
        let conf = &config.haproxy_amphora;
        for dir in [&conf.base_path, &conf.base_cert_dir] {
            std::fs::create_dir_all(dir).expect("state directories");
        }
        let layout = Layout::new(conf.base_path.clone(), conf.base_cert_dir.clone());
        lb::ensure_user_group_config(&layout.user_group_config(), None).expect("user/group file");
        let settings = Arc::new(LiveConfig::new(config.clone(), loaded.files, None));
        let net = Arc::new(NetService::new(None, layout.interfaces_dir(), settings.clone()).expect("netlink"));
        let haproxy = Haproxy::new(conf.haproxy_cmd.clone(), layout.user_group_config(), None);
        // No keepalived here: its routes answer on their error paths.
        let vrrp = Vrrp::new(&layout, dir.path().join("no-keepalived"), dir.path().join("no-checker"), None);
        let lbs = LbService::new(layout, haproxy, &amphora_id, None, Some(net.clone()), Some(vrrp.clone()));
        let topology = Arc::new(TopologyService::new(lbs.layout().topology_record(), lbs.clone()));
        let lvs = LvsService::new(
            lbs.layout(),
            dir.path().join("no-keepalived"),
            dir.path().join("no-health-checker"),
            None,
            Some(net.clone()),
            Some(vrrp.clone()),
        );
        let info = Arc::new(InfoService::new(
            amphora_id.clone(),
            settings.clone(),
            Packages::new(match dpkg_status {
                Some(dpkg_status) => {
                    Sources { dpkg_status, rpm_databases: Vec::new(), haproxy_cmd: conf.haproxy_cmd.clone() }
                }
                None => Sources::system(conf.haproxy_cmd.clone()),
            }),
            Sampler::start(None).await.expect("sampler"),
            info::Sources {
                lbs: lbs.clone(),
                net: net.clone(),
                vrrp: vrrp.clone(),
                topology: topology.clone(),
                lvs: lvs.clone(),
            },
        ));
        let tls = TlsState::load(TlsFiles {
            server_ca: config.amphora_agent.agent_server_ca.clone(),
            server_cert: config.amphora_agent.agent_server_cert.clone(),
            min_protocol: config.amphora_agent.agent_tls_protocol,
        })
        .expect("TLS");
        let versions = Arc::new(
            config.amphora_agent.api_versions.iter().map(|v| amphora_proto::ApiVersion::from(v.as_str())).collect(),
        );
        let state = AppState { lbs, info, tls: Arc::new(tls), settings, net, vrrp, lvs, topology, versions };
        let app = super::app(state, config.amphora_agent.max_request_body_size);
        Self { dir, amphora_id, pki, app }
    }

    fn base_path(&self) -> std::path::PathBuf {
        self.dir.path().join("state")
    }

    async fn call(&self, method: &Method, path: &str, body: Vec<u8>) -> Answer {
        let request = Request::builder().method(method).uri(path).body(Body::from(body)).expect("request");
        let response = self.app.clone().oneshot(request).await.expect("infallible");
        let status = response.status();
        let content_type =
            response.headers().get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("").to_owned();
        let etag = response.headers().get(header::ETAG).and_then(|v| v.to_str().ok()).map(str::to_owned);
        let bytes = axum::body::to_bytes(response.into_body(), usize::MAX).await.expect("body");
        Answer { status, content_type, etag, body: String::from_utf8_lossy(&bytes).into_owned() }
    }

    /// A configuration haproxy accepts, for load balancer `lb`.
    fn lb_config(&self, lb: &str) -> String {
        format!(
            "global\n    daemon\n    stats socket {base}/{lb}.sock mode 0666 level user\n    maxconn 100\n\n\
             defaults\n    timeout connect 5s\n    timeout client 30s\n    timeout server 30s\n\n\
             frontend {LISTENER}\n    bind 127.0.0.1:1\n    mode http\n    default_backend pool\n\n\
             backend pool\n    mode http\n    server member-1 127.0.0.1:2\n",
            base = self.base_path().display()
        )
    }

    /// Stores a load balancer's configuration (checked, not started).
    async fn store_lb(&self, lb: &str) {
        let path = v1::lb_upload_config(&self.amphora_id, lb);
        let answer = self.call(&Method::PUT, &path, self.lb_config(lb).into_bytes()).await;
        assert_eq!(answer.status, StatusCode::ACCEPTED, "store {lb}: {}", answer.body);
    }

    /// A key and certificate in one file.
    fn pem(&self) -> String {
        self.pki.server.combined_pem()
    }
}

#[derive(Debug)]
struct Answer {
    status: StatusCode,
    content_type: String,
    etag: Option<String>,
    body: String,
}

impl Answer {
    fn json(&self) -> Value {
        assert!(self.content_type.starts_with("application/json"), "{}: {}", self.content_type, self.body);
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.body))
    }
}

/// What a case expects of the answer's body.
enum Expect {
    Json(Value),
    Text(String),
    /// A JSON body with host-dependent values, checked by a function.
    JsonCheck(fn(&Fixture, &Value)),
    /// A status and JSON body both depending on the host (its interfaces),
    /// checked by a function.
    HostDependent(fn(u16, &Value)),
}

/// Something a case needs before its request.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Setup {
    Nothing,
    /// Load balancer `LB` stored (checked by `haproxy -c`, not started).
    StoredLb,
    /// A file where `LB`'s certificate directory would go.
    CertDirBlocked,
}

struct Case {
    method: Method,
    /// The route template, from `amphora_proto::paths`.
    route: &'static str,
    path: String,
    body: Vec<u8>,
    setup: Setup,
    status: u16,
    expect: Expect,
}

fn case(method: Method, route: &'static str, path: impl Into<String>, status: u16, expect: Expect) -> Case {
    Case { method, route, path: path.into(), body: Vec::new(), setup: Setup::Nothing, status, expect }
}

impl Case {
    fn body(mut self, body: impl Into<Vec<u8>>) -> Self {
        self.body = body.into();
        self
    }

    fn after(mut self, setup: Setup) -> Self {
        self.setup = setup;
        self
    }
}

fn msg(message: &str) -> Expect {
    Expect::Json(json!({ "message": message }))
}

fn msg_details(message: &str, details: impl Into<String>) -> Expect {
    Expect::Json(json!({ "message": message, "details": details.into() }))
}

fn text(body: impl Into<String>) -> Expect {
    Expect::Text(body.into())
}

/// The body of an internal failure, whatever it was: no path, no OS error.
fn assert_no_leak(fixture: &Fixture, body: &str) {
    let dir = fixture.dir.path().display().to_string();
    assert!(!body.contains(&dir), "the answer names a file: {body}");
    for os_error in ["os error", "No such file", "Not a directory", "File exists", "Permission denied"] {
        assert!(!body.contains(os_error), "the answer carries an OS error: {body}");
    }
}

async fn run(cases: Vec<Case>) {
    for case in cases {
        let fixture = Fixture::new().await;
        let Case { method, route, path, body, setup, status, expect } = case;
        assert!(paths::matches(route, &path), "{path} is not a path of {route}");
        match setup {
            Setup::Nothing => {}
            Setup::StoredLb => fixture.store_lb(LB).await,
            Setup::CertDirBlocked => {
                std::fs::write(fixture.base_path().join("certs").join(LB), "not a directory").expect("block")
            }
        }
        let answer = fixture.call(&method, &path, body).await;
        let what = format!("{method} {path}");
        match expect {
            Expect::Json(expected) => {
                assert_eq!((answer.status.as_u16(), answer.json()), (status, expected), "{what}");
            }
            Expect::Text(expected) => {
                assert_eq!((answer.status.as_u16(), answer.body.as_str()), (status, expected.as_str()), "{what}");
                assert!(answer.content_type.starts_with("text/plain"), "{what}: {}", answer.content_type);
            }
            Expect::JsonCheck(check) => {
                assert_eq!(answer.status.as_u16(), status, "{what}: {}", answer.body);
                check(&fixture, &answer.json());
            }
            Expect::HostDependent(check) => check(answer.status.as_u16(), &answer.json()),
        }
        if answer.status.is_server_error() {
            assert_no_leak(&fixture, &answer.body);
        }
    }
}

fn hostname() -> String {
    nix::unistd::gethostname().expect("hostname").to_string_lossy().into_owned()
}

fn check_info(fixture: &Fixture, info: &Value, api_version: &str) {
    assert_eq!(info["hostname"], hostname());
    assert_eq!(info["uuid"], fixture.amphora_id);
    assert_eq!(info["api_version"], api_version);
}

fn check_details(fixture: &Fixture, details: &Value, api_version: &str) {
    check_info(fixture, details, api_version);
    assert_eq!(details["listeners"], json!([]));
    assert!(details["memory"]["total"].is_u64(), "{details}");
    assert_eq!(details["topology"], "SINGLE");
}

/// Version discovery, `/info`, unknown paths and methods.
fn common_cases() -> Vec<Case> {
    vec![
        case(
            Method::GET,
            paths::ROOT,
            "/",
            200,
            Expect::Json(json!({"api_version": "1.0", "versions": ["1.0", "0.1", "appliance"]})),
        ),
        case(Method::GET, paths::INFO, "/info", 200, Expect::JsonCheck(|f, v| check_info(f, v, "1.0"))),
    ]
}

fn v1_cases() -> Vec<Case> {
    let upload = |amphora: &str, lb: &str| v1::lb_upload_config(amphora, lb);
    let no_lb = || msg_details("Loadbalancer Not Found", format!("No loadbalancer with UUID: {LB}"));
    vec![
        case(Method::GET, v1::INFO, v1::INFO, 200, Expect::JsonCheck(|f, v| check_info(f, v, "1.0"))),
        case(Method::GET, v1::DETAILS, v1::DETAILS, 200, Expect::JsonCheck(|f, v| check_details(f, v, "1.0"))),
        case(Method::GET, v1::LISTENERS, v1::LISTENERS, 200, Expect::Json(json!([]))),
        case(
            Method::GET,
            v1::LISTENER,
            v1::listener(LISTENER),
            404,
            msg_details("Listener Not Found", format!("No listener with UUID: {LISTENER}")),
        ),
        case(Method::DELETE, v1::LISTENER, v1::listener(LB), 200, msg("OK")),
        case(Method::DELETE, v1::LISTENER, v1::listener(LB), 200, msg("OK")).after(Setup::StoredLb),
        case(
            Method::DELETE,
            v1::LISTENER,
            v1::listener("interfaces"),
            400,
            msg_details(
                "Invalid request",
                "\"interfaces\" is not a valid identifier: use 1 to 64 letters, digits, '-' or '_'",
            ),
        ),
        case(Method::GET, v1::LB_CONFIG, v1::lb_config(LB), 404, no_lb()),
        case(
            Method::GET,
            v1::LVS_CONFIG,
            v1::lvs_config(LISTENER),
            404,
            msg_details("UDP Listener Not Found", format!("No UDP listener with UUID: {LISTENER}")),
        ),
        case(
            Method::PUT,
            v1::LVS_UPLOAD_CONFIG,
            v1::lvs_upload_config("amp", LISTENER),
            400,
            msg_details("Invalid request", "the configuration is not valid UTF-8"),
        )
        .body(vec![0xff, 0xfe]),
        case(
            Method::PUT,
            v1::LVS_UPLOAD_CONFIG,
            v1::lvs_upload_config("amp", "a.b"),
            400,
            msg_details(
                "Invalid request",
                "\"a.b\" is not a valid identifier: use 1 to 64 letters, digits, '-' or '_'",
            ),
        ),
        case(
            Method::PUT,
            v1::LB_ACTION,
            v1::lb_action(LB, amphora_proto::Action::Start),
            404,
            msg_details("Listener Not Found", format!("No loadbalancer with UUID: {LB}")),
        ),
        case(
            Method::PUT,
            v1::LB_ACTION,
            format!("/1.0/loadbalancer/{LB}/BAD_TEST_DATA"),
            400,
            msg_details("Invalid Request", "Unknown action: BAD_TEST_DATA"),
        ),
        case(Method::PUT, v1::LB_UPLOAD_CONFIG, upload("amp", LB), 400, Expect::JsonCheck(check_haproxy_rejection))
            .body("global\nBAD_LINE\n"),
        case(
            Method::PUT,
            v1::LB_UPLOAD_CONFIG,
            upload("amp", LB),
            400,
            msg_details("Invalid request", "the configuration is not valid UTF-8"),
        )
        .body(vec![0xff, 0xfe]),
        case(
            Method::PUT,
            v1::LB_UPLOAD_CONFIG,
            upload("amp", "a.b"),
            400,
            msg_details(
                "Invalid request",
                "\"a.b\" is not a valid identifier: use 1 to 64 letters, digits, '-' or '_'",
            ),
        ),
        case(Method::PUT, v1::SERVER_CERTIFICATE, v1::SERVER_CERTIFICATE, 400, msg("No certificate found")),
        case(
            Method::POST,
            v1::PLUG_VIP,
            v1::plug_vip("203.0.113.2"),
            400,
            Expect::JsonCheck(|_, v| {
                assert_eq!(v["message"], "Invalid subnet information");
                assert!(v["details"].as_str().is_some_and(|d| d.contains("EOF")), "{v}");
            }),
        ),
        case(
            Method::POST,
            v1::PLUG_VIP,
            v1::plug_vip("203.0.113.2"),
            500,
            msg_details("Error plugging VIP", "the agent runs without an amphora network namespace"),
        )
        .body(r#"{"subnet_cidr": "203.0.113.0/24", "gateway": "203.0.113.1", "mac_address": "78:31:c1:ce:0b:3c"}"#),
        case(
            Method::POST,
            v1::PLUG_NETWORK,
            v1::PLUG_NETWORK,
            500,
            msg_details("Error plugging Port", "the agent runs without an amphora network namespace"),
        )
        .body(r#"{"mac_address": "78:31:c1:ce:0b:3c"}"#),
        case(
            Method::POST,
            v1::PLUG_NETWORK_SLASH,
            v1::PLUG_NETWORK_SLASH,
            400,
            Expect::JsonCheck(|_, v| assert_eq!(v["message"], "Invalid port information", "{v}")),
        )
        .body("[]"),
        case(
            Method::GET,
            v1::INTERFACE,
            v1::interface("127.0.0.1"),
            200,
            Expect::Json(json!({"message": "OK", "interface": "lo"})),
        ),
        case(
            Method::GET,
            v1::INTERFACE,
            v1::interface(NOWHERE),
            404,
            msg_details("Error interface not found for IP address", format!("no interface holds {NOWHERE}")),
        ),
        case(
            Method::GET,
            v1::INTERFACE,
            v1::interface("nonsense"),
            400,
            msg_details("Invalid IP address", "\"nonsense\" is not an IP address"),
        ),
        case(
            Method::PUT,
            v1::INTERFACE_RULES,
            v1::interface_rules(NOWHERE),
            500,
            msg_details("Error loading the firewall rules", "the agent runs without an amphora network namespace"),
        )
        .body("[]"),
        case(
            Method::PUT,
            v1::INTERFACE_RULES,
            v1::interface_rules(NOWHERE),
            400,
            Expect::JsonCheck(|_, v| assert_eq!(v["message"], "Invalid rules information", "{v}")),
        )
        .body("{"),
        case(
            Method::PUT,
            v1::VRRP_UPLOAD,
            v1::VRRP_UPLOAD,
            500,
            msg_details(
                "Failed to upload keepalived configuration.",
                "keepalived could not be run or configured; see the amphora agent's log",
            ),
        )
        .body("vrrp_instance vrrp_group_1 {\n}\n"),
        case(
            Method::PUT,
            v1::VRRP_UPLOAD,
            v1::VRRP_UPLOAD,
            500,
            msg_details("Failed to upload keepalived configuration.", "the configuration is not valid UTF-8"),
        )
        .body(vec![0xff]),
        case(
            Method::PUT,
            v1::VRRP_ACTION,
            v1::vrrp_action(amphora_proto::Action::Start),
            500,
            msg_details("Failed to start keepalived service", "no keepalived configuration has been uploaded"),
        ),
        case(
            Method::PUT,
            v1::VRRP_ACTION,
            "/1.0/vrrp/BAD_TEST_DATA",
            400,
            msg_details("Invalid Request", "Unknown action: BAD_TEST_DATA"),
        ),
        case(
            Method::PUT,
            v1::AGENT_CONFIG,
            v1::AGENT_CONFIG,
            500,
            msg_details(
                "Unable to update amphora-agent configuration.",
                "[haproxy_amphora] bind_port = \"lots\": expected an integer from 0 to 65535",
            ),
        )
        .body("[haproxy_amphora]\nbind_port = lots\n"),
        case(
            Method::PUT,
            v1::AGENT_CONFIG,
            v1::AGENT_CONFIG,
            500,
            msg_details("Unable to update amphora-agent configuration.", "the configuration is not valid UTF-8"),
        )
        .body(vec![0xff]),
        case(Method::PUT, v1::LB_CERTIFICATE, v1::lb_certificate(LB, PEM), 400, msg("No certificate found"))
            .body("junk"),
        case(
            Method::PUT,
            v1::LB_CERTIFICATE,
            v1::lb_certificate(LB, "cert.txt"),
            400,
            msg_details(
                "Filename has wrong format",
                "\"cert.txt\" is not a certificate file name (letters, digits, '.', '-', '_', ending in .pem)",
            ),
        ),
        case(
            Method::PUT,
            v1::LB_CERTIFICATE,
            v1::lb_certificate(LB, PEM),
            500,
            msg_details("Internal Server Error", "see the amphora agent's log"),
        )
        .body(Pki::new("x").server.combined_pem())
        .after(Setup::CertDirBlocked),
        case(
            Method::GET,
            v1::LB_CERTIFICATE,
            v1::lb_certificate(LB, PEM),
            404,
            msg_details("Certificate Not Found", format!("No certificate with file name: {PEM}")),
        ),
        case(Method::DELETE, v1::LB_CERTIFICATE, v1::lb_certificate(LB, PEM), 200, msg("OK")),
    ]
}

/// haproxy's own words, naming the file but not where the agent keeps it.
fn check_haproxy_rejection(fixture: &Fixture, v: &Value) {
    assert_eq!(v["message"], "Invalid request");
    let details = v["details"].as_str().expect("details");
    assert!(details.contains("[ALERT]") && details.contains("BAD_LINE"), "{details}");
    assert_no_leak(fixture, details);
}

fn v0_1_cases() -> Vec<Case> {
    let no_listener = || msg_details("Listener Not Found", format!("No listener with UUID: {LB}"));
    vec![
        case(
            Method::GET,
            v0_1::TOPOLOGY,
            v0_1::TOPOLOGY,
            200,
            Expect::JsonCheck(|f, v| {
                assert_eq!(
                    v,
                    &json!({"hostname": hostname(), "uuid": f.amphora_id, "topology": "SINGLE", "role": "ACTIVE",
                            "ha_ip": "", "topology_status": "OK"})
                );
            }),
        ),
        case(
            Method::POST,
            v0_1::TOPOLOGY,
            v0_1::TOPOLOGY,
            400,
            msg_details("Invalid request", "Unknown topology: BAD_TEST_DATA"),
        )
        .body(r#"{"topology": "BAD_TEST_DATA"}"#),
        case(Method::POST, v0_1::TOPOLOGY, v0_1::TOPOLOGY, 200, msg("OK")).body(r#"{"topology": "SINGLE"}"#),
        case(Method::GET, v0_1::INFO, v0_1::INFO, 200, Expect::JsonCheck(|f, v| check_info(f, v, "0.1"))),
        case(Method::GET, v0_1::DETAILS, v0_1::DETAILS, 200, Expect::JsonCheck(|f, v| check_details(f, v, "0.1"))),
        case(Method::GET, v0_1::LISTENERS, v0_1::LISTENERS, 200, Expect::Json(json!([]))),
        case(
            Method::GET,
            v0_1::LISTENER,
            v0_1::listener(LB),
            404,
            msg_details("Listener Not Found", format!("No listener with UUID: {LB}")),
        ),
        case(Method::DELETE, v0_1::LISTENER, v0_1::listener(LB), 404, no_listener()),
        case(Method::DELETE, v0_1::LISTENER, v0_1::listener(LB), 200, msg("OK")).after(Setup::StoredLb),
        case(
            Method::PUT,
            v0_1::LISTENER_ACTION,
            v0_1::listener_action(LB, amphora_proto::Action::Stop),
            404,
            no_listener(),
        ),
        case(
            Method::PUT,
            v0_1::LISTENER_ACTION,
            format!("/v0.1/listeners/{LB}/BAD_TEST_DATA"),
            400,
            msg_details("Invalid Request", "Unknown action: BAD_TEST_DATA"),
        ),
        case(
            Method::PUT,
            v0_1::LISTENER_CONFIG,
            v0_1::listener_config(LB),
            400,
            Expect::JsonCheck(check_haproxy_rejection),
        )
        .body("global\nBAD_LINE\n"),
        case(Method::GET, v0_1::LISTENER_CONFIG, v0_1::listener_config(LB), 404, no_listener()),
        case(Method::PUT, v0_1::LISTENER_CERTIFICATE, v0_1::listener_certificate(LB, PEM), 404, no_listener())
            .body(Pki::new("x").server.combined_pem()),
        case(
            Method::PUT,
            v0_1::LISTENER_CERTIFICATE,
            v0_1::listener_certificate(LB, PEM),
            400,
            msg("No certificate found"),
        )
        .body("junk")
        .after(Setup::StoredLb),
        case(Method::GET, v0_1::LISTENER_CERTIFICATE, v0_1::listener_certificate(LB, PEM), 404, no_listener()),
        case(
            Method::DELETE,
            v0_1::LISTENER_CERTIFICATE,
            v0_1::listener_certificate(LB, PEM),
            404,
            msg_details("Certificate Not Found", format!("No certificate with file name: {PEM}")),
        ),
        case(
            Method::POST,
            v0_1::PLUG_VIP,
            v0_1::plug_vip("nonsense"),
            400,
            msg_details("Invalid VIP", "\"nonsense\" is not an IP address"),
        ),
        case(Method::POST, v0_1::PLUG_NETWORK, v0_1::PLUG_NETWORK, 0, discovered_network()),
        case(Method::POST, v0_1::PLUG_NETWORK_SLASH, v0_1::PLUG_NETWORK_SLASH, 0, discovered_network()),
    ]
}

/// `POST /v0.1/plug/network` plugs the one unplugged port of the host: no
/// such port, several, or one (then refused, with no namespace here).
fn discovered_network() -> Expect {
    Expect::HostDependent(|status, body| match status {
        404 => assert_eq!(
            body,
            &json!({"message": "No suitable network interface found",
                    "details": "No suitable network interface found (no unplugged port)"})
        ),
        400 => {
            assert_eq!(body["message"], "More than one interface could be plugged");
            let details = body["details"].as_str().expect("details");
            assert!(
                details.starts_with("unplugged ports: ") && details.ends_with("; use the 1.0 API, which names the MAC"),
                "{details}"
            );
        }
        500 => assert_eq!(
            body,
            &json!({"message": "Error plugging Port", "details": "the agent runs without an amphora network namespace"})
        ),
        other => panic!("unexpected {other}: {body}"),
    })
}

fn appliance_cases() -> Vec<Case> {
    vec![
        case(
            Method::GET,
            appliance::STATUS,
            appliance::STATUS,
            200,
            Expect::JsonCheck(|_, v| {
                assert_eq!(v["hostname"], hostname());
                assert_eq!((&v["haproxy_count"], &v["stunnel_count"]), (&json!("0"), &json!("0")));
                assert_eq!(v["fencing_daemon_status"], "N/A");
            }),
        ),
        case(Method::GET, appliance::SERVICE_STATUS, appliance::SERVICE_STATUS, 200, text("")),
        case(Method::GET, appliance::INSTANCES, appliance::INSTANCES, 200, text("")),
        case(Method::GET, appliance::INSTANCES, appliance::INSTANCES, 200, text(format!("{LB}\n")))
            .after(Setup::StoredLb),
        case(Method::GET, appliance::INSTANCE, appliance::instance(LB), 404, text("Not Found\n")),
        case(Method::GET, appliance::INSTANCE, appliance::instance("a.b"), 404, text("Not Found\n")),
        case(Method::GET, appliance::INSTANCE, appliance::instance(LB), 200, text("OK\n")).after(Setup::StoredLb),
        case(Method::DELETE, appliance::INSTANCE, appliance::instance(LB), 404, text("Not Found\n")),
        case(Method::DELETE, appliance::INSTANCE, appliance::instance(LB), 200, text("OK\n")).after(Setup::StoredLb),
        case(
            Method::PUT,
            appliance::INSTANCE_CERTIFICATE,
            appliance::instance_certificate(LB, PEM),
            409,
            text("No certificate found\n"),
        )
        .body("junk"),
        case(
            Method::PUT,
            appliance::INSTANCE_CERTIFICATE,
            appliance::instance_certificate(LB, PEM),
            409,
            text("No RSA key found\n"),
        )
        .body(Pki::new("x").server.cert_pem),
        case(
            Method::PUT,
            appliance::INSTANCE_CERTIFICATE,
            appliance::instance_certificate(LB, "cert.txt"),
            409,
            text("Filename has wrong format\n"),
        ),
        case(Method::PUT, appliance::INSTANCE_CERTIFICATE, appliance::instance_certificate(LB, PEM), 201, text("OK\n"))
            .body(Pki::new("x").server.combined_pem()),
        case(
            Method::PUT,
            appliance::INSTANCE_CERTIFICATE,
            appliance::instance_certificate(LB, PEM),
            500,
            text("Internal Server Error\n"),
        )
        .body(Pki::new("x").server.combined_pem())
        .after(Setup::CertDirBlocked),
    ]
}

#[tokio::test]
async fn common_routes_answer_as_specified() {
    run(common_cases()).await;
}

#[tokio::test]
async fn v1_routes_answer_as_specified() {
    run(v1_cases()).await;
}

#[tokio::test]
async fn v0_1_routes_answer_as_specified() {
    run(v0_1_cases()).await;
}

#[tokio::test]
async fn appliance_routes_answer_as_specified() {
    run(appliance_cases()).await;
}

/// Unknown paths and methods: JSON for the versioned APIs (upstream's
/// controller takes a non-JSON 404 for an agent not yet up), the
/// appliance's 403 on its own paths.
#[tokio::test]
async fn unknown_paths_and_methods_are_refused_in_each_dialect() {
    let fixture = Fixture::new().await;
    let answer = fixture.call(&Method::GET, "/nope", Vec::new()).await;
    assert_eq!(
        (answer.status.as_u16(), answer.json()),
        (404, json!({"message": "Not Found", "details": "No such resource: GET /nope"}))
    );
    for (method, path) in [(Method::PATCH, v1::INFO), (Method::DELETE, v0_1::TOPOLOGY), (Method::POST, paths::ROOT)] {
        let answer = fixture.call(&method, path, Vec::new()).await;
        assert_eq!(
            (answer.status.as_u16(), answer.json()),
            (405, json!({"message": "Method Not Allowed", "details": format!("{method} is not allowed on {path}")})),
        );
    }
    for (method, path) in [(Method::POST, appliance::STATUS.to_owned()), (Method::PUT, appliance::instance(LB))] {
        let answer = fixture.call(&method, &path, Vec::new()).await;
        assert_eq!(answer.status, StatusCode::FORBIDDEN);
        assert_eq!(answer.body, format!("Invalid Request: {method} {path}\n"));
    }
}

/// While the topology changes (the transition task has not run yet: this
/// test's runtime has one thread, and nothing below yields to it), every
/// mutating call is refused as the specification says; reads go on.
#[tokio::test(flavor = "current_thread")]
async fn a_topology_transition_holds_mutating_calls() {
    let fixture = Fixture::new().await;
    let answer = fixture
        .call(
            &Method::POST,
            v0_1::TOPOLOGY,
            br#"{"topology": "ACTIVE-STANDBY", "role": "STANDBY", "ha_ip": "203.0.113.2", "secret": "b20e06cf1a"}"#
                .to_vec(),
        )
        .await;
    assert_eq!((answer.status.as_u16(), answer.json()), (202, json!({"message": "OK"})));
    for (method, path) in [
        (Method::PUT, v1::lb_action(LB, amphora_proto::Action::Start)),
        (Method::PUT, v1::VRRP_UPLOAD.to_owned()),
        (Method::DELETE, v0_1::listener(LB)),
        (Method::POST, v0_1::TOPOLOGY.to_owned()),
    ] {
        let answer = fixture.call(&method, &path, Vec::new()).await;
        let expected = (503, json!({"message": "Topology transition in progress"}));
        assert_eq!((answer.status.as_u16(), answer.json()), expected, "{method} {path}");
    }
    assert_eq!(fixture.call(&Method::GET, v1::LISTENERS, Vec::new()).await.status, StatusCode::OK);
}

/// A stored configuration and certificate come back as they were sent,
/// with the ETag the client compares (upstream: an MD5 of the bytes).
#[tokio::test]
async fn stored_files_come_back_with_their_md5() {
    let fixture = Fixture::new().await;
    fixture.store_lb(LB).await;
    let config = fixture.lb_config(LB);
    let answer = fixture.call(&Method::GET, &v1::lb_config(LB), Vec::new()).await;
    assert_eq!((answer.status, answer.body.as_str()), (StatusCode::OK, config.as_str()));
    assert_eq!(answer.etag.as_deref(), Some(md5_hex(config.as_bytes()).as_str()));

    let pem = fixture.pem();
    let md5 = md5_hex(pem.as_bytes());
    let answer = fixture.call(&Method::PUT, &v1::lb_certificate(LB, PEM), pem.clone().into_bytes()).await;
    assert_eq!((answer.status.as_u16(), answer.json()), (200, json!({"message": "OK"})));
    assert_eq!(answer.etag.as_deref(), Some(md5.as_str()));
    let answer = fixture.call(&Method::GET, &v0_1::listener_certificate(LB, PEM), Vec::new()).await;
    assert_eq!((answer.status.as_u16(), answer.json()), (200, json!({"md5sum": md5})));
}

fn md5_hex(bytes: &[u8]) -> String {
    use md5::{Digest, Md5};
    Md5::digest(bytes).iter().map(|b| format!("{b:02x}")).collect()
}

/// The kinds' statuses in each dialect, and each dialect's body shape.
#[test]
fn each_dialect_renders_every_kind() {
    let kinds = [
        (Kind::NotFound, 404, 404),
        (Kind::Invalid, 400, 409),
        (Kind::Conflict, 409, 409),
        (Kind::Unavailable, 503, 503),
        (Kind::Internal, 500, 500),
        (Kind::MethodNotAllowed, 405, 403),
        (Kind::TooLarge, 413, 413),
        (Kind::TimedOut, 408, 408),
    ];
    for (kind, json_status, appliance_status) in kinds {
        let error = ApiError::new(kind, "words").with_details("more");
        assert_eq!(render_1_0(&error).status().as_u16(), json_status, "{kind:?}");
        assert_eq!(render_0_1(&error).status().as_u16(), json_status, "{kind:?}");
        assert_eq!(render_appliance(&error).status().as_u16(), appliance_status, "{kind:?}");
    }
    let id = LbId::parse(LB).expect("id");
    let missing = ApiError::lb_not_found(&id);
    let body = |response: axum::response::Response| async move {
        let bytes = axum::body::to_bytes(response.into_body(), usize::MAX).await.expect("body");
        String::from_utf8(bytes.to_vec()).expect("UTF-8")
    };
    let runtime = tokio::runtime::Builder::new_current_thread().build().expect("runtime");
    runtime.block_on(async {
        let v1: Value = serde_json::from_str(&body(render_1_0(&missing)).await).expect("JSON");
        assert_eq!(
            v1,
            json!({"message": "Loadbalancer Not Found", "details": format!("No loadbalancer with UUID: {LB}")})
        );
        let v0_1: Value = serde_json::from_str(&body(render_0_1(&missing)).await).expect("JSON");
        assert_eq!(v0_1, json!({"message": "Listener Not Found", "details": format!("No listener with UUID: {LB}")}));
        assert_eq!(body(render_appliance(&missing)).await, "Loadbalancer Not Found\n");
        let on_action: Value =
            serde_json::from_str(&body(render_1_0(&missing.clone().on_action_route())).await).expect("JSON");
        assert_eq!(on_action["message"], "Listener Not Found");
    });
}

/// Every `pub const` path template of `amphora_proto::paths`, read from
/// its source so that a new one cannot escape the check below.
fn all_templates() -> Vec<&'static str> {
    const SOURCE: &str = include_str!(concat!(env!("CARGO_MANIFEST_DIR"), "/../amphora-proto/src/paths.rs"));
    let templates: Vec<&str> = SOURCE
        .lines()
        .filter_map(|line| line.trim().strip_prefix("pub const ")?.split_once(": &str = \"")?.1.strip_suffix("\";"))
        .collect();
    assert!(templates.len() > 30, "too few path templates found: {templates:?}");
    templates
}

/// Whether the router sent the request to a route (rather than answering
/// for an unknown path or method).
fn routed(answer: &Answer) -> bool {
    let unknown_path = answer.status == StatusCode::NOT_FOUND && answer.body.contains("No such resource");
    let unknown_method = answer.status == StatusCode::METHOD_NOT_ALLOWED
        || (answer.status == StatusCode::FORBIDDEN && answer.body.starts_with("Invalid Request: "));
    !(unknown_path || unknown_method)
}

/// Every `(method, template)` the router serves, probing it with every
/// path template of `amphora_proto::paths` and every method. A path that
/// one of `known`'s routes of the same method also matches is that route's
/// ("/1.0/loadbalancer/x/haproxy" is also an action path).
async fn served_routes(known: &BTreeSet<(String, &'static str)>) -> BTreeSet<(String, &'static str)> {
    let fixture = Fixture::new().await;
    let methods = [Method::GET, Method::PUT, Method::POST, Method::DELETE, Method::PATCH];
    let mut served = BTreeSet::new();
    for template in all_templates() {
        // The values name no real object; what a probe changes stays in
        // this test's temporary directory.
        let path = paths::fill(template, &["probe", "probe", "probe"]);
        for method in &methods {
            let this = (method.to_string(), template);
            let served_by_other = !known.contains(&this)
                && known.iter().any(|(m, t)| m == method.as_str() && *t != template && paths::matches(t, &path));
            let answer = fixture.call(method, &path, Vec::new()).await;
            if routed(&answer) && !served_by_other {
                served.insert(this);
            }
        }
    }
    served
}

#[tokio::test]
async fn the_route_table_is_the_tested_one() {
    let cases: Vec<Case> =
        [common_cases(), v1_cases(), v0_1_cases(), appliance_cases()].into_iter().flatten().collect();
    let tested: BTreeSet<(String, &str)> = cases.iter().map(|c| (c.method.to_string(), c.route)).collect();
    let served = served_routes(&tested).await;
    let untested: Vec<_> = served.difference(&tested).collect();
    let unserved: Vec<_> = tested.difference(&served).collect();
    assert!(
        untested.is_empty() && unserved.is_empty(),
        "routes without a test: {untested:?}; tested routes the router does not serve: {unserved:?}"
    );
}

/// The OpenAPI document (`http::openapi`) against the router, both ways.
#[tokio::test]
async fn every_served_route_has_an_openapi_operation_and_every_operation_is_served() {
    let documented: BTreeSet<(String, &str)> =
        super::openapi::OPERATIONS.iter().map(|o| (o.method.to_uppercase(), o.path)).collect();
    assert_eq!(documented.len(), super::openapi::OPERATIONS.len(), "an operation is documented twice");
    let served = served_routes(&documented).await;
    let undocumented: Vec<_> = served.difference(&documented).collect();
    let unserved: Vec<_> = documented.difference(&served).collect();
    assert!(
        undocumented.is_empty() && unserved.is_empty(),
        "routes without an OpenAPI operation: {undocumented:?}; documented operations the router does not serve: \
         {unserved:?}"
    );
}

/// dpkg's way of changing its database: a new file renamed over the old.
fn install_dpkg_status(path: &Path, haproxy: &str) {
    let staged = path.with_extension("new");
    let text = format!("Package: haproxy\nStatus: install ok installed\nVersion: {haproxy}\n");
    std::fs::write(&staged, text).expect("write the status file");
    std::fs::rename(&staged, path).expect("install the status file");
}

/// `/info` is served from a body kept between requests: the same bytes
/// while nothing changes, and a package upgrade still shows.
#[tokio::test]
async fn info_follows_a_package_upgrade() {
    let packages = tempfile::tempdir().expect("temp dir");
    let status = packages.path().join("status");
    install_dpkg_status(&status, "2.6.12-1");
    let fixture = Fixture::with_packages(Some(status.clone())).await;
    let first = fixture.call(&Method::GET, v1::INFO, Vec::new()).await;
    assert_eq!(first.status, StatusCode::OK);
    assert!(first.content_type.starts_with("application/json"), "{}", first.content_type);
    let info: Value = serde_json::from_str(&first.body).expect("JSON");
    assert_eq!(info["haproxy_version"], "2.6.12-1");
    check_info(&fixture, &info, "1.0");
    assert_eq!(fixture.call(&Method::GET, paths::INFO, Vec::new()).await.body, first.body);

    install_dpkg_status(&status, "2.8.5-1");
    amphora_testkit::wait::until("the upgrade to show in /info", std::time::Duration::from_secs(10), || async {
        let answer = fixture.call(&Method::GET, v1::INFO, Vec::new()).await;
        let info: Value = serde_json::from_str(&answer.body).expect("JSON");
        (info["haproxy_version"] == "2.8.5-1").then_some(())
    })
    .await;
}
