//! The measurements, run identically against each agent.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use amphora_testkit::client::{AgentClient, TlsVersions, client_config};
use amphora_testkit::netns::NsRuntime;
use amphora_testkit::traffic::{get_once, serve_http};
use amphora_testkit::{Pki, wait};
use bytes::Bytes;

use crate::load::{self, Throughput, median};
use crate::target::{Kind, Launchers, Target, request};

const LB: &str = "b3a1d2c4-5e6f-4a7b-8c9d-0e1f2a3b4c5d";
const BACKEND_PORT: u16 = 9999;
const FIRST_FRONTEND_PORT: u16 = 10000;

pub const LOAD_GENERATOR_NOTE: &str = "Load generator: `amphora-bench` itself (Rust, tokio, rustls, \
one kept-alive HTTP/1.1 connection per client, reconnecting when the server closes it). It shares the \
machine's cores with the agent under test; its ceiling is the \"load generator ceiling\" row (the same \
clients against a trivial in-process mTLS server answering a fixed JSON body).";

#[derive(Debug, Clone, Copy)]
pub struct Measure {
    pub rounds: usize,
    pub duration: Duration,
    pub listeners: usize,
    pub reloads: u32,
}

#[derive(Debug, Default)]
pub struct Figures {
    pub cold_start_ms: Option<f64>,
    pub idle_rss_kib: Option<f64>,
    pub idle_pss_kib: Option<f64>,
    pub idle_processes: usize,
    /// (path, clients, result)
    pub throughput: Vec<(&'static str, usize, Throughput)>,
    pub ceiling: Option<Throughput>,
    pub haproxy_check_ms: Option<f64>,
    pub config_put_ms: Option<f64>,
    /// Fastest of each: the systematic cost without the machine's noise.
    pub haproxy_check_min_ms: Option<f64>,
    pub config_put_min_ms: Option<f64>,
    pub reload_accepted_ms: Option<f64>,
    pub reload_serving_ms: Option<f64>,
    /// (failed requests, total requests)
    pub reload_under_load: Option<(u64, u64)>,
    pub notes: Vec<String>,
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

pub async fn measure(kind: Kind, launchers: &Launchers, m: &Measure) -> Figures {
    let mut figures = Figures::default();
    let mut starts = Vec::new();
    let mut memory = Vec::new();
    let mut proportional = Vec::new();
    for round in 0..m.rounds {
        let mut target = match Target::launch(kind, launchers) {
            Ok(target) => target,
            Err(e) => {
                figures.notes.push(format!("cannot launch: {e:#}"));
                return figures;
            }
        };
        let client = target.client();
        match target.wait_ready(Duration::from_secs(120)).await {
            Ok(elapsed) => starts.push(ms(elapsed)),
            Err(e) => {
                figures.notes.push(format!("did not start: {e:#}"));
                target.stop(&client, &[]).await;
                return figures;
            }
        }
        for path in ["/1.0/info", "/1.0/details", "/1.0/listeners"] {
            for _ in 0..5 {
                let _ = request(&client, "GET", path, Bytes::new()).await;
            }
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
        let used = target.memory_kib();
        memory.push(used.rss_kib as f64);
        proportional.push(used.pss_kib as f64);
        figures.idle_processes = used.processes;

        if round + 1 == m.rounds {
            for path in ["/1.0/info", "/1.0/details"] {
                for clients in [1, 8] {
                    let result = load::run(|| target.client(), path, clients, m.duration).await;
                    if result.errors > 0 {
                        figures
                            .notes
                            .push(format!("GET {path} with {clients} client(s): {} failed requests", result.errors));
                    }
                    figures.throughput.push((path, clients, result));
                }
            }
            if let Err(e) = load_balancer_scenarios(&target, &client, m, &mut figures).await {
                figures.notes.push(format!("load balancer scenarios: {e:#}"));
            }
        }
        target.stop(&client, &[LB]).await;
    }
    figures.cold_start_ms = Some(median(&mut starts));
    figures.idle_rss_kib = Some(median(&mut memory));
    figures.idle_pss_kib = Some(median(&mut proportional));
    if kind == Kind::Ours {
        figures.ceiling = Some(ceiling(m.duration).await);
    }
    figures
}

/// An Octavia-shaped configuration with `listeners` HTTP listeners, each
/// tagging its responses with `version`.
pub fn large_config(target: &Target, listeners: usize, version: u32) -> String {
    let mut text = format!(
        "# Configuration for loadbalancer {LB}\nglobal\n    daemon\n    user nobody\n    group nogroup\n    \
         stats socket {base}/{LB}.sock mode 0666 level user\n    maxconn 4000\n\n\
         defaults\n    retries 3\n    option redispatch\n    option splice-request\n    option splice-response\n    \
         option http-keep-alive\n\n",
        base = target.base_path.display()
    );
    for i in 0..listeners {
        let listener = format!("{i:08x}-1111-4222-8333-444444444444");
        let pool = format!("{i:08x}-5555-4666-8777-888888888888");
        text.push_str(&format!(
            "frontend {listener}\n    maxconn 4000\n    bind 127.0.0.1:{port}\n    mode http\n    \
             http-response set-header X-Config-Version {version}\n    default_backend {pool}:{listener}\n    \
             timeout client 50000\n\n\
             backend {pool}:{listener}\n    mode http\n    balance roundrobin\n    fullconn 4000\n    \
             option allbackups\n    timeout connect 5000\n    timeout server 50000\n    \
             server {pool}-m1 127.0.0.1:{BACKEND_PORT} weight 1\n    server {pool}-m2 127.0.0.1:{BACKEND_PORT} weight 1\n\n",
            port = FIRST_FRONTEND_PORT as usize + i,
        ));
    }
    text
}

async fn put(client: &AgentClient, path: &str, body: String) -> anyhow::Result<Duration> {
    let started = Instant::now();
    let reply = request(client, "PUT", path, Bytes::from(body)).await?;
    let elapsed = started.elapsed();
    anyhow::ensure!(reply.status == 202, "PUT {path}: {} {}", reply.status, reply.text());
    Ok(elapsed)
}

async fn load_balancer_scenarios(
    target: &Target,
    client: &AgentClient,
    m: &Measure,
    figures: &mut Figures,
) -> anyhow::Result<()> {
    // `haproxy -c` alone on the same file, with the same arguments, taken
    // alternately with the uploads so drift in machine speed hits both.
    let check_file = target.dir.path().join("check.cfg");
    let group_file = target.dir.path().join("group.cfg");
    std::fs::write(&group_file, "global\n    group nogroup\n")?;
    let upload = target.upload_path(LB);
    let mut checks = Vec::new();
    let mut puts = Vec::new();
    for version in 1..=40 {
        let config = large_config(target, m.listeners, version);
        std::fs::write(&check_file, config.replace("    group nogroup\n", ""))?;
        let started = Instant::now();
        let status = tokio::process::Command::new("/usr/sbin/haproxy")
            .arg("-c")
            .arg("-f")
            .arg(&check_file)
            .arg("-f")
            .arg(&group_file)
            .args(["-L", "benchpeer"])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status()
            .await?;
        anyhow::ensure!(status.success(), "haproxy -c rejected the benchmark configuration");
        checks.push(ms(started.elapsed()));
        puts.push(ms(put(client, &upload, config).await?));
    }
    figures.haproxy_check_min_ms = checks.iter().copied().reduce(f64::min);
    figures.config_put_min_ms = puts.iter().copied().reduce(f64::min);
    figures.haproxy_check_ms = Some(median(&mut checks));
    figures.config_put_ms = Some(median(&mut puts));

    // Traffic runs inside the agent's namespace.
    let ns = NsRuntime::new(&target.namespace);
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    ns.spawn(async move {
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", BACKEND_PORT)).await.expect("backend");
        let _ = ready_tx.send(());
        serve_http(listener, "{\"backend\": true}").await;
    });
    ready_rx.recv_timeout(Duration::from_secs(10))?;
    let frontend = SocketAddr::from(([127, 0, 0, 1], FIRST_FRONTEND_PORT));

    put(client, &format!("/1.0/loadbalancer/{LB}/start"), String::new()).await?;
    let mut accepted = Vec::new();
    let mut serving = Vec::new();
    for version in 11..=15u32 {
        put(client, &upload, large_config(target, m.listeners, version)).await?;
        let started = Instant::now();
        put(client, &format!("/1.0/loadbalancer/{LB}/reload"), String::new()).await?;
        accepted.push(ms(started.elapsed()));
        let expected = version.to_string();
        let handle = ns.handle().clone();
        wait::until("the new configuration to serve", Duration::from_secs(60), || {
            let handle = handle.clone();
            let expected = expected.clone();
            async move {
                let response = handle.spawn(get_once(frontend)).await.ok()?.ok()?;
                (response.header("x-config-version") == Some(expected.as_str())).then_some(())
            }
        })
        .await;
        serving.push(ms(started.elapsed()));
    }
    figures.reload_accepted_ms = Some(median(&mut accepted));
    figures.reload_serving_ms = Some(median(&mut serving));

    let stop = Arc::new(AtomicBool::new(false));
    let failed = Arc::new(AtomicU64::new(0));
    let total = Arc::new(AtomicU64::new(0));
    let mut loads = Vec::new();
    for _ in 0..4 {
        let (stop, failed, total) = (stop.clone(), failed.clone(), total.clone());
        loads.push(ns.spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                total.fetch_add(1, Ordering::Relaxed);
                if !matches!(get_once(frontend).await, Ok(r) if r.status == 200) {
                    failed.fetch_add(1, Ordering::Relaxed);
                }
            }
        }));
    }
    let mut reload_error = None;
    for _ in 0..m.reloads {
        if let Err(e) = put(client, &format!("/1.0/loadbalancer/{LB}/reload"), String::new()).await {
            reload_error = Some(e);
            break;
        }
    }
    stop.store(true, Ordering::Relaxed);
    for load in loads {
        let _ = load.await;
    }
    if let Some(e) = reload_error {
        return Err(e);
    }
    figures.reload_under_load = Some((failed.load(Ordering::Relaxed), total.load(Ordering::Relaxed)));
    Ok(())
}

/// The load generator's own ceiling: 8 clients against a trivial
/// in-process mTLS server.
async fn ceiling(duration: Duration) -> Throughput {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};

    let pki = Pki::new("ceiling.invalid");
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    roots.add(CertificateDer::from_pem_slice(pki.client_ca.cert_pem().as_bytes()).expect("CA")).expect("root");
    let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
        .build()
        .expect("verifier");
    let chain = vec![CertificateDer::from_pem_slice(pki.server.cert_pem.as_bytes()).expect("cert")];
    let key = PrivateKeyDer::from_pem_slice(pki.server.key_pem.as_bytes()).expect("key");
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_client_cert_verifier(verifier)
        .with_single_cert(chain, key)
        .expect("server config");
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let server = tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else { continue };
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(tcp).await else { return };
                let service = hyper::service::service_fn(|_request| async {
                    Ok::<_, Infallible>(hyper::Response::new(http_body_util::Full::new(Bytes::from_static(
                        b"{\"hostname\":\"ceiling\",\"api_version\":\"1.0\"}",
                    ))))
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(tls), service)
                    .await;
            });
        }
    });
    let tls = client_config(&pki.server_ca.cert_pem(), Some(&pki.client), TlsVersions::Any);
    let result = load::run(|| AgentClient::new(addr, tls.clone(), "ceiling.invalid"), "/1.0/info", 8, duration).await;
    server.abort();
    result
}

#[derive(Debug)]
pub struct Row {
    pub name: String,
    pub ours: String,
    pub upstream: String,
    pub ratio: String,
}

fn fmt_opt(value: Option<f64>, unit: &str) -> String {
    match value {
        Some(v) if v.is_finite() => format!("{v:.1} {unit}"),
        _ => "n/a".into(),
    }
}

fn ratio(ours: Option<f64>, upstream: Option<f64>) -> String {
    match (ours, upstream) {
        (Some(o), Some(u)) if o.is_finite() && u.is_finite() && u > 0.0 => format!("{:.3}", o / u),
        _ => "n/a".into(),
    }
}

pub fn rows(ours: Option<&Figures>, upstream: Option<&Figures>) -> Vec<Row> {
    let mut rows = Vec::new();
    let mut add = |name: String, unit: &str, get: &dyn Fn(&Figures) -> Option<f64>| {
        let (o, u) = (ours.and_then(get), upstream.and_then(get));
        rows.push(Row { name, ours: fmt_opt(o, unit), upstream: fmt_opt(u, unit), ratio: ratio(o, u) });
    };
    add("cold start to first mTLS GET /1.0/info".into(), "ms", &|f| f.cold_start_ms);
    add("idle resident memory (RSS), all agent processes".into(), "MiB", &|f| f.idle_rss_kib.map(|k| k / 1024.0));
    add("idle proportional memory (PSS), all agent processes".into(), "MiB", &|f| f.idle_pss_kib.map(|k| k / 1024.0));
    add("agent processes".into(), "", &|f| Some(f.idle_processes as f64));
    for path in ["/1.0/info", "/1.0/details"] {
        for clients in [1, 8] {
            let pick =
                move |f: &Figures| f.throughput.iter().find(|(p, c, _)| *p == path && *c == clients).map(|t| t.2);
            add(format!("GET {path}, {clients} client(s): requests/s"), "/s", &|f| {
                pick(f).map(|t| t.requests_per_second)
            });
            add(format!("GET {path}, {clients} client(s): p50"), "ms", &|f| pick(f).map(|t| ms(t.p50)));
            add(format!("GET {path}, {clients} client(s): p99"), "ms", &|f| pick(f).map(|t| ms(t.p99)));
        }
    }
    add("`haproxy -c` of the large configuration".into(), "ms", &|f| f.haproxy_check_ms);
    add("PUT of the large configuration (to 202)".into(), "ms", &|f| f.config_put_ms);
    add("PUT overhead over `haproxy -c` (medians)".into(), "%", &|f| {
        Some((f.config_put_ms? / f.haproxy_check_ms? - 1.0) * 100.0)
    });
    add("PUT overhead over `haproxy -c` (fastest of each)".into(), "%", &|f| {
        Some((f.config_put_min_ms? / f.haproxy_check_min_ms? - 1.0) * 100.0)
    });
    add("reload of the large configuration: to 202".into(), "ms", &|f| f.reload_accepted_ms);
    add("reload of the large configuration: until it serves".into(), "ms", &|f| f.reload_serving_ms);
    add("failed requests during reloads".into(), "", &|f| f.reload_under_load.map(|(failed, _)| failed as f64));
    add("requests during reloads (not comparable: upstream's reloads last longer)".into(), "", &|f| {
        f.reload_under_load.map(|(_, total)| total as f64)
    });
    add("load generator ceiling, 8 clients: requests/s".into(), "/s", &|f| f.ceiling.map(|t| t.requests_per_second));
    for row in rows.iter_mut().filter(|r| r.name.contains("not comparable")) {
        row.ratio = "n/a".into();
    }
    rows
}
