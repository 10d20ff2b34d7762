//! Request bodies of the load-balancer API, checked as upstream's WSME
//! types check them: the root key, unknown attributes (400), types, ranges,
//! lengths and enumerations, with WSME's "Invalid input for
//! field/attribute ..." messages; and the protocol tables of
//! `octavia/common/constants.py`.

use std::net::IpAddr;

use axum::body::Bytes;
use axum::extract::{FromRequest, Request};
use serde_json::{Map, Value};

use crate::api::error::{ApiError, ApiResult};
use crate::db::is_uuid;

pub const LISTENER_PROTOCOLS: &[&str] = &["HTTP", "HTTPS", "TCP", "TERMINATED_HTTPS", "UDP", "SCTP", "PROMETHEUS"];
pub const POOL_PROTOCOLS: &[&str] = &["HTTP", "HTTPS", "PROXY", "PROXYV2", "TCP", "UDP", "SCTP"];
pub const LB_ALGORITHMS: &[&str] = &["ROUND_ROBIN", "LEAST_CONNECTIONS", "SOURCE_IP", "SOURCE_IP_PORT"];
pub const SP_TYPES: &[&str] = &["SOURCE_IP", "HTTP_COOKIE", "APP_COOKIE"];
pub const HM_TYPES: &[&str] = &["HTTP", "HTTPS", "PING", "TCP", "TLS-HELLO", "UDP-CONNECT", "SCTP"];
pub const HM_HTTP_METHODS: &[&str] = &["GET", "HEAD", "POST", "PUT", "DELETE", "TRACE", "OPTIONS", "PATCH", "CONNECT"];
pub const CLIENT_AUTH_MODES: &[&str] = &["NONE", "OPTIONAL", "MANDATORY"];
pub const PROVIDERS: &[&str] = &["amphora", "octavia"];

pub const MAX_TIMEOUT: i64 = 24 * 24 * 60 * 60 * 1000;

/// `VALID_LISTENER_POOL_PROTOCOL_MAP`.
pub fn pool_protocols_for(listener_protocol: &str) -> &'static [&'static str] {
    match listener_protocol {
        "TCP" => &["HTTP", "HTTPS", "PROXY", "PROXYV2", "TCP"],
        "HTTP" | "TERMINATED_HTTPS" => &["HTTP", "PROXY", "PROXYV2"],
        "HTTPS" => &["HTTPS", "PROXY", "PROXYV2", "TCP"],
        "UDP" => &["UDP"],
        "SCTP" => &["SCTP"],
        _ => &[],
    }
}

/// Upstream's `_validate_protocol`.
pub fn check_listener_pool_protocols(listener_protocol: &str, pool_protocol: &str) -> ApiResult<()> {
    if pool_protocols_for(listener_protocol).contains(&pool_protocol) {
        return Ok(());
    }
    Err(validation(format!(
        "The pool protocol '{pool_protocol}' is invalid while the listener protocol is '{listener_protocol}'."
    )))
}

/// `L4_PROTOCOL_MAP`.
pub fn l4_protocol(protocol: &str) -> &'static str {
    match protocol {
        "UDP" => "UDP",
        "SCTP" => "SCTP",
        _ => "TCP",
    }
}

/// Upstream's ValidationException.
pub fn validation(detail: impl std::fmt::Display) -> ApiError {
    ApiError::BadRequest(format!("Validation failure: {detail}"))
}

/// Upstream's InvalidOption.
pub fn invalid_option(value: impl std::fmt::Display, option: impl std::fmt::Display) -> ApiError {
    ApiError::BadRequest(format!("{value} is not a valid option for {option}"))
}

fn invalid_input(field: &str, value: &Value, reason: &str) -> ApiError {
    let shown = match value {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    ApiError::BadRequest(format!("Invalid input for field/attribute {field}. Value: '{shown}'. {reason}"))
}

/// The raw body of a request, with upstream's answers for what cannot be
/// read: 413 past the body limit, 400 otherwise.
#[derive(Debug)]
pub struct RawBody(pub Bytes);

impl<S: Send + Sync> FromRequest<S> for RawBody {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        match Bytes::from_request(req, state).await {
            Ok(b) => Ok(RawBody(b)),
            Err(e) if e.status() == axum::http::StatusCode::PAYLOAD_TOO_LARGE => Err(ApiError::TooLarge),
            Err(e) => Err(ApiError::BadRequest(e.body_text())),
        }
    }
}

/// A set-or-null-or-absent attribute: `None` when absent, `Some(None)`
/// when null.
pub type Opt<T> = Option<Option<T>>;

/// The object under the root key of a request body.
#[derive(Debug)]
pub struct Body {
    obj: Map<String, Value>,
}

impl Body {
    /// Parses `{"<root>": {...}}`, refusing attributes not in `allowed`.
    pub fn parse(bytes: &[u8], root: &str, allowed: &[&str]) -> ApiResult<Body> {
        let value: Value = serde_json::from_slice(bytes)
            .map_err(|e| ApiError::BadRequest(format!("Invalid input for field/attribute {root}. {e}")))?;
        let Value::Object(mut outer) = value else {
            return Err(ApiError::BadRequest(format!("Invalid input for field/attribute {root}. Not an object.")));
        };
        if let Some(extra) = outer.keys().find(|k| k.as_str() != root) {
            return Err(ApiError::BadRequest(format!("Unknown argument: \"{extra}\"")));
        }
        let Some(inner) = outer.remove(root) else {
            return Err(ApiError::BadRequest(format!(
                "Invalid input for field/attribute {root}. Value: 'None'. Mandatory field missing."
            )));
        };
        Body::from_value(inner, root, allowed)
    }

    /// An already extracted object (a batch member, a session persistence).
    pub fn from_value(value: Value, name: &str, allowed: &[&str]) -> ApiResult<Body> {
        let Value::Object(obj) = value else {
            return Err(invalid_input(name, &value, "Expected an object."));
        };
        let unknown: Vec<&str> = obj.keys().map(String::as_str).filter(|k| !allowed.contains(k)).collect();
        if !unknown.is_empty() {
            return Err(ApiError::BadRequest(format!(
                "Invalid input for field/attribute {name}. Value: '{}'. Unknown attribute for argument {name}: {}",
                Value::Object(obj.clone()),
                unknown.join(", ")
            )));
        }
        Ok(Body { obj })
    }

    pub fn has(&self, key: &str) -> bool {
        self.obj.contains_key(key)
    }

    fn raw(&self, key: &str) -> Opt<&Value> {
        self.obj.get(key).map(|v| if v.is_null() { None } else { Some(v) })
    }

    /// Absent and null are both "missing" for a mandatory attribute.
    pub fn required<T>(key: &str, v: Opt<T>) -> ApiResult<T> {
        v.flatten().ok_or_else(|| {
            ApiError::BadRequest(format!(
                "Invalid input for field/attribute {key}. Value: 'None'. Mandatory field missing."
            ))
        })
    }

    pub fn text(&self, key: &str, max_len: usize) -> ApiResult<Opt<String>> {
        self.raw(key)
            .map(|v| {
                v.map(|v| match v {
                    Value::String(s) if s.chars().count() <= max_len => Ok(s.clone()),
                    Value::String(_) => Err(invalid_input(
                        key,
                        v,
                        &format!("Value should have a maximum character requirement of {max_len}"),
                    )),
                    _ => Err(invalid_input(key, v, "Wrong type. Expected a string.")),
                })
                .transpose()
            })
            .transpose()
    }

    pub fn uuid(&self, key: &str) -> ApiResult<Opt<String>> {
        self.raw(key)
            .map(|v| {
                v.map(|v| match v.as_str().filter(|s| is_uuid(s)).and_then(|s| uuid::Uuid::parse_str(s).ok()) {
                    Some(u) => Ok(u.to_string()),
                    None => Err(invalid_input(key, v, "Value should be UUID format")),
                })
                .transpose()
            })
            .transpose()
    }

    pub fn boolean(&self, key: &str) -> ApiResult<Opt<bool>> {
        self.raw(key)
            .map(|v| {
                v.map(|v| match v {
                    Value::Bool(b) => Ok(*b),
                    Value::String(s) if ["true", "false"].contains(&s.to_ascii_lowercase().as_str()) => {
                        Ok(s.eq_ignore_ascii_case("true"))
                    }
                    _ => Err(invalid_input(key, v, "Wrong type. Expected '<class 'bool'>'")),
                })
                .transpose()
            })
            .transpose()
    }

    pub fn int(&self, key: &str, min: i64, max: i64) -> ApiResult<Opt<i64>> {
        self.raw(key)
            .map(|v| {
                v.map(|v| {
                    let n = match v {
                        Value::Number(n) => n.as_i64(),
                        Value::String(s) => s.trim().parse::<i64>().ok(),
                        _ => None,
                    }
                    .ok_or_else(|| invalid_input(key, v, "Wrong type. Expected '<class 'int'>'"))?;
                    if n < min {
                        return Err(invalid_input(key, v, &format!("Value should be greater or equal to {min}")));
                    }
                    if n > max {
                        return Err(invalid_input(key, v, &format!("Value should be lower or equal to {max}")));
                    }
                    Ok(n)
                })
                .transpose()
            })
            .transpose()
    }

    pub fn choice(&self, key: &str, allowed: &[&str]) -> ApiResult<Opt<String>> {
        self.raw(key)
            .map(|v| {
                v.map(|v| match v.as_str() {
                    Some(s) if allowed.contains(&s) => Ok(s.to_owned()),
                    _ => Err(invalid_input(key, v, &format!("Value should be one of: {}", allowed.join(", ")))),
                })
                .transpose()
            })
            .transpose()
    }

    pub fn ip(&self, key: &str) -> ApiResult<Opt<String>> {
        self.raw(key)
            .map(|v| {
                // Kept as the client spelled it, as upstream stores it.
                v.map(|v| match v.as_str().filter(|s| s.parse::<IpAddr>().is_ok()) {
                    Some(ip) => Ok(ip.to_owned()),
                    None => Err(invalid_input(key, v, "Value should be IPv4 or IPv6 format")),
                })
                .transpose()
            })
            .transpose()
    }

    /// A list of strings; null is the empty list.
    pub fn strings(&self, key: &str, max_len: usize) -> ApiResult<Option<Vec<String>>> {
        let Some(v) = self.raw(key) else { return Ok(None) };
        let Some(v) = v else { return Ok(Some(Vec::new())) };
        let Value::Array(items) = v else {
            return Err(invalid_input(key, v, "Wrong type. Expected a list."));
        };
        items
            .iter()
            .map(|i| match i {
                Value::String(s) if s.chars().count() <= max_len => Ok(s.clone()),
                _ => Err(invalid_input(
                    key,
                    v,
                    &format!("Value should be a list of strings of at most {max_len} characters"),
                )),
            })
            .collect::<ApiResult<Vec<_>>>()
            .map(Some)
    }

    /// A list of UUIDs; null is the empty list.
    pub fn uuids(&self, key: &str) -> ApiResult<Option<Vec<String>>> {
        let Some(list) = self.strings(key, 64)? else { return Ok(None) };
        list.iter()
            .map(|s| {
                uuid::Uuid::parse_str(s)
                    .map(|u| u.to_string())
                    .map_err(|_| invalid_input(key, &Value::String(s.clone()), "Value should be UUID format"))
            })
            .collect::<ApiResult<Vec<_>>>()
            .map(Some)
    }

    pub fn object(&self, key: &str) -> Opt<&Value> {
        self.raw(key)
    }

    /// Tags: a list of strings of at most 255 characters.
    pub fn tags(&self) -> ApiResult<Option<Vec<String>>> {
        self.strings("tags", 255)
    }
}

/// A CIDR (`allowed_cidrs`), normalised as upstream's CidrType does not:
/// we keep the client's spelling when it parses.
pub fn check_cidr(key: &str, cidr: &str) -> ApiResult<()> {
    let ok = match cidr.split_once('/') {
        Some((addr, len)) => match (addr.parse::<IpAddr>(), len.parse::<u8>()) {
            (Ok(IpAddr::V4(_)), Ok(l)) => l <= 32,
            (Ok(IpAddr::V6(_)), Ok(l)) => l <= 128,
            _ => false,
        },
        None => cidr.parse::<IpAddr>().is_ok(),
    };
    if ok {
        Ok(())
    } else {
        Err(invalid_input(key, &Value::String(cidr.to_owned()), "Value should be IPv4 or IPv6 CIDR format"))
    }
}

/// `expected_codes`: `200`, `200,202`, or `200-204`.
pub fn check_expected_codes(codes: &str) -> ApiResult<()> {
    let three = |s: &str| s.len() == 3 && s.bytes().all(|b| b.is_ascii_digit());
    let ok = if let Some((a, b)) = codes.split_once('-') {
        three(a) && three(b)
    } else {
        codes.split(',').all(|c| three(c.trim()))
    };
    if ok {
        Ok(())
    } else {
        Err(invalid_input(
            "expected_codes",
            &Value::String(codes.to_owned()),
            "Value should match the pattern ^(\\d{3}(\\s*,\\s*\\d{3})*)$|^(\\d{3}-\\d{3})$",
        ))
    }
}

/// `url_path`: an absolute path without spaces or control characters.
pub fn check_url_path(path: &str) -> ApiResult<()> {
    if path.starts_with('/') && !path.chars().any(|c| c.is_whitespace() || c.is_control()) {
        Ok(())
    } else {
        Err(invalid_input("url_path", &Value::String(path.to_owned()), "Value must be a valid URL Path string"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn protocol_map_is_upstreams() {
        assert!(check_listener_pool_protocols("TCP", "HTTP").is_ok());
        assert!(check_listener_pool_protocols("HTTP", "TCP").is_err());
        assert!(check_listener_pool_protocols("UDP", "UDP").is_ok());
        assert!(check_listener_pool_protocols("UDP", "TCP").is_err());
    }

    #[test]
    fn bodies_refuse_unknown_attributes_and_bad_types() {
        let b = br#"{"pool": {"name": "x", "bogus": 1}}"#;
        assert!(Body::parse(b, "pool", &["name"]).is_err());
        let b = Body::parse(br#"{"pool": {"weight": "x", "n": 300}}"#, "pool", &["weight", "n"]).expect("parse");
        assert!(b.int("weight", 0, 256).is_err());
        assert!(b.int("n", 0, 256).is_err());
        assert_eq!(b.int("absent", 0, 1).expect("absent"), None);
        assert!(check_expected_codes("200-204").is_ok() && check_expected_codes("200, 202").is_ok());
        assert!(check_expected_codes("2xx").is_err());
    }
}
