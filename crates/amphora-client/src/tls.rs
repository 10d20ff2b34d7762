//! Mutual TLS with an amphora, checked as upstream's driver checks it: the
//! server certificate must chain to the amphora CA and name the amphora id
//! (a subjectAltName DNS entry, or the common name when the certificate has
//! no DNS names, as Python's `match_hostname` falls back). The address the
//! client connects to plays no part in the check.

use std::sync::Arc;

use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{CertificateError, ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};

use crate::error::ClientError;

/// What a controller presents and trusts: the CA that signs amphora server
/// certificates (upstream's `[haproxy_amphora] server_ca`) and its own
/// client certificate and key (`client_cert`). Cheap to clone; build it
/// once and share it between the clients of every amphora.
#[derive(Clone)]
pub struct Credentials {
    roots: Arc<RootCertStore>,
    chain: Vec<CertificateDer<'static>>,
    key: Arc<PrivateKeyDer<'static>>,
    provider: Arc<rustls::crypto::CryptoProvider>,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials").field("roots", &self.roots.len()).field("chain", &self.chain.len()).finish()
    }
}

impl Credentials {
    /// `server_ca_pem`: one or more CA certificates. `client_pem`: the
    /// client certificate chain and its private key, in one PEM text (the
    /// layout of upstream's `client_cert`) or concatenated from two.
    pub fn from_pem(server_ca_pem: &[u8], client_pem: &[u8]) -> Result<Self, ClientError> {
        let bad = |what: &str, e: &dyn std::fmt::Display| ClientError::Credentials(format!("{what}: {e}"));
        let mut roots = RootCertStore::empty();
        for cert in CertificateDer::pem_slice_iter(server_ca_pem) {
            roots.add(cert.map_err(|e| bad("server CA", &e))?).map_err(|e| bad("server CA", &e))?;
        }
        if roots.is_empty() {
            return Err(ClientError::Credentials("no CA certificate in the server CA".into()));
        }
        let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(client_pem)
            .collect::<Result<_, _>>()
            .map_err(|e| bad("client certificate", &e))?;
        if chain.is_empty() {
            return Err(ClientError::Credentials("no certificate in the client certificate".into()));
        }
        let key = PrivateKeyDer::from_pem_slice(client_pem).map_err(|e| bad("client key", &e))?;
        Ok(Self {
            roots: Arc::new(roots),
            chain,
            key: Arc::new(key),
            provider: Arc::new(rustls::crypto::ring::default_provider()),
        })
    }

    /// The TLS configuration for talking to one amphora.
    pub(crate) fn client_config(&self, amphora_id: &str) -> Result<Arc<ClientConfig>, ClientError> {
        let verifier = AmphoraVerifier::new(self.roots.clone(), self.provider.clone(), amphora_id)?;
        let config = ClientConfig::builder_with_provider(self.provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| ClientError::Credentials(e.to_string()))?
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(verifier))
            .with_client_auth_cert(self.chain.clone(), self.key.clone_key())
            .map_err(|e| ClientError::Credentials(format!("client certificate and key: {e}")))?;
        Ok(Arc::new(config))
    }
}

/// webpki's chain and signature checks, with the name pinned to the
/// amphora id whatever address was dialled.
#[derive(Debug)]
struct AmphoraVerifier {
    webpki: Arc<WebPkiServerVerifier>,
    name: ServerName<'static>,
    amphora_id: String,
}

impl AmphoraVerifier {
    fn new(
        roots: Arc<RootCertStore>,
        provider: Arc<rustls::crypto::CryptoProvider>,
        amphora_id: &str,
    ) -> Result<Self, ClientError> {
        let name =
            ServerName::try_from(amphora_id.to_owned()).map_err(|_| ClientError::AmphoraId(amphora_id.into()))?;
        if !matches!(name, ServerName::DnsName(_)) {
            return Err(ClientError::AmphoraId(amphora_id.into()));
        }
        let webpki = WebPkiServerVerifier::builder_with_provider(roots, provider)
            .build()
            .map_err(|e| ClientError::Credentials(e.to_string()))?;
        Ok(Self { webpki, name, amphora_id: amphora_id.to_owned() })
    }
}

impl ServerCertVerifier for AmphoraVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _dialled: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        match self.webpki.verify_server_cert(end_entity, intermediates, &self.name, ocsp_response, now) {
            // webpki checks the chain before the name, so only the name is
            // wrong here; it reads DNS names only.
            Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) if common_name_is(end_entity, &self.amphora_id) => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.webpki.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.webpki.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.webpki.supported_verify_schemes()
    }
}

/// Python's rule: the common name counts only when the certificate has no
/// DNS name in its subjectAltName.
fn common_name_is(cert: &CertificateDer<'_>, amphora_id: &str) -> bool {
    let Ok((_, cert)) = x509_parser::parse_x509_certificate(cert.as_ref()) else { return false };
    let has_dns_names = cert.subject_alternative_name().ok().flatten().is_some_and(|san| {
        san.value.general_names.iter().any(|n| matches!(n, x509_parser::extensions::GeneralName::DNSName(_)))
    });
    if has_dns_names {
        return false;
    }
    let mut names = cert.subject().iter_common_name();
    match (names.next().and_then(|cn| cn.as_str().ok()), names.next()) {
        (Some(cn), None) => cn.eq_ignore_ascii_case(amphora_id),
        _ => false,
    }
}

/// The rustls error under an I/O or hyper error, if TLS refused something.
pub(crate) fn refusal(error: &(dyn std::error::Error + 'static)) -> Option<rustls::Error> {
    let mut current = Some(error);
    while let Some(e) = current {
        if let Some(tls) = e.downcast_ref::<rustls::Error>() {
            return match tls {
                rustls::Error::InvalidCertificate(_)
                | rustls::Error::NoCertificatesPresented
                | rustls::Error::AlertReceived(
                    rustls::AlertDescription::BadCertificate
                    | rustls::AlertDescription::UnknownCA
                    | rustls::AlertDescription::CertificateExpired
                    | rustls::AlertDescription::CertificateRevoked
                    | rustls::AlertDescription::CertificateUnknown
                    | rustls::AlertDescription::CertificateRequired
                    | rustls::AlertDescription::UnsupportedCertificate
                    | rustls::AlertDescription::AccessDenied
                    | rustls::AlertDescription::HandshakeFailure
                    | rustls::AlertDescription::ProtocolVersion,
                ) => Some(tls.clone()),
                _ => None,
            };
        }
        // An io::Error wrapping the rustls error exposes it through get_ref.
        if let Some(io) = e.downcast_ref::<std::io::Error>()
            && let Some(inner) = io.get_ref()
            && let Some(tls) = refusal(inner)
        {
            return Some(tls);
        }
        current = e.source();
    }
    None
}
