//! The wire contract as a test oracle: every JSON body the agent sends must
//! read into its `amphora-proto` type and write back to the very same JSON,
//! so a field the type lacks, a field the agent left out, a renamed field or
//! a changed type is caught. [`crate::Agent::client`] checks every response
//! this way, so each integration scenario also checks the contract.

use amphora_proto::appliance::ApplianceStatus;
use amphora_proto::net::InterfaceLookup;
use amphora_proto::v0_1::{TopologyKind, TopologyResponse};
use amphora_proto::{CertificateMd5, Details, Info, ListenerDetail, ListenerStatus, Message, Versions, paths};
use serde::Serialize;
use serde::de::DeserializeOwned;

type Check = fn(&serde_json::Value) -> Result<(), String>;

/// The proto type of each successful JSON answer to a GET; every other
/// successful JSON answer, and every error, is a [`Message`].
const GETS: &[(&str, Check)] = &[
    (paths::ROOT, round_trip::<Versions>),
    (paths::INFO, round_trip::<Info>),
    (paths::v1::INFO, round_trip::<Info>),
    (paths::v1::DETAILS, round_trip::<Details>),
    (paths::v1::LISTENERS, round_trip::<Vec<ListenerStatus>>),
    (paths::v1::LISTENER, round_trip::<ListenerDetail>),
    (paths::v1::LB_CERTIFICATE, round_trip::<CertificateMd5>),
    (paths::v1::INTERFACE, round_trip::<InterfaceLookup>),
    (paths::v0_1::TOPOLOGY, round_trip::<TopologyResponse>),
    (paths::v0_1::INFO, round_trip::<Info>),
    (paths::v0_1::DETAILS, round_trip::<Details<TopologyKind>>),
    (paths::v0_1::LISTENERS, round_trip::<Vec<ListenerStatus>>),
    (paths::v0_1::LISTENER, round_trip::<ListenerDetail>),
    (paths::v0_1::LISTENER_CERTIFICATE, round_trip::<CertificateMd5>),
    (paths::appliance::STATUS, round_trip::<ApplianceStatus>),
];

/// Checks one response. Bodies that are not JSON (haproxy configurations,
/// the appliance's text) are not part of the typed contract.
pub fn check(method: &str, path: &str, status: u16, content_type: Option<&str>, body: &[u8]) -> Result<(), String> {
    if !content_type.is_some_and(|t| t.starts_with("application/json")) {
        return Ok(());
    }
    let value: serde_json::Value = serde_json::from_slice(body)
        .map_err(|e| format!("{method} {path} answered {status} with invalid JSON: {e}"))?;
    let path = merge_slashes(path);
    let check: Check = if status >= 400 || method != "GET" {
        round_trip::<Message>
    } else {
        GETS.iter()
            .find(|(template, _)| paths::matches(template, &path))
            .map(|(_, check)| *check)
            .ok_or_else(|| format!("GET {path} answered JSON, but no proto type describes it: {value}"))?
    };
    check(&value).map_err(|e| format!("{method} {path} answered {status}: {e}"))
}

/// Reads `value` as `T` and writes it back; the two must be equal.
pub fn round_trip<T: DeserializeOwned + Serialize>(value: &serde_json::Value) -> Result<(), String> {
    let name = std::any::type_name::<T>();
    let typed: T =
        serde_json::from_value(value.clone()).map_err(|e| format!("does not read as {name}: {e}: {value}"))?;
    let written = serde_json::to_value(&typed).map_err(|e| format!("{name} does not serialise: {e}"))?;
    if &written != value {
        return Err(format!("{name} drifted from the agent's body:\n  agent: {value}\n  proto: {written}"));
    }
    Ok(())
}

/// The agent routes `//x` as `/x`, as upstream's Flask does.
fn merge_slashes(path: &str) -> String {
    let mut merged = String::with_capacity(path.len());
    for c in path.chars() {
        if !(c == '/' && merged.ends_with('/')) {
            merged.push(c);
        }
    }
    merged
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_or_extra_field_is_drift() {
        let json = Some("application/json");
        assert!(check("GET", "/1.0/interface/10.0.0.1", 200, json, br#"{"message":"OK","interface":"eth1"}"#).is_ok());
        let extra = check("GET", "/1.0/interface/10.0.0.1", 200, json, br#"{"message":"OK","interface":"e","x":1}"#);
        assert!(extra.expect_err("extra field").contains("drifted"));
        assert!(check("GET", "/1.0/interface/10.0.0.1", 200, json, br#"{"message":"OK"}"#).is_err());
        assert!(
            check("PUT", "/1.0/vrrp/start", 202, json, br#"{"message":"OK","details":"keepalived started"}"#).is_ok()
        );
        assert!(check("PUT", "/1.0/vrrp/start", 500, json, br#"{"message":"x","details":3}"#).is_err());
        assert!(check("GET", "/1.0/unknown", 200, json, b"{}").is_err());
        assert!(check("GET", "/1.0/loadbalancer/x/haproxy", 200, Some("text/plain"), b"global").is_ok());
        assert!(check("GET", "//", 200, json, br#"{"api_version":"1.0","versions":["1.0"]}"#).is_ok());
    }
}
