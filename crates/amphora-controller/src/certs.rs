//! The controller's certificate authority.
//!
//! Upstream's `local_cert_generator` signs each amphora's server
//! certificate with a CA whose files the operator creates beforehand. Ours
//! creates that CA on first start when neither file exists (key mode 0600,
//! directory 0700), then issues from it: each amphora's server certificate
//! (subject alternative name = the amphora id, which is the name the
//! controller's client checks, as upstream's driver does) and the
//! controller's own client certificate (which the agents trust through
//! `[controller_worker] client_ca`).
//!
//! Keys are ECDSA P-256 by default: an RSA-2048 handshake costs the agent
//! about 0.5 ms of CPU, most of what a fresh connection costs it. RSA-2048
//! stays selectable (`[certificates] key_algorithm = rsa2048`, our option)
//! for operators whose policy requires it.

use std::fs::{File, OpenOptions};
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context as _, bail};
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SanType,
};
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject as _;
use time::OffsetDateTime;

use crate::config::{CertKeyAlgorithm, Certificates};

/// A certificate and its key in one PEM text (key first, as upstream's
/// `agent_server_cert` and `client_cert` files are laid out).
#[derive(Debug, Clone)]
pub struct Issued {
    pub pem: String,
    pub not_after: OffsetDateTime,
}

/// The controller's CA: signs amphora server certificates and the
/// controller's client certificate.
pub struct Ca {
    issuer: Issuer<'static, KeyPair>,
    cert_pem: String,
    algorithm: CertKeyAlgorithm,
    validity: Duration,
}

impl std::fmt::Debug for Ca {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ca").field("algorithm", &self.algorithm).finish_non_exhaustive()
    }
}

impl Ca {
    /// Loads the CA named by `[certificates] ca_certificate` /
    /// `ca_private_key`, creating both when neither exists. Several
    /// controllers starting at once agree on one CA (a lock file beside the
    /// key serialises the creation).
    pub fn load_or_create(settings: &Certificates) -> anyhow::Result<Ca> {
        let cert_path = &settings.ca_certificate;
        let key_path = &settings.ca_private_key;
        if !(cert_path.exists() && key_path.exists()) {
            let _lock = lock_beside(key_path)?;
            match (cert_path.exists(), key_path.exists()) {
                (true, true) => {}
                (false, false) => create_ca(settings)?,
                (true, false) => bail!("{} exists but its key {} does not", cert_path.display(), key_path.display()),
                (false, true) => {
                    bail!("{} exists but its certificate {} does not", key_path.display(), cert_path.display())
                }
            }
        }
        let cert_pem =
            std::fs::read_to_string(cert_path).with_context(|| format!("reading {}", cert_path.display()))?;
        let key_pem = std::fs::read_to_string(key_path).with_context(|| format!("reading {}", key_path.display()))?;
        let key = KeyPair::from_pem(&key_pem)
            .with_context(|| format!("{} is not a usable private key", key_path.display()))?;
        let issuer = Issuer::from_ca_cert_pem(&cert_pem, key)
            .with_context(|| format!("{} is not a CA certificate", cert_path.display()))?;
        Ok(Ca { issuer, cert_pem, algorithm: settings.key_algorithm, validity: settings.cert_validity_time })
    }

    /// The CA certificate, PEM.
    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    /// A server certificate for an amphora, valid for `cert_validity_time`.
    pub fn issue_server(&self, amphora_id: &str) -> anyhow::Result<Issued> {
        self.issue_server_for(amphora_id, self.validity)
    }

    /// A server certificate for an amphora with the given validity (tests
    /// of the rotation use short ones).
    pub fn issue_server_for(&self, amphora_id: &str, validity: Duration) -> anyhow::Result<Issued> {
        let name = SanType::DnsName(amphora_id.try_into().context("an amphora id is not a valid DNS name")?);
        self.issue(amphora_id, vec![name], ExtendedKeyUsagePurpose::ServerAuth, validity)
    }

    /// The controller's client certificate.
    pub fn issue_client(&self, common_name: &str) -> anyhow::Result<Issued> {
        self.issue(common_name, Vec::new(), ExtendedKeyUsagePurpose::ClientAuth, self.validity)
    }

    /// Makes sure `path` holds a client certificate of this CA that is
    /// valid for at least a tenth of `cert_validity_time` more; issues a
    /// new one otherwise. Returns the file's PEM.
    pub fn ensure_client_cert(&self, path: &Path) -> anyhow::Result<String> {
        if let Ok(pem) = std::fs::read_to_string(path)
            && self.still_valid(&pem)
        {
            return Ok(pem);
        }
        let _lock = lock_beside(path)?;
        if let Ok(pem) = std::fs::read_to_string(path)
            && self.still_valid(&pem)
        {
            return Ok(pem);
        }
        let issued = self.issue_client("octavia-controller")?;
        crate::fsutil::write_private(path, issued.pem.as_bytes())?;
        Ok(issued.pem)
    }

    /// Whether a PEM holds a certificate signed by this CA that stays valid
    /// for a tenth of the validity time.
    fn still_valid(&self, pem: &str) -> bool {
        let margin = time::Duration::try_from(self.validity / 10).unwrap_or(time::Duration::days(1));
        let (Some(cert), Some(ca)) = (first_certificate(pem), first_certificate(&self.cert_pem)) else {
            return false;
        };
        let Ok((_, parsed)) = x509_parser::parse_x509_certificate(&cert) else { return false };
        let Ok((_, ca)) = x509_parser::parse_x509_certificate(&ca) else { return false };
        let not_after = parsed.validity().not_after.to_datetime();
        parsed.issuer() == ca.subject() && not_after > OffsetDateTime::now_utc() + margin
    }

    fn issue(
        &self,
        common_name: &str,
        names: Vec<SanType>,
        usage: ExtendedKeyUsagePurpose,
        validity: Duration,
    ) -> anyhow::Result<Issued> {
        let mut params = CertificateParams::default();
        params.distinguished_name = dn(common_name);
        params.subject_alt_names = names;
        params.extended_key_usages = vec![usage];
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature, KeyUsagePurpose::KeyEncipherment];
        let now = OffsetDateTime::now_utc();
        // A little slack for clocks that disagree.
        params.not_before = now - time::Duration::minutes(5);
        params.not_after = now + time::Duration::try_from(validity).context("validity out of range")?;
        let key = generate_key(self.algorithm)?;
        let cert = params.signed_by(&key, &self.issuer).context("signing a certificate")?;
        Ok(Issued { pem: format!("{}{}", key.serialize_pem(), cert.pem()), not_after: params.not_after })
    }
}

fn first_certificate(pem: &str) -> Option<CertificateDer<'static>> {
    CertificateDer::pem_slice_iter(pem.as_bytes()).next()?.ok()
}

fn dn(common_name: &str) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, common_name);
    dn
}

fn generate_key(algorithm: CertKeyAlgorithm) -> anyhow::Result<KeyPair> {
    match algorithm {
        CertKeyAlgorithm::EcdsaP256 => {
            KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).context("generating a key")
        }
        CertKeyAlgorithm::Rsa2048 => {
            use rsa::pkcs8::EncodePrivateKey as _;
            // ring signs with RSA keys but cannot make them.
            let key = rsa::RsaPrivateKey::new(&mut rand_core::OsRng, 2048).context("generating an RSA key")?;
            let der = key.to_pkcs8_der().context("encoding an RSA key")?;
            let der = rustls_pki_types::PrivatePkcs8KeyDer::from(der.as_bytes());
            KeyPair::from_pkcs8_der_and_sign_algo(&der, &rcgen::PKCS_RSA_SHA256).context("loading an RSA key")
        }
    }
}

fn create_ca(settings: &Certificates) -> anyhow::Result<()> {
    let mut params = CertificateParams::default();
    params.distinguished_name = dn("Octavia controller CA");
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
    let now = OffsetDateTime::now_utc();
    params.not_before = now - time::Duration::minutes(5);
    // The CA outlives every certificate it signs by far.
    params.not_after = now + time::Duration::days(3650);
    let key = generate_key(settings.key_algorithm)?;
    let cert = params.self_signed(&key).context("signing the CA certificate")?;
    // The key first: a crash between the two leaves a key without a
    // certificate, which the next start reports instead of overwriting.
    crate::fsutil::write_private(&settings.ca_private_key, key.serialize_pem().as_bytes())?;
    crate::fsutil::write_file(&settings.ca_certificate, cert.pem().as_bytes(), 0o644)?;
    tracing::info!(certificate = %settings.ca_certificate.display(), "created the controller CA");
    Ok(())
}

/// An exclusive lock on `<path>.lock`, released when dropped.
fn lock_beside(path: &Path) -> anyhow::Result<File> {
    crate::fsutil::make_parent(path)?;
    let mut name = path.as_os_str().to_owned();
    name.push(".lock");
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .mode(0o600)
        .open(PathBuf::from(&name))
        .with_context(|| format!("opening {}", PathBuf::from(&name).display()))?;
    file.lock().with_context(|| format!("locking {}", PathBuf::from(&name).display()))?;
    Ok(file)
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt as _;

    use x509_parser::prelude::{GeneralName, X509Certificate};

    use super::*;

    fn settings(dir: &Path, algorithm: CertKeyAlgorithm) -> Certificates {
        Certificates {
            ca_certificate: dir.join("certs/ca_01.pem"),
            ca_private_key: dir.join("certs/private/cakey.pem"),
            cert_validity_time: Duration::from_secs(3600),
            key_algorithm: algorithm,
            client_cert: dir.join("certs/client.pem"),
            server_ca: dir.join("certs/ca_01.pem"),
            client_ca: dir.join("certs/ca_01.pem"),
        }
    }

    fn der_of(pem: &str) -> Vec<u8> {
        first_certificate(pem).expect("a certificate").to_vec()
    }

    fn with_cert<T>(pem: &str, f: impl FnOnce(&X509Certificate<'_>) -> T) -> T {
        let der = der_of(pem);
        let (_, cert) = x509_parser::parse_x509_certificate(&der).expect("parses");
        f(&cert)
    }

    #[test]
    fn first_start_creates_a_ca_with_a_private_key_and_later_starts_reuse_it() {
        let dir = tempfile::tempdir().unwrap();
        let s = settings(dir.path(), CertKeyAlgorithm::EcdsaP256);
        let ca = Ca::load_or_create(&s).unwrap();
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&s.ca_private_key), 0o600);
        assert_eq!(mode(s.ca_private_key.parent().unwrap()), 0o700);
        let again = Ca::load_or_create(&s).unwrap();
        assert_eq!(ca.cert_pem(), again.cert_pem(), "a second start must not make a new CA");
        with_cert(ca.cert_pem(), |c| assert!(c.is_ca()));
    }

    #[test]
    fn a_ca_key_without_its_certificate_is_an_error_not_a_new_ca() {
        let dir = tempfile::tempdir().unwrap();
        let s = settings(dir.path(), CertKeyAlgorithm::EcdsaP256);
        Ca::load_or_create(&s).unwrap();
        std::fs::remove_file(&s.ca_certificate).unwrap();
        let key_before = std::fs::read(&s.ca_private_key).unwrap();
        let err = Ca::load_or_create(&s).unwrap_err().to_string();
        assert!(err.contains("exists but its certificate"), "{err}");
        assert_eq!(std::fs::read(&s.ca_private_key).unwrap(), key_before);
    }

    #[test]
    fn a_server_certificate_names_the_amphora_and_is_signed_by_the_ca_with_a_p256_key() {
        let dir = tempfile::tempdir().unwrap();
        let ca = Ca::load_or_create(&settings(dir.path(), CertKeyAlgorithm::EcdsaP256)).unwrap();
        let id = "0b7f3a52-5d1e-4a0e-9d59-2f7d2a3c4b5e";
        let before = OffsetDateTime::now_utc();
        let issued = ca.issue_server(id).unwrap();
        assert!(issued.pem.starts_with("-----BEGIN PRIVATE KEY-----"), "key first, as upstream's files");
        let ca_subject = with_cert(ca.cert_pem(), |c| c.subject().to_string());
        with_cert(&issued.pem, |c| {
            assert_eq!(c.issuer().to_string(), ca_subject);
            let san = c.subject_alternative_name().unwrap().unwrap();
            assert_eq!(san.value.general_names, vec![GeneralName::DNSName(id)]);
            // id-ecPublicKey with the prime256v1 curve.
            assert_eq!(c.public_key().algorithm.algorithm.to_id_string(), "1.2.840.10045.2.1");
            let not_after = c.validity().not_after.to_datetime();
            let expected = before + time::Duration::hours(1);
            assert!((not_after - expected).abs() < time::Duration::minutes(1), "{not_after} vs {expected}");
            assert_eq!(not_after, issued.not_after.replace_nanosecond(0).unwrap());
        });
    }

    #[test]
    fn rsa_stays_selectable() {
        let dir = tempfile::tempdir().unwrap();
        let ca = Ca::load_or_create(&settings(dir.path(), CertKeyAlgorithm::Rsa2048)).unwrap();
        let issued = ca.issue_server("amphora-1").unwrap();
        with_cert(&issued.pem, |c| {
            // rsaEncryption
            assert_eq!(c.public_key().algorithm.algorithm.to_id_string(), "1.2.840.113549.1.1.1");
        });
    }

    #[test]
    fn the_client_certificate_is_issued_once_and_replaced_when_another_ca_signed_it() {
        let dir = tempfile::tempdir().unwrap();
        let s = settings(dir.path(), CertKeyAlgorithm::EcdsaP256);
        let ca = Ca::load_or_create(&s).unwrap();
        let first = ca.ensure_client_cert(&s.client_cert).unwrap();
        assert_eq!(ca.ensure_client_cert(&s.client_cert).unwrap(), first, "a valid certificate is kept");
        let mode = std::fs::metadata(&s.client_cert).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);

        let other_dir = tempfile::tempdir().unwrap();
        let other = Ca::load_or_create(&settings(other_dir.path(), CertKeyAlgorithm::EcdsaP256)).unwrap();
        crate::fsutil::write_private(&s.client_cert, other.issue_client("intruder").unwrap().pem.as_bytes()).unwrap();
        let replaced = ca.ensure_client_cert(&s.client_cert).unwrap();
        let ca_subject = with_cert(ca.cert_pem(), |c| c.subject().to_string());
        with_cert(&replaced, |c| assert_eq!(c.issuer().to_string(), ca_subject));
    }
}
