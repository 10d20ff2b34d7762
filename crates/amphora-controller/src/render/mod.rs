//! The files the controller uploads to an amphora's agent, rendered from
//! the database as upstream's controller renders them, so the agent,
//! haproxy and keepalived see what upstream would send:
//!
//! - [`haproxy::combined`]: haproxy's configuration of a load balancer;
//! - [`keepalived::vrrp`]: keepalived's VRRP configuration (ACTIVE_STANDBY);
//! - [`lvs::listener`]: keepalived's LVS configuration of a UDP or SCTP
//!   listener;
//! - [`agent::agent_config`]: the agent's own configuration file.
//!
//! [`model::load`] reads what they need. The renderers are pure: the same
//! model always gives the same text.

pub mod agent;
pub mod haproxy;
pub mod keepalived;
pub mod lvs;
pub mod model;

/// Why a configuration cannot be rendered (a value upstream would render
/// into a broken file, or a fact the rendering needs is missing).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("cannot render: {0}")]
pub struct RenderError(pub String);
