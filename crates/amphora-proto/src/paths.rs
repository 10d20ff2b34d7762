//! Every URL path of the agent, in one place: route templates in the
//! router's syntax (`{name}` for one path segment), used by the agent's
//! routers, and builders that fill them, used by clients. A builder always
//! fills its own template, so the two cannot drift apart; each value is
//! percent-encoded as one path segment, so no value can reach another route.

/// Version discovery.
pub const ROOT: &str = "/";
/// The one unversioned route of both the 1.0 and 0.1 specifications.
pub const INFO: &str = "/info";

/// The 1.0 API.
pub mod v1 {
    use super::fill;
    use crate::Action;

    pub const INFO: &str = "/1.0/info";
    pub const DETAILS: &str = "/1.0/details";
    pub const LISTENERS: &str = "/1.0/listeners";
    /// GET a listener's status; DELETE a load balancer.
    pub const LISTENER: &str = "/1.0/listeners/{id}";
    /// GET a load balancer's haproxy configuration.
    pub const LB_CONFIG: &str = "/1.0/loadbalancer/{first}/haproxy";
    /// PUT a start, stop or reload: `{lb}/{action}`.
    pub const LB_ACTION: &str = "/1.0/loadbalancer/{first}/{second}";
    /// PUT a load balancer's haproxy configuration: `{amphora}/{lb}`.
    pub const LB_UPLOAD_CONFIG: &str = "/1.0/loadbalancer/{first}/{second}/haproxy";
    /// PUT, GET (md5) or DELETE a certificate of a load balancer.
    pub const LB_CERTIFICATE: &str = "/1.0/loadbalancer/{first}/certificates/{filename}";
    /// PUT the agent's own server certificate.
    pub const SERVER_CERTIFICATE: &str = "/1.0/certificate";
    pub const PLUG_VIP: &str = "/1.0/plug/vip/{vip}";
    pub const PLUG_NETWORK: &str = "/1.0/plug/network";
    /// Upstream's controller posts with a trailing slash.
    pub const PLUG_NETWORK_SLASH: &str = "/1.0/plug/network/";
    pub const INTERFACE: &str = "/1.0/interface/{ip}";
    pub const INTERFACE_RULES: &str = "/1.0/interface/{ip}/rules";
    pub const VRRP_UPLOAD: &str = "/1.0/vrrp/upload";
    pub const VRRP_ACTION: &str = "/1.0/vrrp/{action}";
    /// PUT the agent's configuration.
    pub const AGENT_CONFIG: &str = "/1.0/config";
    /// GET a UDP or SCTP listener's keepalived (LVS) configuration.
    pub const LVS_CONFIG: &str = "/1.0/listeners/{id}/udp_listener";
    /// PUT a UDP or SCTP listener's keepalived (LVS) configuration:
    /// `{amphora}/{listener}`.
    pub const LVS_UPLOAD_CONFIG: &str = "/1.0/listeners/{first}/{second}/udp_listener";

    pub fn listener(id: &str) -> String {
        fill(LISTENER, &[id])
    }

    pub fn lb_config(lb: &str) -> String {
        fill(LB_CONFIG, &[lb])
    }

    pub fn lb_action(lb: &str, action: Action) -> String {
        fill(LB_ACTION, &[lb, action.as_str()])
    }

    pub fn lb_upload_config(amphora: &str, lb: &str) -> String {
        fill(LB_UPLOAD_CONFIG, &[amphora, lb])
    }

    pub fn lb_certificate(lb: &str, filename: &str) -> String {
        fill(LB_CERTIFICATE, &[lb, filename])
    }

    pub fn lvs_config(listener: &str) -> String {
        fill(LVS_CONFIG, &[listener])
    }

    pub fn lvs_upload_config(amphora: &str, listener: &str) -> String {
        fill(LVS_UPLOAD_CONFIG, &[amphora, listener])
    }

    pub fn plug_vip(vip: &str) -> String {
        fill(PLUG_VIP, &[vip])
    }

    pub fn interface(ip: &str) -> String {
        fill(INTERFACE, &[ip])
    }

    pub fn interface_rules(ip: &str) -> String {
        fill(INTERFACE_RULES, &[ip])
    }

    pub fn vrrp_action(action: Action) -> String {
        fill(VRRP_ACTION, &[action.as_str()])
    }
}

/// The 0.1 API: a listener id plays the part of the 1.0 load balancer id.
pub mod v0_1 {
    use super::fill;
    use crate::Action;

    pub const TOPOLOGY: &str = "/v0.1/topology";
    pub const INFO: &str = "/v0.1/info";
    pub const DETAILS: &str = "/v0.1/details";
    pub const LISTENERS: &str = "/v0.1/listeners";
    pub const LISTENER: &str = "/v0.1/listeners/{listener}";
    pub const LISTENER_ACTION: &str = "/v0.1/listeners/{listener}/{action}";
    pub const LISTENER_CONFIG: &str = "/v0.1/listeners/{listener}/haproxy";
    pub const LISTENER_CERTIFICATE: &str = "/v0.1/listeners/{listener}/certificates/{filename}";
    pub const PLUG_VIP: &str = "/v0.1/plug/vip/{vip}";
    pub const PLUG_NETWORK: &str = "/v0.1/plug/network";
    pub const PLUG_NETWORK_SLASH: &str = "/v0.1/plug/network/";

    pub fn listener(id: &str) -> String {
        fill(LISTENER, &[id])
    }

    pub fn listener_action(id: &str, action: Action) -> String {
        fill(LISTENER_ACTION, &[id, action.as_str()])
    }

    pub fn listener_config(id: &str) -> String {
        fill(LISTENER_CONFIG, &[id])
    }

    pub fn listener_certificate(id: &str, filename: &str) -> String {
        fill(LISTENER_CERTIFICATE, &[id, filename])
    }

    pub fn plug_vip(vip: &str) -> String {
        fill(PLUG_VIP, &[vip])
    }
}

/// The appliance API: unversioned paths, an instance being a load balancer.
pub mod appliance {
    use super::fill;

    pub const STATUS: &str = "/status";
    pub const SERVICE_STATUS: &str = "/service_status";
    pub const INSTANCES: &str = "/instances";
    pub const INSTANCE: &str = "/instances/{instance}";
    pub const INSTANCE_CERTIFICATE: &str = "/instances/{instance}/certificates/{filename}";

    pub fn instance(id: &str) -> String {
        fill(INSTANCE, &[id])
    }

    pub fn instance_certificate(id: &str, filename: &str) -> String {
        fill(INSTANCE_CERTIFICATE, &[id, filename])
    }
}

/// Fills a template's `{name}` segments, in order, with `values`, each
/// percent-encoded as one path segment. Surplus values are ignored and
/// missing ones leave the placeholder, which no route accepts as a value
/// a client meant; the builders above always pass the right number.
pub fn fill(template: &str, values: &[&str]) -> String {
    let mut values = values.iter();
    let mut out = String::with_capacity(template.len() + 40);
    for (i, segment) in template.split('/').enumerate() {
        if i > 0 {
            out.push('/');
        }
        if is_placeholder(segment)
            && let Some(value) = values.next()
        {
            encode_segment(value, &mut out);
        } else {
            out.push_str(segment);
        }
    }
    out
}

/// Whether `path` (as sent, before percent-decoding) is one that
/// `template` routes: the same literal segments, and one non-empty segment
/// for each placeholder.
pub fn matches(template: &str, path: &str) -> bool {
    let path = path.split(['?', '#']).next().unwrap_or_default();
    let mut wanted = template.split('/');
    let mut given = path.split('/');
    loop {
        match (wanted.next(), given.next()) {
            (None, None) => return true,
            (Some(w), Some(g)) if is_placeholder(w) => {
                if g.is_empty() {
                    return false;
                }
            }
            (Some(w), Some(g)) if w == g => {}
            _ => return false,
        }
    }
}

fn is_placeholder(segment: &str) -> bool {
    segment.len() > 2 && segment.starts_with('{') && segment.ends_with('}')
}

/// Percent-encodes everything but RFC 3986's unreserved characters and
/// ':' (IPv6 addresses stay readable, as upstream sends them).
fn encode_segment(value: &str, out: &mut String) {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    for byte in value.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~' | b':') {
            out.push(byte as char);
        } else {
            out.push('%');
            out.push(HEX[usize::from(byte >> 4)] as char);
            out.push(HEX[usize::from(byte & 0xf)] as char);
        }
    }
    // "." and ".." are path operations, not values.
    if value == "." || value == ".." {
        out.truncate(out.len() - value.len());
        out.push_str(if value == "." { "%2E" } else { "%2E%2E" });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Action;

    const LB: &str = "5e4bd1ae-4a73-4d26-a4b5-4a3ac1b8a0a2";
    const AMP: &str = "0b4b3c10-cb6e-4b1b-8c36-6d4a1e4a7fb1";

    #[test]
    fn builders_give_the_paths_upstream_sends() {
        assert_eq!(v1::lb_upload_config(AMP, LB), format!("/1.0/loadbalancer/{AMP}/{LB}/haproxy"));
        assert_eq!(v1::lb_action(LB, Action::Reload), format!("/1.0/loadbalancer/{LB}/reload"));
        assert_eq!(
            v1::lb_certificate(LB, "www.example.com.pem"),
            format!("/1.0/loadbalancer/{LB}/certificates/www.example.com.pem")
        );
        assert_eq!(v1::lvs_upload_config(AMP, LB), format!("/1.0/listeners/{AMP}/{LB}/udp_listener"));
        assert_eq!(v1::lvs_config(LB), format!("/1.0/listeners/{LB}/udp_listener"));
        assert_eq!(v1::plug_vip("2001:db8::5"), "/1.0/plug/vip/2001:db8::5");
        assert_eq!(v1::interface_rules("10.0.0.1"), "/1.0/interface/10.0.0.1/rules");
        assert_eq!(v1::vrrp_action(Action::Start), "/1.0/vrrp/start");
        assert_eq!(v0_1::listener_action(LB, Action::Stop), format!("/v0.1/listeners/{LB}/stop"));
        assert_eq!(appliance::instance_certificate(LB, "a.pem"), format!("/instances/{LB}/certificates/a.pem"));
    }

    #[test]
    fn values_cannot_leave_their_segment() {
        assert_eq!(v1::listener("../x"), "/1.0/listeners/..%2Fx");
        assert_eq!(v1::listener(".."), "/1.0/listeners/%2E%2E");
        assert_eq!(v1::listener("."), "/1.0/listeners/%2E");
        assert_eq!(v1::listener("a b?c#d%"), "/1.0/listeners/a%20b%3Fc%23d%25");
        assert_eq!(v1::listener("é"), "/1.0/listeners/%C3%A9");
    }

    #[test]
    fn every_built_path_matches_its_template_only() {
        let built = [
            (v1::LISTENER, v1::listener(LB)),
            (v1::LB_CONFIG, v1::lb_config(LB)),
            (v1::LB_ACTION, v1::lb_action(LB, Action::Start)),
            (v1::LB_UPLOAD_CONFIG, v1::lb_upload_config(AMP, LB)),
            (v1::LB_CERTIFICATE, v1::lb_certificate(LB, "x.pem")),
            (v1::LVS_CONFIG, v1::lvs_config(LB)),
            (v1::LVS_UPLOAD_CONFIG, v1::lvs_upload_config(AMP, LB)),
            (v1::PLUG_VIP, v1::plug_vip("10.0.0.1")),
            (v1::INTERFACE, v1::interface("10.0.0.1")),
            (v1::INTERFACE_RULES, v1::interface_rules("10.0.0.1")),
            (v1::VRRP_ACTION, v1::vrrp_action(Action::Stop)),
            (v0_1::LISTENER, v0_1::listener(LB)),
            (v0_1::LISTENER_ACTION, v0_1::listener_action(LB, Action::Start)),
            (v0_1::LISTENER_CERTIFICATE, v0_1::listener_certificate(LB, "x.pem")),
            (appliance::INSTANCE, appliance::instance(LB)),
        ];
        for (template, path) in &built {
            assert!(matches(template, path), "{path} should match {template}");
            assert!(!matches(template, &format!("{path}/extra")), "{path}/extra");
        }
        assert!(matches(v1::DETAILS, "/1.0/details?x=1"));
        assert!(!matches(v1::LISTENER, "/1.0/listeners/"));
        assert!(!matches(v1::LB_CONFIG, "/1.0/loadbalancer/x/y"));
    }
}
