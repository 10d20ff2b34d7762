//! Load balancers: the stored haproxy configuration of each, and the haproxy
//! process that serves it.
//!
//! Operations on one load balancer are serialised by a per-load-balancer
//! lock; different load balancers proceed in parallel. A rejected
//! configuration never replaces the stored one, and nothing here stops a
//! running haproxy except an explicit stop or delete. What should run is
//! recorded on disk, so a restarted agent adopts running processes and a
//! rebooted amphora starts what ran before.

use std::collections::{BTreeMap, HashMap};
use std::fs;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use amphora_proto::heartbeat::BackendStatus;
use amphora_proto::{
    ListenerDetail, ListenerProtocol, ListenerState, ListenerStatus, MemberState, PoolState, PoolStatus,
};
use nix::unistd::Pid;
use serde::{Deserialize, Serialize};

use crate::certs::{self, CertFileName, KeyRule, PemError};
use crate::daemon::{self, Daemon, Desired, Held, Record, Supervised};
use crate::fsutil;
use crate::haproxy::stats::{self, Service};
use crate::haproxy::{self, Haproxy, HaproxyError, Instance, cfg, cli, process};
use crate::ids::{AmphoraId, LbId};
pub use crate::layout::Layout;
use crate::net::NetService;
use crate::vrrp::Vrrp;

#[derive(Debug, thiserror::Error)]
pub enum LbError {
    #[error("no load balancer {0}")]
    NotFound(LbId),
    #[error("the configuration is not valid UTF-8")]
    NotUtf8,
    /// haproxy rejected the configuration; its output.
    #[error("{0}")]
    Invalid(String),
    #[error("unknown action {0:?}")]
    UnknownAction(String),
    #[error("{action} failed: {source}")]
    Action { action: Action, source: HaproxyError },
    #[error("no certificate {0}")]
    CertificateNotFound(CertFileName),
    #[error("no listener {0}")]
    ListenerNotFound(String),
    #[error(transparent)]
    Pem(#[from] PemError),
    #[error("{what}: {source}")]
    Io { what: String, source: std::io::Error },
}

fn io_error(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> LbError {
    let what = what.into();
    move |source| LbError::Io { what, source }
}

/// What `PUT /1.0/loadbalancer/{id}/{action}` may ask.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Start,
    Stop,
    Reload,
}

impl Action {
    /// Parses an action name, case-insensitively as upstream does.
    pub fn parse(raw: &str) -> Result<Self, LbError> {
        match raw.to_ascii_lowercase().as_str() {
            "start" => Ok(Action::Start),
            "stop" => Ok(Action::Stop),
            "reload" => Ok(Action::Reload),
            _ => Err(LbError::UnknownAction(raw.to_owned())),
        }
    }
}

impl std::fmt::Display for Action {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Action::Start => "start",
            Action::Stop => "stop",
            Action::Reload => "reload",
        })
    }
}

/// What an action did, for the response details.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Started,
    Stopped,
    Reloaded,
}

/// What the agent keeps beside `desired` for one load balancer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Peer {
    /// haproxy's `-L` peer name, from the amphora id of the upload URL.
    peer_name: String,
}

/// The agent's persisted record for one load balancer.
type LbRecord = Record<Peer>;

/// The haproxy of one load balancer, as a supervised daemon.
#[derive(Debug)]
struct HaproxyDaemon {
    id: LbId,
    label: String,
    layout: Layout,
    haproxy: Arc<Haproxy>,
    /// Peer name for configurations the agent did not receive itself.
    default_peer: String,
    user_group: Option<String>,
    record: PathBuf,
    config: PathBuf,
    pid_file: PathBuf,
}

impl Daemon for HaproxyDaemon {
    type Extra = Peer;
    type Error = LbError;

    fn name(&self) -> &'static str {
        "haproxy"
    }

    fn instance(&self) -> &str {
        &self.label
    }

    fn record_path(&self) -> &Path {
        &self.record
    }

    fn default_extra(&self) -> Peer {
        Peer { peer_name: self.default_peer.clone() }
    }

    fn configured(&self) -> bool {
        self.config.is_file()
    }

    fn running_pid(&self) -> Option<Pid> {
        daemon::running_daemon(&self.pid_file, &self.config)
    }

    async fn launch(&self, record: &LbRecord) -> Result<Pid, LbError> {
        ensure_haproxy_files(&self.layout, self.user_group.as_deref()).await?;
        let instance = self.layout.instance(&self.id, record.extra.peer_name.clone());
        self.haproxy.start(&instance).await.map_err(|source| LbError::Action { action: Action::Start, source })
    }

    async fn stop(&self, pid: Pid) -> Result<(), LbError> {
        self.haproxy.stop(pid).await.map_err(|source| LbError::Action { action: Action::Stop, source })
    }

    fn record_error(&self, source: std::io::Error) -> LbError {
        LbError::Io { what: format!("cannot record the state of {}", self.id), source }
    }
}

/// One load balancer's supervised haproxy; its lock serialises every
/// operation on the load balancer.
type Slot = Supervised<HaproxyDaemon>;

/// Writes the user group configuration every haproxy command reads, when
/// it is missing: someone may have emptied the state directory since the
/// agent started.
async fn ensure_haproxy_files(layout: &Layout, user_group: Option<&str>) -> Result<(), LbError> {
    let path = layout.user_group_config();
    if path.exists() {
        return Ok(());
    }
    let (target, group) = (path.clone(), user_group.map(str::to_owned));
    fsutil::blocking(move || ensure_user_group_config(&target, group.as_deref()))
        .await
        .map_err(io_error(format!("cannot write {}", path.display())))
}

/// The load balancers of this amphora.
#[derive(Debug)]
pub struct LbService {
    layout: Layout,
    haproxy: Arc<Haproxy>,
    /// Peer name for configurations the agent did not receive itself.
    default_peer: String,
    /// The group haproxy drops to (`user_group`); detected when unset.
    user_group: Option<String>,
    slots: Mutex<HashMap<LbId, Arc<Slot>>>,
    /// Advertises VIPs after haproxy starts or reloads.
    net: Option<Arc<NetService>>,
    /// Keeps keepalived's track script in step with the load balancers.
    vrrp: Option<Arc<Vrrp>>,
}

impl LbService {
    pub fn new(
        layout: Layout,
        haproxy: Haproxy,
        amphora_id: &str,
        user_group: Option<String>,
        net: Option<Arc<NetService>>,
        vrrp: Option<Arc<Vrrp>>,
    ) -> Arc<Self> {
        Arc::new(Self {
            layout,
            haproxy: Arc::new(haproxy),
            default_peer: haproxy::peer_name(amphora_id),
            user_group,
            slots: Mutex::new(HashMap::new()),
            net,
            vrrp,
        })
    }

    /// Stats sockets of the load balancers that should run: what
    /// keepalived's track script must find answering.
    pub fn wanted_stats_sockets(&self) -> Vec<PathBuf> {
        self.layout
            .load_balancers()
            .iter()
            .filter(|id| self.record(id).desired == Desired::Running)
            .filter_map(|id| self.stats_socket(id))
            .collect()
    }

    async fn load_balancers_changed(&self) {
        if let Some(vrrp) = &self.vrrp {
            vrrp.load_balancers_changed(|| self.wanted_stats_sockets()).await;
        }
    }

    /// Tells the network the load balancer's VIPs are served here.
    async fn advertise(&self, id: &LbId) {
        if let Some(net) = &self.net
            && let Ok(config) = fs::read_to_string(self.layout.config(id))
        {
            net.advertise_vips(&crate::net::bind_addresses(&config)).await;
        }
    }

    pub fn layout(&self) -> &Layout {
        &self.layout
    }

    fn slot(&self, id: &LbId) -> Arc<Slot> {
        let mut slots = self.slots.lock().unwrap_or_else(|e| e.into_inner());
        slots
            .entry(id.clone())
            .or_insert_with(|| {
                let instance = self.layout.instance(id, String::new());
                Supervised::new(HaproxyDaemon {
                    id: id.clone(),
                    label: id.to_string(),
                    layout: self.layout.clone(),
                    haproxy: self.haproxy.clone(),
                    default_peer: self.default_peer.clone(),
                    user_group: self.user_group.clone(),
                    record: self.layout.agent_state(id),
                    config: instance.config,
                    pid_file: instance.pid_file,
                })
            })
            .clone()
    }

    fn record(&self, id: &LbId) -> LbRecord {
        self.slot(id).record()
    }

    fn instance(&self, id: &LbId) -> Instance {
        self.layout.instance(id, self.record(id).extra.peer_name)
    }

    async fn ensure_haproxy_files(&self) -> Result<(), LbError> {
        ensure_haproxy_files(&self.layout, self.user_group.as_deref()).await
    }

    fn require_config(&self, id: &LbId) -> Result<(), LbError> {
        if self.layout.config(id).is_file() { Ok(()) } else { Err(LbError::NotFound(id.clone())) }
    }

    /// Validates and stores a configuration; returns its ETag (MD5 of the
    /// body as received). On rejection the stored configuration and the
    /// running haproxy are untouched and the rejected file is kept beside
    /// them as `haproxy.cfg.new-failed`.
    pub async fn upload_config(&self, amphora_id: &AmphoraId, id: &LbId, body: &[u8]) -> Result<String, LbError> {
        let slot = self.slot(id);
        let mut held = slot.lock().await;

        let text = std::str::from_utf8(body).map_err(|_| LbError::NotUtf8)?;
        let config = cfg::strip_group_lines(text);
        let dir = self.layout.lb_dir(id);
        fsutil::create_dir_all(&dir, 0o755).map_err(io_error(format!("cannot create {}", dir.display())))?;

        self.ensure_haproxy_files().await?;
        // Not synced yet: if the check fails it is only a debugging aid.
        let staged = self.layout.new_config(id);
        let file = {
            let (target, config) = (staged.clone(), config.into_bytes());
            fsutil::blocking(move || {
                let mut file =
                    fs::OpenOptions::new().write(true).create(true).truncate(true).mode(0o600).open(&target)?;
                file.write_all(&config)?;
                Ok(file)
            })
            .await
            .map_err(io_error(format!("cannot write {}", staged.display())))?
        };

        let peer_name = haproxy::peer_name(amphora_id.as_str());
        let checking = Instant::now();
        let checked = self.haproxy.check(&staged, &peer_name).await;
        tracing::debug!(lb = %id, check_ms = checking.elapsed().as_secs_f64() * 1000.0, "haproxy -c finished");
        match checked {
            Ok(()) => {}
            Err(HaproxyError::Invalid(output)) => {
                let failed = self.layout.failed_config(id);
                if let Err(e) = fs::rename(&staged, &failed) {
                    tracing::warn!(lb = %id, error = %e, "cannot keep the rejected configuration");
                }
                return Err(LbError::Invalid(output));
            }
            Err(other) => {
                let _ = fs::remove_file(&staged);
                return Err(LbError::Io {
                    what: "cannot check the configuration".into(),
                    source: std::io::Error::other(other),
                });
            }
        }
        fsutil::blocking(move || file.sync_all())
            .await
            .map_err(io_error(format!("cannot sync {}", staged.display())))?;
        fsutil::rename_durable_async(&staged, &self.layout.config(id))
            .await
            .map_err(io_error("cannot install the configuration"))?;

        let mut record = slot.record();
        let is_new = !slot.has_record();
        if is_new {
            record.desired = Desired::Stopped;
        }
        if is_new || record.extra.peer_name != peer_name {
            record.extra.peer_name = peer_name;
            held.save_record(&record).await?;
        }
        Ok(crate::etag::md5_hex(body))
    }

    /// The stored configuration and its ETag.
    pub fn config(&self, id: &LbId) -> Result<(Vec<u8>, String), LbError> {
        match fs::read(self.layout.config(id)) {
            Ok(bytes) => {
                let etag = crate::etag::md5_hex(&bytes);
                Ok((bytes, etag))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(LbError::NotFound(id.clone())),
            Err(e) => Err(io_error("cannot read the configuration")(e)),
        }
    }

    pub async fn act(&self, id: &LbId, action: Action) -> Result<Outcome, LbError> {
        let slot = self.slot(id);
        let mut held = slot.lock().await;
        self.require_config(id)?;
        let outcome = match action {
            Action::Start => held.start().await.map(|_| Outcome::Started),
            Action::Stop => self.stop_locked(id, &mut held).await.map(|()| Outcome::Stopped),
            // haproxy cannot reload what does not run; upstream starts it.
            Action::Reload => match held.reload_target() {
                None => held.start().await.map(|_| Outcome::Started),
                Some(pid) => {
                    held.ensure_supervised(pid);
                    self.ensure_haproxy_files().await?;
                    held.set_desired(Desired::Running).await?;
                    self.save_servers_state(id).await;
                    self.haproxy
                        .reload(&self.instance(id), pid)
                        .await
                        .map_err(|source| LbError::Action { action, source })?;
                    tracing::info!(lb = %id, %pid, "haproxy reloaded");
                    Ok(Outcome::Reloaded)
                }
            },
        };
        // Whatever happened, what should run may have changed.
        self.load_balancers_changed().await;
        let outcome = outcome?;
        if outcome != Outcome::Stopped {
            self.advertise(id).await;
        }
        Ok(outcome)
    }

    async fn stop_locked(&self, id: &LbId, held: &mut Held<'_, HaproxyDaemon>) -> Result<(), LbError> {
        held.stop().await?;
        fsutil::remove_file_if_exists(&self.instance(id).pid_file).map_err(io_error("cannot remove the pid file"))
    }

    /// Saves server health and weights so they survive a reload
    /// (`server-state-file`). A failure only costs that, so it is logged.
    async fn save_servers_state(&self, id: &LbId) {
        let Some(socket) = self.stats_socket(id) else { return };
        let saved = match cli::query(&socket, "show servers state").await {
            Ok(mut state) => {
                if !state.ends_with('\n') {
                    state.push('\n');
                }
                fsutil::write_atomic_async(&self.layout.servers_state(id), state.as_bytes(), 0o600).await
            }
            Err(e) => Err(e),
        };
        if let Err(e) = saved {
            tracing::warn!(lb = %id, error = %e, "cannot save the servers state before reload");
        }
    }

    fn summary(&self, id: &LbId) -> cfg::Summary {
        fs::read_to_string(self.layout.config(id)).map(|text| cfg::summarize(&text)).unwrap_or_default()
    }

    fn stats_socket(&self, id: &LbId) -> Option<PathBuf> {
        self.summary(id).stats_socket
    }

    /// Stops the load balancer and removes its configuration, stats socket
    /// and certificates. Deleting what does not exist succeeds.
    pub async fn delete(&self, id: &LbId) -> Result<(), LbError> {
        let slot = self.slot(id);
        let mut held = slot.lock().await;
        let dir = self.layout.lb_dir(id);
        if !dir.exists() {
            return Ok(());
        }
        if !self.layout.holds_load_balancer(id) {
            // Whatever it is, the agent did not put it there for a load
            // balancer: there is no load balancer to delete.
            tracing::warn!(lb = %id, path = %dir.display(), "not removing a directory that holds no load balancer");
            return Ok(());
        }
        // Supervisors stand down, and the configuration goes before the
        // process: without it nothing starts this load balancer again (not
        // a supervisor, not a reboot), and removing it, unlike rewriting
        // the record, needs no free space.
        held.stand_down();
        fsutil::remove_file_if_exists(&self.layout.config(id)).map_err(io_error("cannot remove the configuration"))?;
        fsutil::sync_dir_async(&dir).await.map_err(io_error(format!("cannot sync {}", dir.display())))?;
        held.stop_process().await?;
        self.remove_stats_socket(id);
        fsutil::remove_dir_all_if_exists(&self.layout.cert_dir(id))
            .map_err(io_error("cannot remove the certificates"))?;
        fsutil::remove_dir_all_if_exists(&dir).map_err(io_error(format!("cannot remove {}", dir.display())))?;
        fsutil::sync_dir_async(self.layout.base_path()).await.map_err(io_error("cannot sync the state directory"))?;
        self.load_balancers_changed().await;
        tracing::info!(lb = %id, "load balancer deleted");
        Ok(())
    }

    /// Removes the stats socket haproxy leaves behind, if it is where the
    /// controller puts it. Whatever else the configuration named is not the
    /// agent's to remove (it could be any file under the state directory),
    /// and a socket that cannot be removed does not make the load balancer
    /// undeletable.
    fn remove_stats_socket(&self, id: &LbId) {
        use std::os::unix::fs::FileTypeExt;
        let socket = self.layout.stats_socket(id);
        let removed = match socket.symlink_metadata() {
            Ok(meta) if meta.file_type().is_socket() => fs::remove_file(&socket),
            Ok(_) => {
                tracing::warn!(lb = %id, path = %socket.display(), "not a socket; left alone");
                return;
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return,
            Err(e) => Err(e),
        };
        if let Err(e) = removed {
            tracing::warn!(lb = %id, path = %socket.display(), error = %e, "cannot remove the stats socket");
        }
    }

    /// Validates and stores a certificate file for haproxy (mode 0600,
    /// atomically); returns the MD5 of the stored bytes. A rejected upload
    /// leaves any previous file untouched.
    pub async fn put_certificate(
        &self,
        id: &LbId,
        name: &CertFileName,
        pem: &[u8],
        rule: KeyRule,
    ) -> Result<String, LbError> {
        certs::validate(pem, rule)?;
        let slot = self.slot(id);
        let _held = slot.lock().await;
        let dir = self.layout.cert_dir(id);
        fsutil::create_dir_all(&dir, 0o700).map_err(io_error(format!("cannot create {}", dir.display())))?;
        fsutil::write_atomic_async(&dir.join(name.as_str()), pem, 0o600)
            .await
            .map_err(io_error(format!("cannot store certificate {name}")))?;
        Ok(crate::etag::md5_hex(pem))
    }

    /// MD5 of a stored certificate file; never its content.
    pub fn certificate_md5(&self, id: &LbId, name: &CertFileName) -> Result<String, LbError> {
        match fs::read(self.layout.cert_dir(id).join(name.as_str())) {
            Ok(bytes) => Ok(crate::etag::md5_hex(&bytes)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(LbError::CertificateNotFound(name.clone())),
            Err(e) => Err(io_error(format!("cannot read certificate {name}"))(e)),
        }
    }

    /// Removes a certificate file, and the load balancer's certificate
    /// directory once empty. Removing what is not there succeeds.
    pub async fn delete_certificate(&self, id: &LbId, name: &CertFileName) -> Result<(), LbError> {
        let slot = self.slot(id);
        let _held = slot.lock().await;
        let dir = self.layout.cert_dir(id);
        fsutil::remove_file_if_exists(&dir.join(name.as_str()))
            .map_err(io_error(format!("cannot remove certificate {name}")))?;
        match fs::remove_dir(&dir) {
            Ok(()) => {}
            // Not empty, or already gone: both fine.
            Err(e) if matches!(e.raw_os_error(), Some(libc::ENOTEMPTY) | Some(libc::ENOENT)) => {}
            Err(e) => return Err(io_error(format!("cannot remove {}", dir.display()))(e)),
        }
        if let Some(parent) = dir.parent() {
            fsutil::sync_dir_async(parent).await.map_err(io_error("cannot sync the certificate directory"))?;
        }
        Ok(())
    }

    /// Whether certificates are kept on a memory file system (tmpfs or
    /// ramfs), as the specification asks for secrets.
    pub fn certificates_in_memory(&self) -> bool {
        use nix::sys::statfs::{FsType, TMPFS_MAGIC, statfs};
        // Not in nix's list; linux/magic.h.
        const RAMFS_MAGIC: FsType = FsType(0x8584_58f6);
        statfs(self.layout.cert_root())
            .map(|st| st.filesystem_type() == TMPFS_MAGIC || st.filesystem_type() == RAMFS_MAGIC)
            .unwrap_or(false)
    }

    /// Every listener of every stored load balancer with its status.
    pub async fn listeners(&self) -> Vec<ListenerStatus> {
        let mut all = Vec::new();
        for id in self.layout.load_balancers() {
            let summary = self.summary(&id);
            let instance = self.instance(&id);
            let running = process::running_pid(&instance).is_some();
            let frontend_rows = match (&summary.stats_socket, running) {
                (Some(socket), true) => {
                    Some(cli::query(socket, "show stat -1 1 -1").await.map(|csv| stats::parse(&csv)).ok())
                }
                _ => None,
            };
            let should_run = self.record(&id).desired == Desired::Running;
            for frontend in summary.frontends {
                let status = match (&frontend_rows, running) {
                    (_, false) if should_run => ListenerState::Error,
                    (_, false) => ListenerState::Stopped,
                    // No stats socket configured: running is all we know.
                    (None, true) => ListenerState::Active,
                    // The stats socket of a running haproxy did not answer.
                    (Some(None), true) => ListenerState::Error,
                    (Some(Some(rows)), true) => stats::listener_state(
                        rows.iter().find(|r| r.service == Service::Frontend && r.proxy == frontend.name),
                    ),
                };
                all.push(ListenerStatus { status, uuid: frontend.name, kind: ListenerProtocol::from(frontend.kind) });
            }
        }
        all
    }

    /// A listener with its pools and members, read live from haproxy. `id`
    /// is a listener (frontend) id, or, as in the 0.1 API where each
    /// listener had its own haproxy, a load balancer id.
    pub async fn listener_detail(&self, id: &str) -> Result<ListenerDetail, LbError> {
        let not_found = || LbError::ListenerNotFound(id.to_owned());
        let mut found = None;
        for lb in self.layout.load_balancers() {
            let summary = self.summary(&lb);
            if let Some(frontend) = summary.frontends.iter().find(|f| f.name == id) {
                found = Some((lb.clone(), frontend.clone(), true));
                break;
            }
        }
        if found.is_none()
            && let Ok(lb) = LbId::parse(id)
            && self.layout.config(&lb).is_file()
        {
            let frontend = self
                .summary(&lb)
                .frontends
                .into_iter()
                .next()
                .unwrap_or(cfg::Frontend { name: id.to_owned(), kind: "TCP".into() });
            found = Some((lb, frontend, false));
        }
        let (lb, frontend, by_listener) = found.ok_or_else(not_found)?;
        let status = self
            .listeners()
            .await
            .into_iter()
            .find(|l| l.uuid == frontend.name)
            .map(|l| l.status)
            .unwrap_or(ListenerState::Stopped);
        let mut pools = Vec::new();
        let socket = self.stats_socket(&lb);
        if let (Some(socket), true) = (socket, process::running_pid(&self.instance(&lb)).is_some())
            && let Ok(text) = cli::query(&socket, "show stat -1 6 -1").await
        {
            let rows = stats::parse(&text);
            let suffix = format!(":{}", frontend.name);
            let mut names: Vec<&str> = rows.iter().map(|r| r.proxy.as_str()).collect();
            names.dedup();
            for name in names {
                if by_listener && !name.ends_with(&suffix) {
                    continue;
                }
                let backend = rows.iter().find(|r| r.proxy == name && r.service == Service::Backend);
                let members: Vec<(String, MemberState)> = rows
                    .iter()
                    .filter(|r| r.proxy == name)
                    .filter_map(|r| match &r.service {
                        Service::Backend => None,
                        // `-1 6 -1` asks for backends and servers only.
                        Service::Frontend => Some(("FRONTEND".to_owned(), r.member_state())),
                        Service::Server(server) => Some((server.clone(), r.member_state())),
                    })
                    .collect();
                let up = backend.is_some_and(|b| b.backend_status() == BackendStatus::Up);
                let degraded = up && members.iter().any(|(_, s)| *s == MemberState::Down);
                pools.push(PoolStatus {
                    uuid: name.split(':').next().unwrap_or(name).to_owned(),
                    status: if degraded {
                        PoolState::Degraded
                    } else if up {
                        PoolState::Up
                    } else {
                        PoolState::Down
                    },
                    members: members.into_iter().map(|(k, v)| BTreeMap::from([(k, v)])).collect(),
                });
            }
        }
        Ok(ListenerDetail { status, uuid: id.to_owned(), kind: ListenerProtocol::from(frontend.kind), pools })
    }

    /// Reloads every running load balancer (a topology transition).
    /// Reloads one load balancer if its haproxy runs; a stopped one stays
    /// stopped. Returns whether it was reloaded.
    pub async fn reload_if_running(&self, id: &LbId) -> Result<bool, LbError> {
        if process::running_pid(&self.instance(id)).is_none() {
            return Ok(false);
        }
        self.act(id, Action::Reload).await.map(|_| true)
    }

    pub async fn reload_running(&self) {
        for id in self.layout.load_balancers() {
            if process::running_pid(&self.instance(&id)).is_some()
                && let Err(e) = self.act(&id, Action::Reload).await
            {
                tracing::error!(lb = %id, error = %e, "reload during the topology transition failed");
            }
        }
    }

    /// Whether any file of this load balancer exists (configuration or
    /// certificates), as the appliance API counts instances.
    pub fn has_files(&self, id: &LbId) -> bool {
        self.layout.lb_dir(id).exists() || self.layout.cert_dir(id).exists()
    }

    /// Every stored load balancer with its haproxy pid and whether it
    /// should run.
    pub fn processes(&self) -> Vec<(LbId, Option<Pid>, bool)> {
        self.layout
            .load_balancers()
            .into_iter()
            .map(|id| {
                let pid = process::running_pid(&self.instance(&id));
                let wanted = self.record(&id).desired == Desired::Running;
                (id, pid, wanted)
            })
            .collect()
    }

    /// Every listener id, sorted, and how many haproxies run: what the
    /// details report, from one listing of the state directory.
    pub fn listener_ids_and_running_count(&self) -> (Vec<String>, usize) {
        let lbs = self.layout.load_balancers();
        let mut ids: Vec<String> =
            lbs.iter().flat_map(|id| self.summary(id).frontends.into_iter().map(|f| f.name)).collect();
        ids.sort();
        let running = lbs.iter().filter(|id| process::running_pid(&self.instance(id)).is_some()).count();
        (ids, running)
    }

    /// Stats sockets of the load balancers whose haproxy is running.
    pub fn running_stats_sockets(&self) -> Vec<PathBuf> {
        self.layout
            .load_balancers()
            .iter()
            .filter(|id| process::running_pid(&self.instance(id)).is_some())
            .filter_map(|id| self.stats_socket(id))
            .collect()
    }

    /// At agent start: adopts every running haproxy and starts those that
    /// should run but do not (after a reboot or a crash while the agent
    /// was down).
    pub async fn restore(&self) {
        for id in self.layout.load_balancers() {
            self.slot(&id).lock().await.restore().await;
        }
    }
}

/// Writes the second configuration file upstream passes to haproxy, with
/// the group haproxy drops to, unless the image already has one.
pub fn ensure_user_group_config(path: &Path, configured: Option<&str>) -> std::io::Result<()> {
    if path.exists() {
        return Ok(());
    }
    let group = match configured {
        Some(group) => group.to_owned(),
        None => detect_haproxy_group(),
    };
    if let Some(dir) = path.parent() {
        fsutil::create_dir_all(dir, 0o755)?;
    }
    fsutil::write_atomic(path, format!("global\n    group {group}\n").as_bytes(), 0o644)?;
    tracing::info!(path = %path.display(), group, "created haproxy user group configuration");
    Ok(())
}

/// The group upstream's image builder chooses: `nogroup` on Debian and
/// Ubuntu, `haproxy` on Red Hat family systems; else nobody's own group.
fn detect_haproxy_group() -> String {
    use nix::unistd::{Group, User};
    for candidate in ["nogroup", "haproxy"] {
        if let Ok(Some(group)) = Group::from_name(candidate) {
            return group.name;
        }
    }
    User::from_name("nobody")
        .ok()
        .flatten()
        .and_then(|user| Group::from_gid(user.gid).ok().flatten())
        .map(|group| group.name)
        .unwrap_or_else(|| "nogroup".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn actions_parse_case_insensitively() {
        assert_eq!(Action::parse("start").ok(), Some(Action::Start));
        assert_eq!(Action::parse("STOP").ok(), Some(Action::Stop));
        assert_eq!(Action::parse("Reload").ok(), Some(Action::Reload));
        assert!(matches!(Action::parse("BAD_TEST_DATA"), Err(LbError::UnknownAction(a)) if a == "BAD_TEST_DATA"));
    }

    #[test]
    fn the_load_balancer_record_keeps_its_format() {
        let record = LbRecord { extra: Peer { peer_name: "p".into() }, desired: Desired::Stopped };
        let text = r#"{"peer_name":"p","desired":"stopped"}"#;
        assert_eq!(serde_json::to_string(&record).expect("encode"), text);
        assert_eq!(serde_json::from_str::<LbRecord>(text).expect("decode"), record);
    }

    #[test]
    fn user_group_config_is_created_once() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("haproxy-default-user-group.conf");
        ensure_user_group_config(&path, Some("lbgroup")).expect("create");
        assert_eq!(fs::read_to_string(&path).expect("read"), "global\n    group lbgroup\n");
        ensure_user_group_config(&path, Some("other")).expect("keep");
        assert_eq!(fs::read_to_string(&path).expect("read"), "global\n    group lbgroup\n");
    }

    #[test]
    fn detected_group_exists_on_this_system() {
        let group = detect_haproxy_group();
        assert!(nix::unistd::Group::from_name(&group).expect("lookup").is_some(), "{group}");
    }
}
