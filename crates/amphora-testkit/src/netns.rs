//! Network namespaces for tests: unique names, and a runtime whose threads
//! live inside a namespace so the sockets its tasks open are there too.

use std::fs::File;
use std::sync::atomic::{AtomicUsize, Ordering};

use nix::sched::CloneFlags;

fn ip(args: &[&str]) {
    let status = std::process::Command::new("ip").args(args).status().expect("run ip");
    assert!(status.success(), "ip {} failed", args.join(" "));
}

/// A name no other test (or test process) uses.
pub fn unique_name(prefix: &str) -> String {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    format!("{prefix}-{}-{}", std::process::id(), NEXT.fetch_add(1, Ordering::SeqCst))
}

/// Creates a namespace with loopback up.
pub fn create(name: &str) {
    ip(&["netns", "add", name]);
    ip(&["-n", name, "link", "set", "lo", "up"]);
}

/// Runs `ip -n {name} {args}`, panicking on failure.
pub fn ip_in(name: &str, args: &[&str]) {
    let mut all = vec!["-n", name];
    all.extend_from_slice(args);
    ip(&all);
}

/// Sets a sysctl inside a namespace.
pub fn sysctl_in(name: &str, key: &str, value: &str) {
    let status = std::process::Command::new("ip")
        .args(["netns", "exec", name, "sysctl", "-q", "-w", &format!("{key}={value}")])
        .status()
        .expect("run sysctl");
    assert!(status.success(), "sysctl {key}={value} in {name}");
}

/// A veth pair: `outer` in namespace `outer_ns`, `inner` in `inner_ns`
/// with MAC `inner_mac` (left down: whoever plugs it configures it).
pub fn veth(outer_ns: &str, outer: &str, inner_ns: &str, inner: &str, inner_mac: &str) {
    ip_in(
        outer_ns,
        &["link", "add", outer, "type", "veth", "peer", "name", inner, "address", inner_mac, "netns", inner_ns],
    );
    ip_in(outer_ns, &["link", "set", outer, "up"]);
}

/// Opens a TCP connection from inside a namespace (the socket stays there).
pub async fn tcp_connect_in(name: &str, addr: std::net::SocketAddr) -> std::io::Result<tokio::net::TcpStream> {
    let path = format!("/run/netns/{name}");
    let stream = tokio::task::spawn_blocking(move || {
        std::thread::scope(|scope| {
            scope
                .spawn(|| {
                    let file = File::open(&path)?;
                    nix::sched::setns(&file, CloneFlags::CLONE_NEWNET)?;
                    let stream = std::net::TcpStream::connect_timeout(&addr, std::time::Duration::from_secs(10))?;
                    stream.set_nonblocking(true)?;
                    Ok::<_, std::io::Error>(stream)
                })
                .join()
                .map_err(|_| std::io::Error::other("thread panicked"))?
        })
    })
    .await
    .map_err(std::io::Error::other)??;
    tokio::net::TcpStream::from_std(stream)
}

/// Removes a namespace; missing is fine.
pub fn delete(name: &str) {
    let _ =
        std::process::Command::new("ip").args(["netns", "delete", name]).stderr(std::process::Stdio::null()).status();
}

/// A tokio runtime all of whose threads are inside a network namespace.
#[derive(Debug)]
pub struct NsRuntime {
    runtime: Option<tokio::runtime::Runtime>,
}

impl NsRuntime {
    /// Builds the runtime on a thread that first enters `/run/netns/{name}`;
    /// the worker threads it spawns inherit the namespace.
    pub fn new(name: &str) -> Self {
        let path = format!("/run/netns/{name}");
        let runtime = std::thread::spawn(move || {
            let file = File::open(&path).unwrap_or_else(|e| panic!("open {path}: {e}"));
            nix::sched::setns(&file, CloneFlags::CLONE_NEWNET).expect("setns");
            tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime")
        })
        .join()
        .expect("namespace runtime thread");
        Self { runtime: Some(runtime) }
    }

    pub fn handle(&self) -> &tokio::runtime::Handle {
        self.runtime.as_ref().expect("runtime").handle()
    }

    /// Runs a future inside the namespace.
    pub fn spawn<F>(&self, future: F) -> tokio::task::JoinHandle<F::Output>
    where
        F: std::future::Future + Send + 'static,
        F::Output: Send + 'static,
    {
        self.handle().spawn(future)
    }
}

impl Drop for NsRuntime {
    fn drop(&mut self) {
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

/// A second namespace joined to an existing one by a veth pair, with
/// `10.99.0.1/24` on the existing side and `10.99.0.2/24` on the peer side
/// (the addresses live in the two private namespaces only). Removed on drop.
#[derive(Debug)]
pub struct PeerNamespace {
    pub name: String,
    /// The interface name on the existing namespace's side.
    pub local_interface: String,
}

impl PeerNamespace {
    pub const LOCAL_ADDRESS: &'static str = "10.99.0.1";
    pub const PEER_ADDRESS: &'static str = "10.99.0.2";

    pub fn attach(existing: &str) -> Self {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let name = unique_name("amppeer");
        // Interface names are limited to 15 characters.
        let tag = format!("{:x}{}", std::process::id() % 0xfffff, NEXT.fetch_add(1, Ordering::SeqCst));
        let (local, remote) = (format!("va{tag}"), format!("vb{tag}"));
        ip(&["netns", "add", &name]);
        ip(&["link", "add", &local, "netns", existing, "type", "veth", "peer", "name", &remote, "netns", &name]);
        ip(&["-n", existing, "addr", "add", &format!("{}/24", Self::LOCAL_ADDRESS), "dev", &local]);
        ip(&["-n", existing, "link", "set", &local, "up"]);
        ip(&["-n", &name, "addr", "add", &format!("{}/24", Self::PEER_ADDRESS), "dev", &remote]);
        ip(&["-n", &name, "link", "set", &remote, "up"]);
        ip(&["-n", &name, "link", "set", "lo", "up"]);
        Self { name, local_interface: local }
    }
}

impl Drop for PeerNamespace {
    fn drop(&mut self) {
        // Deleting the namespace deletes its veth end and so the pair.
        delete(&self.name);
    }
}
