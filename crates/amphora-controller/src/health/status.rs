//! What a heartbeat says, and the operating statuses it implies: upstream's
//! `UpdateHealthDb._update_health` and `_process_pool_status`, as a pure
//! function of the load balancer's rows and the message.

use std::collections::{BTreeMap, HashSet};

use serde::Deserialize;

use crate::model::operating;

/// A heartbeat of any version: 1 (pools inside listeners, no `ver`), 2
/// (pools at the top, keyed `pool:listener`, absolute counters) or 3 (as 2,
/// with counters as deltas). Unknown fields are ignored, missing ones empty.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct Message {
    pub id: String,
    #[serde(default)]
    pub ver: Option<u64>,
    #[serde(default)]
    pub seq: Option<u64>,
    #[serde(default)]
    pub listeners: BTreeMap<String, ListenerReport>,
    #[serde(default)]
    pub pools: BTreeMap<String, PoolReport>,
}

#[derive(Debug, Clone, Default, Deserialize)]
pub struct ListenerReport {
    #[serde(default)]
    pub status: Option<String>,
    #[serde(default)]
    pub stats: Option<StatsReport>,
    /// Version 1 only.
    #[serde(default)]
    pub pools: BTreeMap<String, PoolReport>,
}

#[derive(Debug, Clone, Default, Deserialize)]
pub struct PoolReport {
    #[serde(default)]
    pub status: Option<String>,
    #[serde(default)]
    pub members: MemberReports,
}

/// A pool's member statuses as reported, in id order; of a repeated id the
/// last counts, as in a map. One vector rather than a map: a heartbeat
/// carries hundreds of them at 10,000 heartbeats a second, and each is
/// read once, alongside the pool's member rows in the same order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MemberReports(Vec<(String, String)>);

impl MemberReports {
    /// The status reported for `id`.
    pub fn get(&self, id: &str) -> Option<&str> {
        self.0.binary_search_by(|(m, _)| m.as_str().cmp(id)).ok().map(|i| self.0[i].1.as_str())
    }

    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.0.iter().map(|(id, status)| (id.as_str(), status.as_str()))
    }
}

impl<'de> Deserialize<'de> for MemberReports {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = MemberReports;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a map of member ids to statuses")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<MemberReports, A::Error> {
                let mut members: Vec<(String, String)> = Vec::with_capacity(map.size_hint().unwrap_or(0));
                while let Some(entry) = map.next_entry()? {
                    members.push(entry);
                }
                // Stable: of equal ids the last stays last, and is kept.
                members.sort_by(|a, b| a.0.cmp(&b.0));
                let mut kept: Vec<(String, String)> = Vec::with_capacity(members.len());
                for m in members {
                    match kept.last_mut() {
                        Some(last) if last.0 == m.0 => *last = m,
                        _ => kept.push(m),
                    }
                }
                Ok(MemberReports(kept))
            }
        }
        deserializer.deserialize_map(Visitor)
    }
}

/// Listener counters: deltas since the previous message in version 3
/// (except `conns`, always the current count), absolute values before.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
pub struct StatsReport {
    #[serde(default)]
    pub tx: u64,
    #[serde(default)]
    pub rx: u64,
    #[serde(default)]
    pub conns: u64,
    #[serde(default)]
    pub totconns: u64,
    #[serde(default)]
    pub ereq: u64,
}

impl Message {
    /// The version for status handling: upstream reads a missing `ver` as 0
    /// there (pools inside listeners)...
    pub fn health_version(&self) -> u64 {
        self.ver.unwrap_or(0)
    }

    /// ...and counters are deltas from version 3 on (a missing `ver` reads
    /// as 2 there).
    pub fn stats_are_deltas(&self) -> bool {
        self.ver.unwrap_or(2) >= 3
    }
}

/// The rows of one load balancer that a heartbeat can change.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LbRows {
    pub id: String,
    pub enabled: bool,
    pub provisioning_status: String,
    pub operating_status: String,
    pub listeners: Vec<ListenerRow>,
    pub pools: Vec<PoolRow>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ListenerRow {
    pub id: String,
    pub enabled: bool,
    pub operating_status: String,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PoolRow {
    pub id: String,
    pub operating_status: String,
    /// (member id, operating status)
    pub members: Vec<(String, String)>,
}

/// Operating statuses to write: only those that differ from the rows.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Changes {
    pub listeners: Vec<(String, &'static str)>,
    pub pools: Vec<(String, &'static str)>,
    pub members: Vec<(String, &'static str)>,
    pub load_balancer: Option<&'static str>,
    /// Statuses the amphora reported that upstream does not know (logged).
    pub unknown: Vec<String>,
}

impl LbRows {
    /// Upstream's listener-count check: a heartbeat refreshes the amphora's
    /// health only when it reports as many listeners as the load balancer
    /// has enabled ones, unless the load balancer is PENDING_* or disabled
    /// (its configuration may be in flight).
    pub fn expected_listeners(&self) -> Option<usize> {
        if self.provisioning_status.contains("PENDING") || !self.enabled {
            None
        } else {
            Some(self.listeners.iter().filter(|l| l.enabled).count())
        }
    }
}

/// Pool ids as reported: `pool:listener` (one haproxy per load balancer)
/// or a bare pool id (old amphorae), reduced to the pool id.
fn pool_reports(raw: &BTreeMap<String, PoolReport>) -> BTreeMap<&str, &PoolReport> {
    raw.iter().map(|(k, v)| (k.rsplit_once(':').map_or(k.as_str(), |(pool, _)| pool), v)).collect()
}

struct Walk<'a> {
    changes: Changes,
    lb_status: &'static str,
    processed: HashSet<&'a str>,
    /// Pools no report mentioned yet, with their stored status.
    unreported: Vec<&'a PoolRow>,
}

impl<'a> Walk<'a> {
    fn pools(&mut self, lb: &'a LbRows, reports: &BTreeMap<&str, &PoolReport>) {
        for pool in &lb.pools {
            if self.processed.contains(pool.id.as_str()) {
                continue;
            }
            match reports.get(pool.id.as_str()) {
                None => self.unreported.push(pool),
                Some(report) => {
                    self.processed.insert(pool.id.as_str());
                    self.pool(pool, report);
                }
            }
        }
    }

    fn pool(&mut self, pool: &PoolRow, report: &PoolReport) {
        // Both lists are in id order (the rows as loaded): walk them side by
        // side. Rows in another order are looked up one by one.
        let sorted = pool.members.is_sorted_by(|a, b| a.0 <= b.0);
        let mut reported = report.members.0.iter().peekable();
        let mut pool_status = match report.status.as_deref() {
            // UP: haproxy's backend has working servers, or none at all.
            Some("UP") => Some(operating::ONLINE),
            // DOWN: no working server.
            Some("DOWN") => {
                self.lb_status = operating::ERROR;
                Some(operating::ERROR)
            }
            other => {
                self.changes.unknown.push(format!("pool {} reported status {other:?}", pool.id));
                None
            }
        };
        for (member_id, stored) in &pool.members {
            let found = if sorted {
                while reported.next_if(|(id, _)| id < member_id).is_some() {}
                reported.peek().filter(|(id, _)| id == member_id).map(|(_, s)| s.as_str())
            } else {
                report.members.get(member_id)
            };
            let status = match found {
                None if stored != operating::NO_MONITOR => Some(operating::OFFLINE),
                None => None,
                // "UP" or the transitional "UP 1/3".
                Some(s) if s.starts_with("UP") => Some(operating::ONLINE),
                Some(s) if s.starts_with("DOWN") => {
                    if pool_status == Some(operating::ONLINE) {
                        pool_status = Some(operating::DEGRADED);
                        if self.lb_status == operating::ONLINE {
                            self.lb_status = operating::DEGRADED;
                        }
                    }
                    Some(operating::ERROR)
                }
                Some("DRAIN") => Some(operating::DRAINING),
                Some("MAINT") => Some(operating::OFFLINE),
                Some("no check") => Some(operating::NO_MONITOR),
                // keepalived restarting: wait for a settled status.
                Some("RESTARTING") => None,
                Some(other) => {
                    self.changes.unknown.push(format!("member {member_id} reported status {other:?}"));
                    None
                }
            };
            if let Some(status) = status.filter(|s| s != stored) {
                self.changes.members.push((member_id.clone(), status));
            }
        }
        if let Some(status) = pool_status.filter(|s| *s != pool.operating_status) {
            self.changes.pools.push((pool.id.clone(), status));
        }
    }
}

/// The operating statuses a heartbeat implies for its load balancer.
pub fn evaluate(lb: &LbRows, message: &Message) -> Changes {
    let mut walk = Walk {
        changes: Changes::default(),
        lb_status: if lb.enabled { operating::ONLINE } else { operating::OFFLINE },
        processed: HashSet::new(),
        unreported: Vec::new(),
    };
    let version = message.health_version();
    for listener in &lb.listeners {
        let report = message.listeners.get(&listener.id);
        let status = match report {
            None if listener.enabled && lb.provisioning_status == crate::model::provisioning::ACTIVE => {
                Some(operating::ERROR)
            }
            None => Some(operating::OFFLINE),
            // OPEN: haproxy's frontend accepts connections.
            Some(r) if r.status.as_deref() == Some("OPEN") => Some(operating::ONLINE),
            // FULL: it is at its connection limit.
            Some(r) if r.status.as_deref() == Some("FULL") => {
                if walk.lb_status == operating::ONLINE {
                    walk.lb_status = operating::DEGRADED;
                }
                Some(operating::DEGRADED)
            }
            Some(r) => {
                walk.changes.unknown.push(format!("listener {} reported status {:?}", listener.id, r.status));
                None
            }
        };
        if let Some(status) = status.filter(|s| *s != listener.operating_status) {
            walk.changes.listeners.push((listener.id.clone(), status));
        }
        if let Some(report) = report
            && version < 2
        {
            walk.pools(lb, &pool_reports(&report.pools));
        }
    }
    if version >= 2 {
        walk.pools(lb, &pool_reports(&message.pools));
    }
    let mut offline = HashSet::new();
    for pool in std::mem::take(&mut walk.unreported) {
        if !walk.processed.contains(pool.id.as_str())
            && pool.operating_status != operating::OFFLINE
            && offline.insert(pool.id.as_str())
        {
            walk.changes.pools.push((pool.id.clone(), operating::OFFLINE));
        }
    }
    if walk.lb_status != lb.operating_status {
        walk.changes.load_balancer = Some(walk.lb_status);
    }
    walk.changes
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn lb() -> LbRows {
        LbRows {
            id: "lb".into(),
            enabled: true,
            provisioning_status: "ACTIVE".into(),
            operating_status: "OFFLINE".into(),
            listeners: vec![ListenerRow { id: "l1".into(), enabled: true, operating_status: "OFFLINE".into() }],
            pools: vec![PoolRow {
                id: "p1".into(),
                operating_status: "OFFLINE".into(),
                members: vec![("m1".into(), "NO_MONITOR".into()), ("m2".into(), "ONLINE".into())],
            }],
        }
    }

    fn message(v: serde_json::Value) -> Message {
        serde_json::from_value(v).expect("message")
    }

    #[test]
    fn a_healthy_v3_message_brings_everything_online() {
        let m = message(json!({"id": "a", "ver": 3, "listeners": {"l1": {"status": "OPEN", "stats": {}}},
            "pools": {"p1:l1": {"status": "UP", "members": {"m1": "UP", "m2": "UP"}}}}));
        let c = evaluate(&lb(), &m);
        assert_eq!(c.listeners, vec![("l1".to_owned(), "ONLINE")]);
        assert_eq!(c.pools, vec![("p1".to_owned(), "ONLINE")]);
        // m2 is ONLINE already: not written.
        assert_eq!(c.members, vec![("m1".to_owned(), "ONLINE")]);
        assert_eq!(c.load_balancer, Some("ONLINE"));
    }

    #[test]
    fn a_down_member_degrades_its_pool_and_the_load_balancer() {
        let m = message(json!({"id": "a", "ver": 2, "listeners": {"l1": {"status": "OPEN"}},
            "pools": {"p1:l1": {"status": "UP", "members": {"m1": "DOWN 1/3", "m2": "DRAIN"}}}}));
        let c = evaluate(&lb(), &m);
        assert_eq!(c.members, vec![("m1".to_owned(), "ERROR"), ("m2".to_owned(), "DRAINING")]);
        assert_eq!(c.pools, vec![("p1".to_owned(), "DEGRADED")]);
        assert_eq!(c.load_balancer, Some("DEGRADED"));
    }

    #[test]
    fn a_down_pool_is_an_error_of_the_load_balancer_and_a_full_listener_degraded() {
        let m = message(json!({"id": "a", "ver": 3, "listeners": {"l1": {"status": "FULL"}},
            "pools": {"p1:l1": {"status": "DOWN", "members": {"m1": "MAINT", "m2": "no check"}}}}));
        let c = evaluate(&lb(), &m);
        assert_eq!(c.listeners, vec![("l1".to_owned(), "DEGRADED")]);
        assert_eq!(c.pools, vec![("p1".to_owned(), "ERROR")]);
        assert_eq!(c.members, vec![("m1".to_owned(), "OFFLINE"), ("m2".to_owned(), "NO_MONITOR")]);
        assert_eq!(c.load_balancer, Some("ERROR"));
    }

    #[test]
    fn missing_listeners_pools_and_members_go_error_or_offline() {
        let mut rows = lb();
        rows.listeners[0].operating_status = "ONLINE".into();
        rows.pools[0].operating_status = "ONLINE".into();
        let c = evaluate(&rows, &message(json!({"id": "a", "ver": 3})));
        assert_eq!(c.listeners, vec![("l1".to_owned(), "ERROR")]);
        assert_eq!(c.pools, vec![("p1".to_owned(), "OFFLINE")]);
        assert!(c.members.is_empty(), "members of an unreported pool keep their status");
        assert_eq!(c.load_balancer, Some("ONLINE"));
        // A disabled load balancer is OFFLINE; a missing listener is an
        // ERROR only when it is enabled on an ACTIVE load balancer.
        rows.enabled = false;
        rows.operating_status = "ONLINE".into();
        let c = evaluate(&rows, &message(json!({"id": "a", "ver": 3})));
        assert_eq!(c.listeners, vec![("l1".to_owned(), "ERROR")]);
        assert_eq!(c.load_balancer, Some("OFFLINE"));
        rows.listeners[0].enabled = false;
        assert_eq!(
            evaluate(&rows, &message(json!({"id": "a", "ver": 3}))).listeners,
            vec![("l1".to_owned(), "OFFLINE")]
        );
        rows.listeners[0].enabled = true;
        rows.provisioning_status = "PENDING_UPDATE".into();
        assert_eq!(
            evaluate(&rows, &message(json!({"id": "a", "ver": 3}))).listeners,
            vec![("l1".to_owned(), "OFFLINE")]
        );
    }

    #[test]
    fn member_reports_in_any_order_are_matched_to_their_rows_and_a_repeated_id_counts_its_last_status() {
        let mut rows = lb();
        // Ids that sort apart from their report order, stored ONLINE, some
        // unreported; reports for members the database does not have.
        rows.pools[0].members = ["a", "c", "e", "g"].iter().map(|m| ((*m).to_owned(), "ONLINE".to_owned())).collect();
        let m = message(json!({"id": "x", "ver": 3, "listeners": {"l1": {"status": "OPEN"}},
            "pools": {"p1:l1": {"status": "UP", "members": {
                "g": "DRAIN", "b": "DOWN", "e": "UP", "z": "MAINT", "a": "MAINT"}}}}));
        let expected = vec![("a".to_owned(), "OFFLINE"), ("c".to_owned(), "OFFLINE"), ("g".to_owned(), "DRAINING")];
        assert_eq!(evaluate(&rows, &m).members, expected);
        // Rows in another order: the same statuses, in row order.
        rows.pools[0].members.reverse();
        let mut reversed = expected.clone();
        reversed.reverse();
        assert_eq!(evaluate(&rows, &m).members, reversed);
        // A repeated id in the JSON text: the last one counts, as a map.
        let text = r#"{"status": "UP", "members": {"m1": "DOWN", "m2": "UP", "m1": "DRAIN"}}"#;
        let pool: PoolReport = serde_json::from_str(text).expect("pool");
        assert_eq!(pool.members.get("m1"), Some("DRAIN"));
        assert_eq!(pool.members.iter().collect::<Vec<_>>(), vec![("m1", "DRAIN"), ("m2", "UP")]);
    }

    #[test]
    fn a_reported_pool_without_a_member_marks_it_offline_unless_unmonitored() {
        let m = message(json!({"id": "a", "ver": 3, "listeners": {"l1": {"status": "OPEN"}},
            "pools": {"p1:l1": {"status": "UP", "members": {}}}}));
        let c = evaluate(&lb(), &m);
        assert_eq!(c.members, vec![("m2".to_owned(), "OFFLINE")]);
    }

    #[test]
    fn version_one_reads_pools_inside_listeners() {
        let m = message(json!({"id": "a", "listeners": {"l1": {"status": "OPEN",
            "pools": {"p1": {"status": "UP", "members": {"m1": "UP", "m2": "UP"}}}}}}));
        assert_eq!(m.health_version(), 0);
        assert!(!m.stats_are_deltas());
        let c = evaluate(&lb(), &m);
        assert_eq!(c.pools, vec![("p1".to_owned(), "ONLINE")]);
        assert_eq!(c.load_balancer, Some("ONLINE"));
        // Top-level pools are not read in version 1.
        let m = message(json!({"id": "a", "listeners": {"l1": {"status": "OPEN"}},
            "pools": {"p1:l1": {"status": "UP", "members": {}}}}));
        assert_eq!(evaluate(&lb(), &m).pools, vec![]);
    }

    #[test]
    fn unchanged_statuses_are_not_written_and_odd_ones_are_reported() {
        let mut rows = lb();
        rows.listeners[0].operating_status = "ONLINE".into();
        rows.pools[0].operating_status = "ONLINE".into();
        rows.pools[0].members[0].1 = "ONLINE".into();
        rows.operating_status = "ONLINE".into();
        let m = message(json!({"id": "a", "ver": 3, "listeners": {"l1": {"status": "OPEN"}},
            "pools": {"p1:l1": {"status": "UP", "members": {"m1": "UP", "m2": "weird"}}}}));
        let c = evaluate(&rows, &m);
        assert_eq!((c.listeners.len(), c.pools.len(), c.members.len(), c.load_balancer), (0, 0, 0, None));
        assert_eq!(c.unknown.len(), 1);
    }

    #[test]
    fn the_listener_count_is_skipped_for_pending_or_disabled_load_balancers() {
        let mut rows = lb();
        rows.listeners.push(ListenerRow { id: "l2".into(), enabled: false, operating_status: "OFFLINE".into() });
        assert_eq!(rows.expected_listeners(), Some(1));
        rows.provisioning_status = "PENDING_UPDATE".into();
        assert_eq!(rows.expected_listeners(), None);
        rows.provisioning_status = "ACTIVE".into();
        rows.enabled = false;
        assert_eq!(rows.expected_listeners(), None);
    }
}
