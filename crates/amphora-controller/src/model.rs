//! Status vocabularies, as upstream spells them on the wire and in its
//! database.

pub mod provisioning {
    pub const ACTIVE: &str = "ACTIVE";
    pub const DELETED: &str = "DELETED";
    pub const ERROR: &str = "ERROR";
    pub const PENDING_CREATE: &str = "PENDING_CREATE";
    pub const PENDING_UPDATE: &str = "PENDING_UPDATE";
    pub const PENDING_DELETE: &str = "PENDING_DELETE";

    /// Whether an object in this status may not be changed.
    pub fn is_pending(status: &str) -> bool {
        status.starts_with("PENDING_")
    }
}

pub mod operating {
    pub const ONLINE: &str = "ONLINE";
    pub const DRAINING: &str = "DRAINING";
    pub const OFFLINE: &str = "OFFLINE";
    pub const DEGRADED: &str = "DEGRADED";
    pub const ERROR: &str = "ERROR";
    pub const NO_MONITOR: &str = "NO_MONITOR";
}

/// Amphora statuses (upstream's `constants.AMPHORA_*`).
pub mod amphora_status {
    pub const BOOTING: &str = "BOOTING";
    pub const ALLOCATED: &str = "ALLOCATED";
    pub const READY: &str = "READY";
    pub const PENDING_CREATE: &str = "PENDING_CREATE";
    pub const PENDING_DELETE: &str = "PENDING_DELETE";
    pub const DELETED: &str = "DELETED";
    pub const ERROR: &str = "ERROR";
    pub const FAILOVER_STOPPED: &str = "FAILOVER_STOPPED";
}

pub mod role {
    pub const STANDALONE: &str = "STANDALONE";
    pub const MASTER: &str = "MASTER";
    pub const BACKUP: &str = "BACKUP";
}
