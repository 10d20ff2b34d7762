//! A throwaway PKI shaped like Octavia's: one CA signs the amphora's server
//! certificate (the controller trusts it), another signs the controller's
//! client certificate (the agent trusts it, `agent_server_ca`).

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose, SanType,
};
use time::{Duration, OffsetDateTime};

/// A certificate with its private key, in PEM.
#[derive(Debug, Clone)]
pub struct Identity {
    pub cert_pem: String,
    pub key_pem: String,
}

impl Identity {
    /// Key then certificate in one file, the layout upstream uses for
    /// `agent_server_cert` and the controller's `client_cert`.
    pub fn combined_pem(&self) -> String {
        format!("{}{}", self.key_pem, self.cert_pem)
    }
}

/// A certificate authority.
#[derive(Debug)]
pub struct Ca {
    issuer: CertifiedIssuer<'static, KeyPair>,
}

impl Ca {
    pub fn new(name: &str) -> Self {
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        params.distinguished_name = dn(name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages =
            vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
        params.not_before = OffsetDateTime::now_utc() - Duration::days(1);
        params.not_after = OffsetDateTime::now_utc() + Duration::days(3650);
        let key = KeyPair::generate().expect("CA key");
        Self { issuer: CertifiedIssuer::self_signed(params, key).expect("CA certificate") }
    }

    pub fn cert_pem(&self) -> String {
        self.issuer.pem()
    }

    fn issue(
        &self,
        common_name: &str,
        names: &[&str],
        usage: ExtendedKeyUsagePurpose,
        not_before: OffsetDateTime,
        not_after: OffsetDateTime,
    ) -> Identity {
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("params");
        params.distinguished_name = dn(common_name);
        params.subject_alt_names = names
            .iter()
            .map(|n| match n.parse::<std::net::IpAddr>() {
                Ok(ip) => SanType::IpAddress(ip),
                Err(_) => SanType::DnsName((*n).try_into().expect("DNS name")),
            })
            .collect();
        params.extended_key_usages = vec![usage];
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature, KeyUsagePurpose::KeyEncipherment];
        params.not_before = not_before;
        params.not_after = not_after;
        let key = KeyPair::generate().expect("key");
        let cert = params.signed_by(&key, &self.issuer).expect("certificate");
        Identity { cert_pem: cert.pem(), key_pem: key.serialize_pem() }
    }

    /// A server certificate valid for `names` (DNS names or IP addresses).
    pub fn server(&self, common_name: &str, names: &[&str]) -> Identity {
        let now = OffsetDateTime::now_utc();
        self.issue(
            common_name,
            names,
            ExtendedKeyUsagePurpose::ServerAuth,
            now - Duration::days(1),
            now + Duration::days(365),
        )
    }

    /// A client certificate.
    pub fn client(&self, common_name: &str) -> Identity {
        let now = OffsetDateTime::now_utc();
        self.issue(
            common_name,
            &[],
            ExtendedKeyUsagePurpose::ClientAuth,
            now - Duration::days(1),
            now + Duration::days(365),
        )
    }

    /// A client certificate whose validity ended yesterday.
    pub fn expired_client(&self, common_name: &str) -> Identity {
        let now = OffsetDateTime::now_utc();
        self.issue(
            common_name,
            &[],
            ExtendedKeyUsagePurpose::ClientAuth,
            now - Duration::days(30),
            now - Duration::days(1),
        )
    }
}

fn dn(common_name: &str) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, common_name);
    dn
}

/// Everything one amphora and its controller need.
#[derive(Debug)]
pub struct Pki {
    pub server_ca: Ca,
    pub client_ca: Ca,
    /// The agent's certificate: valid for the amphora id (the name
    /// upstream's controller checks), localhost and the loopback addresses.
    pub server: Identity,
    /// The controller's certificate.
    pub client: Identity,
}

impl Pki {
    pub fn new(amphora_id: &str) -> Self {
        let server_ca = Ca::new("Octavia amphora server CA (throwaway)");
        let client_ca = Ca::new("Octavia controller client CA (throwaway)");
        let server = server_ca.server(amphora_id, &[amphora_id, "localhost", "127.0.0.1", "::1"]);
        let client = client_ca.client("octavia-controller");
        Self { server_ca, client_ca, server, client }
    }
}
