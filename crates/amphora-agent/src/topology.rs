//! The 0.1 API's amphora topology: SINGLE, ACTIVE-STANDBY or ACTIVE-ACTIVE,
//! with a role and the HA address. Setting a different topology starts a
//! transition (every running load balancer is reloaded so haproxy runs under
//! the new arrangement); while it lasts the amphora is in TOPOLOGY-CHANGE
//! and every mutating call of every API answers 503.

use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use amphora_proto::v0_1::TopologyKind;
use serde::{Deserialize, Serialize};

use crate::fsutil;
use crate::lb::LbService;

/// The amphora topology: the one enum for the configuration option, both
/// APIs and the stored record, each with its own spelling:
///
/// | | configuration, 1.0 API | 0.1 API, `topology.json` |
/// |---|---|---|
/// | `Single` | `SINGLE` | `SINGLE` |
/// | `ActiveStandby` | `ACTIVE_STANDBY` | `ACTIVE-STANDBY` |
/// | `ActiveActive` | (not accepted) | `ACTIVE-ACTIVE` |
///
/// Serde uses the 0.1 spelling, which is the stored record's.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Topology {
    #[serde(rename = "SINGLE")]
    Single,
    #[serde(rename = "ACTIVE-STANDBY")]
    ActiveStandby,
    #[serde(rename = "ACTIVE-ACTIVE")]
    ActiveActive,
}

impl Topology {
    /// Reads `[controller_worker] loadbalancer_topology` (upstream's
    /// `constants.SUPPORTED_LB_TOPOLOGIES`).
    pub fn parse_config(raw: &str) -> Result<Self, String> {
        match raw {
            "SINGLE" => Ok(Topology::Single),
            "ACTIVE_STANDBY" => Ok(Topology::ActiveStandby),
            _ => Err("expected SINGLE or ACTIVE_STANDBY".into()),
        }
    }

    /// The configuration's (and upstream's constants') spelling.
    pub fn config_str(self) -> &'static str {
        match self {
            Topology::Single => "SINGLE",
            Topology::ActiveStandby => "ACTIVE_STANDBY",
            Topology::ActiveActive => "ACTIVE_ACTIVE",
        }
    }

    /// As `GET /1.0/details` reports it.
    pub fn to_v1(self) -> amphora_proto::Topology {
        match self {
            Topology::Single => amphora_proto::Topology::Single,
            Topology::ActiveStandby => amphora_proto::Topology::ActiveStandby,
            Topology::ActiveActive => amphora_proto::Topology::Other(self.config_str().to_owned()),
        }
    }

    /// Reads a 0.1 `POST /v0.1/topology` value; the configuration's
    /// underscore spelling is accepted too.
    pub fn parse_v0_1(raw: &str) -> Option<Self> {
        match raw {
            "SINGLE" => Some(Topology::Single),
            "ACTIVE-STANDBY" | "ACTIVE_STANDBY" => Some(Topology::ActiveStandby),
            "ACTIVE-ACTIVE" | "ACTIVE_ACTIVE" => Some(Topology::ActiveActive),
            _ => None,
        }
    }

    /// As the 0.1 API reports it.
    pub fn to_v0_1(self) -> TopologyKind {
        match self {
            Topology::Single => TopologyKind::Single,
            Topology::ActiveStandby => TopologyKind::ActiveStandby,
            Topology::ActiveActive => TopologyKind::ActiveActive,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum Role {
    Active,
    Standby,
}

/// The stored topology. The secret is kept (mode 0600) but never shown.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    pub topology: Topology,
    pub role: Role,
    pub ha_ip: Option<IpAddr>,
    pub secret: Option<String>,
}

impl Default for Record {
    fn default() -> Self {
        Self { topology: Topology::Single, role: Role::Active, ha_ip: None, secret: None }
    }
}

/// The body of `POST /v0.1/topology`.
pub use amphora_proto::v0_1::TopologyRequest as Request;

/// Validates a request into a record; the error names every problem.
pub fn validate(request: &Request) -> Result<Record, String> {
    let mut problems = Vec::new();
    let topology = Topology::parse_v0_1(request.topology.trim());
    if topology.is_none() {
        problems.push(format!("Unknown topology: {}", request.topology));
    }
    let role = match request.role.as_deref().map(str::trim) {
        None | Some("") => None,
        Some("ACTIVE") => Some(Role::Active),
        Some("STANDBY") => Some(Role::Standby),
        Some(other) => {
            problems.push(format!("Unknown role: {other}"));
            None
        }
    };
    let ha_ip = match request.ha_ip.as_deref().map(str::trim) {
        None | Some("") => None,
        Some(raw) => match raw.parse::<IpAddr>() {
            Ok(ip) => Some(ip),
            Err(_) => {
                problems.push(format!("Invalid ha_ip: {raw}"));
                None
            }
        },
    };
    let secret = request.secret.clone().filter(|s| !s.is_empty());
    if topology == Some(Topology::ActiveStandby) {
        if request.role.as_deref().is_none_or(|r| r.trim().is_empty()) {
            problems.push("ACTIVE-STANDBY needs a role (ACTIVE or STANDBY)".into());
        }
        if request.ha_ip.as_deref().is_none_or(|r| r.trim().is_empty()) {
            problems.push("ACTIVE-STANDBY needs an ha_ip".into());
        }
        if secret.is_none() {
            problems.push("ACTIVE-STANDBY needs a secret".into());
        }
    }
    if !problems.is_empty() {
        return Err(problems.join("; "));
    }
    let topology = topology.expect("checked");
    Ok(Record {
        topology,
        role: if topology == Topology::ActiveStandby { role.unwrap_or(Role::Active) } else { Role::Active },
        ha_ip: if topology == Topology::ActiveStandby { ha_ip } else { None },
        secret: if topology == Topology::ActiveStandby { secret } else { None },
    })
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SetOutcome {
    /// Nothing changed.
    Unchanged,
    /// A transition started; the amphora is in TOPOLOGY-CHANGE until done.
    Transition,
}

#[derive(Debug)]
pub struct TopologyService {
    path: PathBuf,
    /// The current record; never held across I/O.
    record: Mutex<Option<Record>>,
    /// Serialises `set`, whose write is awaited.
    writing: tokio::sync::Mutex<()>,
    changing: Arc<AtomicBool>,
    lbs: Arc<LbService>,
}

impl TopologyService {
    /// `path` is where the record is kept (`{base_path}/topology.json`).
    pub fn new(path: PathBuf, lbs: Arc<LbService>) -> Self {
        let record = std::fs::read(&path).ok().and_then(|b| serde_json::from_slice(&b).ok());
        Self {
            path,
            record: Mutex::new(record),
            writing: tokio::sync::Mutex::new(()),
            changing: Arc::new(AtomicBool::new(false)),
            lbs,
        }
    }

    /// The record set through the 0.1 API, if any.
    pub fn record(&self) -> Option<Record> {
        self.record.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    pub fn changing(&self) -> bool {
        self.changing.load(Ordering::SeqCst)
    }

    pub fn status(&self) -> &'static str {
        if self.changing() { "TOPOLOGY-CHANGE" } else { "OK" }
    }

    /// Stores a validated topology; a different one starts a transition.
    pub async fn set(&self, record: Record) -> Result<SetOutcome, std::io::Error> {
        let _writing = self.writing.lock().await;
        let previous = self.record().unwrap_or_default();
        let bytes = serde_json::to_vec(&record).map_err(std::io::Error::other)?;
        fsutil::write_atomic_async(&self.path, &bytes, 0o600).await?;
        *self.record.lock().unwrap_or_else(|e| e.into_inner()) = Some(record.clone());
        if previous.topology == record.topology && previous.role == record.role && previous.ha_ip == record.ha_ip {
            return Ok(SetOutcome::Unchanged);
        }
        self.changing.store(true, Ordering::SeqCst);
        let (changing, lbs) = (self.changing.clone(), self.lbs.clone());
        tokio::spawn(async move {
            tracing::info!(topology = %record.topology.to_v0_1(), "topology transition started");
            lbs.reload_running().await;
            changing.store(false, Ordering::SeqCst);
            tracing::info!(topology = %record.topology.to_v0_1(), "topology transition complete");
        });
        Ok(SetOutcome::Transition)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(topology: &str, role: Option<&str>, ha_ip: Option<&str>, secret: Option<&str>) -> Request {
        Request {
            topology: topology.into(),
            role: role.map(Into::into),
            ha_ip: ha_ip.map(Into::into),
            secret: secret.map(Into::into),
        }
    }

    #[test]
    fn valid_topologies() {
        assert_eq!(validate(&request("SINGLE", None, None, None)), Ok(Record::default()));
        let record =
            validate(&request("ACTIVE-STANDBY", Some("STANDBY"), Some(" 203.0.113.2"), Some("s"))).expect("valid");
        assert_eq!(record.role, Role::Standby);
        assert_eq!(record.ha_ip, Some("203.0.113.2".parse().expect("ip")));
    }

    #[test]
    fn every_problem_is_named() {
        assert_eq!(
            validate(&request("BAD_TEST_DATA", None, None, None)),
            Err("Unknown topology: BAD_TEST_DATA".into())
        );
        let err = validate(&request("ACTIVE-STANDBY", Some("BOSS"), Some("x"), None)).expect_err("invalid");
        for part in ["Unknown role: BOSS", "Invalid ha_ip: x", "needs a secret"] {
            assert!(err.contains(part), "{err}");
        }
    }

    const ALL: [Topology; 3] = [Topology::Single, Topology::ActiveStandby, Topology::ActiveActive];

    #[test]
    fn configuration_spelling_round_trips() {
        for topology in [Topology::Single, Topology::ActiveStandby] {
            assert_eq!(Topology::parse_config(topology.config_str()), Ok(topology));
            assert_eq!(topology.to_v1().as_str(), topology.config_str());
            assert!(topology.to_v1().is_known());
        }
        assert_eq!(Topology::Single.config_str(), "SINGLE");
        assert_eq!(Topology::ActiveStandby.config_str(), "ACTIVE_STANDBY");
        assert!(Topology::parse_config("ACTIVE-STANDBY").is_err(), "the configuration takes upstream's spelling only");
        assert!(Topology::parse_config("ACTIVE_ACTIVE").is_err());
    }

    #[test]
    fn v0_1_spelling_round_trips_and_is_the_stored_spelling() {
        for topology in ALL {
            let spelled = topology.to_v0_1();
            assert!(spelled.is_known());
            assert_eq!(Topology::parse_v0_1(spelled.as_str()), Some(topology));
            // The record file uses the same spelling.
            assert_eq!(serde_json::to_value(topology).expect("json"), serde_json::json!(spelled.as_str()));
            assert_eq!(serde_json::from_value::<Topology>(serde_json::json!(spelled.as_str())).ok(), Some(topology));
        }
        assert_eq!(Topology::ActiveStandby.to_v0_1().as_str(), "ACTIVE-STANDBY");
        assert_eq!(Topology::parse_v0_1("ACTIVE_STANDBY"), Some(Topology::ActiveStandby));
        assert_eq!(Topology::parse_v0_1("active-standby"), None);
    }
}
