//! The OpenAPI 3 document of the agent's three APIs (1.0, 0.1, appliance),
//! and a readable page made from the same data: the operations below name
//! their paths by `amphora_proto::paths` and their bodies by the wire types
//! of `amphora-proto`, whose schemas utoipa derives (its `openapi`
//! feature), so a field added to a wire type is in the document at once.
//!
//! The documents are committed (docs/agent-openapi.json, docs/agent-api.md)
//! and these tests fail when they differ from what the code generates; run
//! with `AMPHORA_UPDATE_DOCS=1` to rewrite them:
//! `AMPHORA_UPDATE_DOCS=1 cargo test -p amphora-agent --lib http::openapi`.
//! `http::router_tests` checks the operations against the routers, both ways.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use amphora_proto::appliance::ApplianceStatus;
use amphora_proto::net::{InterfaceLookup, PlugNetworkRequest, PlugVipRequest, RuleRequest};
use amphora_proto::paths::{self, appliance, v0_1, v1};
use amphora_proto::v0_1::{TopologyKind, TopologyRequest, TopologyResponse};
use amphora_proto::{CertificateMd5, Details, Info, ListenerDetail, ListenerStatus, Message, Topology, Versions};
use serde_json::{Map, Value, json};
use utoipa::ToSchema;

/// A request or response body.
#[derive(Debug, Clone, Copy)]
pub enum Body {
    None,
    /// `application/json` of the named schema.
    Json(&'static str),
    /// `application/json`, an array of the named schema.
    JsonArray(&'static str),
    /// `text/plain`, described.
    Text(&'static str),
}

/// Which API an operation belongs to (its tag).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Api {
    /// Version discovery and `/info`, shared by 1.0 and 0.1.
    Common,
    V1,
    V0_1,
    Appliance,
}

impl Api {
    fn tag(self) -> &'static str {
        match self {
            Api::Common => "discovery",
            Api::V1 => "1.0",
            Api::V0_1 => "0.1",
            Api::Appliance => "appliance",
        }
    }

    /// Errors: a JSON message in 1.0 and 0.1, text in the appliance API.
    fn error(self) -> Body {
        match self {
            Api::Appliance => Body::Text("the error"),
            _ => Body::Json("Message"),
        }
    }
}

#[derive(Debug)]
pub struct Operation {
    pub method: &'static str,
    pub path: &'static str,
    pub api: Api,
    pub summary: &'static str,
    pub request: Body,
    /// Success responses: status, description, body.
    pub responses: &'static [(u16, &'static str, Body)],
}

const fn op(
    method: &'static str,
    path: &'static str,
    api: Api,
    summary: &'static str,
    request: Body,
    responses: &'static [(u16, &'static str, Body)],
) -> Operation {
    Operation { method, path, api, summary, request, responses }
}

const OK: &[(u16, &str, Body)] = &[(200, "Done", Body::Json("Message"))];
const ACCEPTED: &[(u16, &str, Body)] = &[(202, "Accepted", Body::Json("Message"))];
const CREATED: &[(u16, &str, Body)] = &[(201, "Stored", Body::Json("Message"))];
const HAPROXY_CFG: Body = Body::Text("haproxy configuration");
const KEEPALIVED_CFG: Body = Body::Text("keepalived configuration");
const PEM: Body = Body::Text("PEM: private key, certificate and chain");
const MD5: &[(u16, &str, Body)] = &[(200, "The file's md5", Body::Json("CertificateMd5"))];
const INFO_OK: &[(u16, &str, Body)] = &[(200, "The agent", Body::Json("Info"))];
const LISTENERS_OK: &[(u16, &str, Body)] = &[(200, "Every listener", Body::JsonArray("ListenerStatus"))];
const LISTENER_OK: &[(u16, &str, Body)] = &[(200, "The listener", Body::Json("ListenerDetail"))];
const TEXT_OK: &[(u16, &str, Body)] = &[(200, "Done", Body::Text("OK, and what was done"))];

/// Every operation the agent serves.
pub const OPERATIONS: &[Operation] = &[
    op(
        "get",
        paths::ROOT,
        Api::Common,
        "Version discovery: the preferred API and every API served",
        Body::None,
        &[(200, "The versions", Body::Json("Versions"))],
    ),
    op("get", paths::INFO, Api::Common, "The agent's identity and versions", Body::None, INFO_OK),
    // 1.0
    op("get", v1::INFO, Api::V1, "The agent's identity and versions", Body::None, INFO_OK),
    op(
        "get",
        v1::DETAILS,
        Api::V1,
        "Identity, resources, load and listeners of the amphora",
        Body::None,
        &[(200, "The details", Body::Json("Details"))],
    ),
    op("get", v1::LISTENERS, Api::V1, "Every listener (haproxy and LVS) and its status", Body::None, LISTENERS_OK),
    op("get", v1::LISTENER, Api::V1, "A listener's status with its pools", Body::None, LISTENER_OK),
    op("delete", v1::LISTENER, Api::V1, "Delete a load balancer (or an LVS listener) and its files", Body::None, OK),
    op(
        "get",
        v1::LVS_CONFIG,
        Api::V1,
        "A UDP/SCTP listener's keepalived (LVS) configuration",
        Body::None,
        &[(200, "The configuration", KEEPALIVED_CFG)],
    ),
    op(
        "put",
        v1::LVS_UPLOAD_CONFIG,
        Api::V1,
        "Store a UDP/SCTP listener's keepalived (LVS) configuration: {amphora}/{listener}",
        KEEPALIVED_CFG,
        OK,
    ),
    op(
        "get",
        v1::LB_CONFIG,
        Api::V1,
        "A load balancer's haproxy configuration",
        Body::None,
        &[(200, "The configuration", HAPROXY_CFG)],
    ),
    op("put", v1::LB_ACTION, Api::V1, "Start, stop or reload a load balancer: {lb}/{action}", Body::None, ACCEPTED),
    op(
        "put",
        v1::LB_UPLOAD_CONFIG,
        Api::V1,
        "Check (haproxy -c) and store a load balancer's haproxy configuration: {amphora}/{lb}",
        HAPROXY_CFG,
        ACCEPTED,
    ),
    op("put", v1::SERVER_CERTIFICATE, Api::V1, "Replace the agent's own server certificate", PEM, ACCEPTED),
    op("post", v1::PLUG_VIP, Api::V1, "Plug the VIP port", Body::Json("PlugVipRequest"), ACCEPTED),
    op("post", v1::PLUG_NETWORK, Api::V1, "Plug a member network port", Body::Json("PlugNetworkRequest"), ACCEPTED),
    op(
        "post",
        v1::PLUG_NETWORK_SLASH,
        Api::V1,
        "Plug a member network port (the spelling upstream's controller sends)",
        Body::Json("PlugNetworkRequest"),
        ACCEPTED,
    ),
    op(
        "get",
        v1::INTERFACE,
        Api::V1,
        "The interface holding an address",
        Body::None,
        &[(200, "The interface", Body::Json("InterfaceLookup"))],
    ),
    op(
        "put",
        v1::INTERFACE_RULES,
        Api::V1,
        "Replace the traffic allowed in on an interface",
        Body::JsonArray("RuleRequest"),
        OK,
    ),
    op("put", v1::VRRP_UPLOAD, Api::V1, "Store keepalived's VRRP configuration", KEEPALIVED_CFG, OK),
    op("put", v1::VRRP_ACTION, Api::V1, "Start, stop or reload keepalived (VRRP)", Body::None, ACCEPTED),
    op(
        "put",
        v1::AGENT_CONFIG,
        Api::V1,
        "Replace the agent's configuration file; mutable options apply at once",
        Body::Text("amphora-agent.conf"),
        ACCEPTED,
    ),
    op("put", v1::LB_CERTIFICATE, Api::V1, "Store a load balancer's certificate", PEM, OK),
    op("get", v1::LB_CERTIFICATE, Api::V1, "The md5 of a stored certificate", Body::None, MD5),
    op("delete", v1::LB_CERTIFICATE, Api::V1, "Delete a stored certificate", Body::None, OK),
    // 0.1
    op(
        "get",
        v0_1::TOPOLOGY,
        Api::V0_1,
        "The amphora's topology and role",
        Body::None,
        &[(200, "The topology", Body::Json("TopologyResponse"))],
    ),
    op(
        "post",
        v0_1::TOPOLOGY,
        Api::V0_1,
        "Set the topology and role",
        Body::Json("TopologyRequest"),
        &[(200, "Unchanged", Body::Json("Message")), (202, "Changing", Body::Json("Message"))],
    ),
    op("get", v0_1::INFO, Api::V0_1, "The agent's identity and versions", Body::None, INFO_OK),
    op(
        "get",
        v0_1::DETAILS,
        Api::V0_1,
        "Identity, resources, load and listeners of the amphora (0.1 topology names)",
        Body::None,
        &[(200, "The details", Body::Json("DetailsV0_1"))],
    ),
    op("get", v0_1::LISTENERS, Api::V0_1, "Every listener and its status", Body::None, LISTENERS_OK),
    op("get", v0_1::LISTENER, Api::V0_1, "A listener's status with its pools", Body::None, LISTENER_OK),
    op("delete", v0_1::LISTENER, Api::V0_1, "Delete a listener and its files", Body::None, OK),
    op("put", v0_1::LISTENER_ACTION, Api::V0_1, "Start, stop or reload a listener", Body::None, ACCEPTED),
    op(
        "put",
        v0_1::LISTENER_CONFIG,
        Api::V0_1,
        "Check (haproxy -c) and store a listener's haproxy configuration",
        HAPROXY_CFG,
        CREATED,
    ),
    op(
        "get",
        v0_1::LISTENER_CONFIG,
        Api::V0_1,
        "A listener's haproxy configuration",
        Body::None,
        &[(200, "The configuration", HAPROXY_CFG)],
    ),
    op("put", v0_1::LISTENER_CERTIFICATE, Api::V0_1, "Store a listener's certificate", PEM, CREATED),
    op("get", v0_1::LISTENER_CERTIFICATE, Api::V0_1, "The md5 of a stored certificate", Body::None, MD5),
    op("delete", v0_1::LISTENER_CERTIFICATE, Api::V0_1, "Delete a stored certificate", Body::None, OK),
    op("post", v0_1::PLUG_VIP, Api::V0_1, "Plug the VIP port found by its address", Body::None, ACCEPTED),
    op("post", v0_1::PLUG_NETWORK, Api::V0_1, "Plug every new network port found", Body::None, ACCEPTED),
    op(
        "post",
        v0_1::PLUG_NETWORK_SLASH,
        Api::V0_1,
        "Plug every new network port found (trailing slash)",
        Body::None,
        ACCEPTED,
    ),
    // appliance
    op(
        "get",
        appliance::STATUS,
        Api::Appliance,
        "Host, load and process counts",
        Body::None,
        &[(200, "The status", Body::Json("ApplianceStatus"))],
    ),
    op(
        "get",
        appliance::SERVICE_STATUS,
        Api::Appliance,
        "Each instance's haproxy: running, stopped or failed",
        Body::None,
        &[(200, "One block per instance", Body::Text("instance statuses"))],
    ),
    op(
        "get",
        appliance::INSTANCES,
        Api::Appliance,
        "Every instance (load balancer) id",
        Body::None,
        &[(200, "One id a line", Body::Text("instance ids"))],
    ),
    op("get", appliance::INSTANCE, Api::Appliance, "Whether an instance exists", Body::None, TEXT_OK),
    op("delete", appliance::INSTANCE, Api::Appliance, "Delete an instance, stopping its haproxy", Body::None, TEXT_OK),
    op(
        "put",
        appliance::INSTANCE_CERTIFICATE,
        Api::Appliance,
        "Store an instance's certificate (key required) and reload its haproxy",
        PEM,
        &[(201, "Stored", Body::Text("OK, and whether haproxy was reloaded"))],
    ),
];

/// The named schemas the operations refer to, with every schema they refer
/// to in turn, as OpenAPI components.
fn components() -> BTreeMap<String, Value> {
    let mut out = BTreeMap::new();
    fn add<T: ToSchema>(out: &mut BTreeMap<String, Value>, name: &str) {
        out.insert(name.to_owned(), serde_json::to_value(T::schema()).expect("schema"));
        let mut nested = Vec::new();
        T::schemas(&mut nested);
        for (nested_name, schema) in nested {
            out.entry(nested_name).or_insert_with(|| serde_json::to_value(schema).expect("schema"));
        }
    }
    add::<Versions>(&mut out, "Versions");
    add::<Info>(&mut out, "Info");
    // What the details' generic topology field refers to.
    add::<Topology>(&mut out, "Topology");
    add::<TopologyKind>(&mut out, "TopologyKind");
    add::<Details>(&mut out, "Details");
    add::<Details<TopologyKind>>(&mut out, "DetailsV0_1");
    add::<ListenerStatus>(&mut out, "ListenerStatus");
    add::<ListenerDetail>(&mut out, "ListenerDetail");
    add::<Message>(&mut out, "Message");
    add::<CertificateMd5>(&mut out, "CertificateMd5");
    add::<PlugVipRequest>(&mut out, "PlugVipRequest");
    add::<PlugNetworkRequest>(&mut out, "PlugNetworkRequest");
    add::<RuleRequest>(&mut out, "RuleRequest");
    add::<InterfaceLookup>(&mut out, "InterfaceLookup");
    add::<TopologyRequest>(&mut out, "TopologyRequest");
    add::<TopologyResponse>(&mut out, "TopologyResponse");
    add::<ApplianceStatus>(&mut out, "ApplianceStatus");
    out
}

fn reference(name: &str) -> Value {
    json!({ "$ref": format!("#/components/schemas/{name}") })
}

fn content(body: Body) -> Option<Value> {
    match body {
        Body::None => None,
        Body::Json(name) => Some(json!({ "application/json": { "schema": reference(name) } })),
        Body::JsonArray(name) => {
            Some(json!({ "application/json": { "schema": { "type": "array", "items": reference(name) } } }))
        }
        Body::Text(what) => Some(json!({ "text/plain": { "schema": { "type": "string", "description": what } } })),
    }
}

/// The `{name}` segments of a path template.
fn parameters(path: &str) -> Vec<&str> {
    path.split('/').filter_map(|s| s.strip_prefix('{')?.strip_suffix('}')).collect()
}

fn operation_id(o: &Operation) -> String {
    let words: Vec<String> = o
        .path
        .split('/')
        .filter(|s| !s.is_empty())
        .map(|s| s.trim_matches(['{', '}']).replace(['.', '-'], "_"))
        .collect();
    let tail = if o.path.ends_with('/') && o.path.len() > 1 { "_slash" } else { "" };
    format!("{}_{}{tail}", o.method, if words.is_empty() { "root".to_owned() } else { words.join("_") })
}

/// The OpenAPI 3.1 document.
pub fn document() -> Value {
    let mut paths: BTreeMap<&str, Map<String, Value>> = BTreeMap::new();
    for o in OPERATIONS {
        let mut responses = Map::new();
        for (status, description, body) in o.responses {
            let mut response = json!({ "description": description });
            if let Some(content) = content(*body) {
                response["content"] = content;
            }
            responses.insert(status.to_string(), response);
        }
        let mut error = json!({ "description": "An error: bad request, not found, conflict, busy or failure" });
        if let Some(content) = content(o.api.error()) {
            error["content"] = content;
        }
        responses.insert("default".into(), error);
        let mut operation = json!({
            "tags": [o.api.tag()],
            "summary": o.summary,
            "operationId": operation_id(o),
            "responses": responses,
        });
        let parameters: Vec<Value> = parameters(o.path)
            .into_iter()
            .map(|name| json!({ "name": name, "in": "path", "required": true, "schema": { "type": "string" } }))
            .collect();
        if !parameters.is_empty() {
            operation["parameters"] = Value::Array(parameters);
        }
        if let Some(content) = content(o.request) {
            operation["requestBody"] = json!({ "required": true, "content": content });
        }
        paths.entry(o.path).or_default().insert(o.method.to_owned(), operation);
    }
    json!({
        "openapi": "3.1.0",
        "info": {
            "title": "Octavia amphora agent",
            "version": amphora_proto::API_VERSION,
            "description": "The REST API of the agent in each load-balancer VM (amphora): 1.0 (what upstream \
                Octavia's controller uses), 0.1 and the appliance API. Every call is made over mutual TLS: the \
                controller presents a client certificate signed by the agent's agent_server_ca. Generated from \
                the code (crates/amphora-agent/src/http/openapi.rs); docs/agent-api.md is the readable form.",
            "license": { "name": "Apache-2.0" },
        },
        "tags": [
            { "name": "discovery", "description": "Version discovery, shared by 1.0 and 0.1" },
            { "name": "1.0", "description": "The API upstream's controller uses" },
            { "name": "0.1", "description": "The earlier specification: a listener plays the part of a load balancer" },
            { "name": "appliance", "description": "Unversioned paths; an instance is a load balancer" },
        ],
        "security": [{ "mutualTLS": [] }],
        "paths": paths,
        "components": {
            "schemas": components(),
            "securitySchemes": { "mutualTLS": { "type": "mutualTLS" } },
        },
    })
}

/// A schema's type in words, for the page.
fn type_of(schema: &Value) -> String {
    if let Some(target) = schema.get("$ref").and_then(Value::as_str) {
        let name = target.rsplit('/').next().unwrap_or(target);
        return format!("[{name}](#{})", name.to_lowercase());
    }
    if let Some(any) = schema.get("oneOf").or_else(|| schema.get("anyOf")).and_then(Value::as_array) {
        return any.iter().map(type_of).collect::<Vec<_>>().join(" or ");
    }
    if let Some(values) = schema.get("enum").and_then(Value::as_array) {
        let values: Vec<String> = values.iter().map(|v| format!("`{}`", v.as_str().unwrap_or_default())).collect();
        return format!("one of {}", values.join(", "));
    }
    let types: Vec<&str> = match schema.get("type") {
        Some(Value::String(t)) => vec![t.as_str()],
        Some(Value::Array(ts)) => ts.iter().filter_map(Value::as_str).collect(),
        _ => Vec::new(),
    };
    let described: Vec<String> = types
        .iter()
        .map(|t| match *t {
            "array" => format!("array of {}", schema.get("items").map_or("anything".to_owned(), type_of)),
            "object" => match schema.get("additionalProperties") {
                Some(values) if values.is_object() => format!("map of string to {}", type_of(values)),
                _ => "object".to_owned(),
            },
            "integer" => match schema.get("format").and_then(Value::as_str) {
                Some(format) => format!("integer ({format})"),
                None => "integer".to_owned(),
            },
            other => other.to_owned(),
        })
        .collect();
    if described.is_empty() { "any".to_owned() } else { described.join(" or ") }
}

fn body_words(body: Body) -> String {
    match body {
        Body::None => "-".to_owned(),
        Body::Json(name) => format!("[{name}](#{})", name.to_lowercase()),
        Body::JsonArray(name) => format!("array of [{name}](#{})", name.to_lowercase()),
        Body::Text(what) => format!("text: {what}"),
    }
}

/// The readable page: one table of operations per API, then the schemas.
pub fn page(document: &Value) -> String {
    let mut out = String::new();
    out.push_str(
        "# The amphora agent's API\n\n\
         Generated from the code with `docs/agent-openapi.json` (OpenAPI 3.1): do not edit;\n\
         run `AMPHORA_UPDATE_DOCS=1 cargo test -p amphora-agent --lib http::openapi` after changing\n\
         a route or a wire type. Every call is made over mutual TLS (the controller's client\n\
         certificate). Errors of the 1.0 and 0.1 APIs are a [Message](#message) with the status;\n\
         the appliance API answers text.\n",
    );
    let sections = [
        (Api::Common, "Discovery"),
        (Api::V1, "API 1.0 (upstream's controller)"),
        (Api::V0_1, "API 0.1"),
        (Api::Appliance, "Appliance API"),
    ];
    for (api, title) in sections {
        let _ = write!(out, "\n## {title}\n\n| method | path | request | success | what |\n|---|---|---|---|---|\n");
        for o in OPERATIONS.iter().filter(|o| o.api == api) {
            let success: Vec<String> =
                o.responses.iter().map(|(status, _, body)| format!("{status}: {}", body_words(*body))).collect();
            let _ = writeln!(
                out,
                "| {} | `{}` | {} | {} | {} |",
                o.method.to_uppercase(),
                o.path,
                body_words(o.request),
                success.join("; "),
                o.summary.replace('|', "\\|")
            );
        }
    }
    out.push_str("\n## Schemas\n");
    let schemas = document["components"]["schemas"].as_object().expect("schemas");
    for (name, schema) in schemas {
        let _ = write!(out, "\n### {name}\n\n");
        if let Some(description) = schema.get("description").and_then(Value::as_str) {
            let _ = writeln!(out, "{}\n", description.trim());
        }
        // A flattened struct is an allOf: the types it includes, then its
        // own fields.
        let parts: Vec<&Value> = match schema.get("allOf").and_then(Value::as_array) {
            Some(parts) => parts.iter().collect(),
            None => vec![schema],
        };
        for part in &parts {
            if part.get("$ref").is_some() {
                let _ = writeln!(out, "Every field of {}, and:\n", type_of(part));
            }
        }
        let Some(own) = parts.iter().find(|p| p.get("$ref").is_none()) else { continue };
        let schema = *own;
        match schema.get("properties").and_then(Value::as_object) {
            Some(properties) => {
                let required: Vec<&str> = schema
                    .get("required")
                    .and_then(Value::as_array)
                    .map(|r| r.iter().filter_map(Value::as_str).collect())
                    .unwrap_or_default();
                out.push_str("| field | type | required | meaning |\n|---|---|---|---|\n");
                for (field, property) in properties {
                    let meaning = property.get("description").and_then(Value::as_str).unwrap_or("");
                    let _ = writeln!(
                        out,
                        "| `{field}` | {} | {} | {} |",
                        type_of(property),
                        if required.contains(&field.as_str()) { "yes" } else { "no" },
                        meaning.replace('\n', " ").replace('|', "\\|")
                    );
                }
            }
            None => {
                let _ = writeln!(out, "{}", type_of(schema));
            }
        }
    }
    out
}

fn docs_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs")
}

/// Compares a committed file with what the code generates, or rewrites it
/// when `AMPHORA_UPDATE_DOCS` is set.
fn check_committed(name: &str, generated: &str) {
    let path = docs_dir().join(name);
    if std::env::var_os("AMPHORA_UPDATE_DOCS").is_some() {
        crate::fsutil::write_atomic(&path, generated.as_bytes(), 0o644).expect("write the document");
        return;
    }
    let committed = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        committed == generated,
        "docs/{name} differs from what the code generates; run \
         AMPHORA_UPDATE_DOCS=1 cargo test -p amphora-agent --lib http::openapi and commit it"
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    fn document_text() -> String {
        let mut text = serde_json::to_string_pretty(&document()).expect("JSON");
        text.push('\n');
        text
    }

    #[test]
    fn the_committed_openapi_document_is_the_generated_one() {
        check_committed("agent-openapi.json", &document_text());
    }

    #[test]
    fn the_committed_api_page_is_the_generated_one() {
        check_committed("agent-api.md", &page(&document()));
    }

    #[test]
    fn every_body_names_a_schema_of_the_document() {
        let doc = document();
        let schemas = doc["components"]["schemas"].as_object().expect("schemas");
        let mut refs = Vec::new();
        fn collect(value: &Value, refs: &mut Vec<String>) {
            match value {
                Value::Object(map) => {
                    if let Some(Value::String(target)) = map.get("$ref") {
                        refs.push(target.clone());
                    }
                    map.values().for_each(|v| collect(v, refs));
                }
                Value::Array(items) => items.iter().for_each(|v| collect(v, refs)),
                _ => {}
            }
        }
        collect(&doc, &mut refs);
        assert!(refs.len() > 40, "{refs:?}");
        for target in refs {
            let name = target.strip_prefix("#/components/schemas/").expect("a component reference");
            assert!(schemas.contains_key(name), "{target} has no schema");
        }
    }

    #[test]
    fn the_document_describes_the_wire_types_fields() {
        let doc = document();
        let schemas = &doc["components"]["schemas"];
        // Fields as the wire types serialize them, checked against a real
        // serialization of one value.
        let message = serde_json::to_value(Message::with_details("OK", "x")).expect("JSON");
        let documented: Vec<&String> =
            schemas["Message"]["properties"].as_object().expect("properties").keys().collect();
        let sent: Vec<&String> = message.as_object().expect("object").keys().collect();
        assert_eq!(documented, sent);
        assert_eq!(schemas["Message"]["required"], json!(["message"]));
        // A renamed field keeps its wire name; wire enums list their values.
        assert!(schemas["ListenerStatus"]["properties"]["type"].is_object(), "{}", schemas["ListenerStatus"]);
        assert_eq!(schemas["ListenerState"]["enum"][0], "ACTIVE", "{}", schemas["ListenerState"]);
        // The 0.1 details spell topologies their own way.
        assert_eq!(schemas["DetailsV0_1"]["allOf"][1]["properties"]["topology"], reference("TopologyKind"));
        assert_eq!(schemas["Details"]["allOf"][1]["properties"]["topology"], reference("Topology"));
        assert_eq!(schemas["Details"]["allOf"][0], reference("Info"), "the flattened info");
        assert_eq!(
            doc["paths"]["/1.0/loadbalancer/{first}/{second}/haproxy"]["put"]["parameters"][1]["name"],
            "second"
        );
    }
}
