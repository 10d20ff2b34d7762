//! Certificate files: their names, and what makes a PEM upload acceptable.
//!
//! haproxy reads these files; the controller uploads them. A file is one or
//! more PEM sections in any order: certificates (the first one is the
//! server certificate, the rest its chain), at most one private key that
//! must belong to the first certificate, and CRLs. A CA bundle or a CRL
//! alone is fine (client authentication); an encrypted key is not, since
//! haproxy could not read it without a passphrase.

use std::fmt;
use std::sync::Arc;

use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs1KeyDer, PrivatePkcs8KeyDer, PrivateSec1KeyDer};
use rustls::sign::CertifiedKey;
use x509_parser::der_parser::ber::{BerObject, BerObjectContent};
use x509_parser::der_parser::oid;
use x509_parser::pem::Pem;
use x509_parser::public_key::PublicKey;

/// A certificate file name: `www.example.com.pem`, `WILDCARD.example.com.pem`,
/// or the controller's `{uuid}.pem`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertFileName(String);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not a certificate file name (letters, digits, '.', '-', '_', ending in .pem)")]
pub struct BadFileName(pub String);

impl CertFileName {
    pub fn parse(raw: &str) -> Result<Self, BadFileName> {
        let stem = raw.strip_suffix(".pem").unwrap_or("");
        let valid = !stem.is_empty()
            && raw.len() <= 255
            && !raw.starts_with('.')
            && !raw.contains("..")
            && raw.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_'));
        if valid { Ok(Self(raw.to_owned())) } else { Err(BadFileName(raw.to_owned())) }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for CertFileName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Why a PEM upload was refused. The messages are the specification's.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PemError {
    #[error("No certificate found")]
    NoCertificate,
    #[error("No RSA key found")]
    NoKey,
    #[error("Certificate and key do not match")]
    Mismatch(String),
    #[error("Private key is encrypted")]
    EncryptedKey,
    #[error("Invalid private key")]
    BadKey(String),
    #[error("Invalid certificate")]
    BadCertificate(String),
    #[error("Invalid PEM data")]
    BadPem(String),
}

impl PemError {
    /// What to tell the operator beyond the message.
    pub fn details(&self) -> Option<String> {
        match self {
            PemError::EncryptedKey => {
                Some("haproxy cannot read an encrypted private key: upload it unencrypted".into())
            }
            PemError::Mismatch(d) | PemError::BadKey(d) | PemError::BadCertificate(d) | PemError::BadPem(d) => {
                Some(d.clone())
            }
            PemError::NoCertificate | PemError::NoKey => None,
        }
    }
}

/// What an accepted upload holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Contents {
    pub certificates: usize,
    pub crls: usize,
    pub key: bool,
}

/// Whether a private key is required.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyRule {
    /// Load balancer files: a key is optional (CA bundles, CRLs).
    Optional,
    /// The agent's own server certificate.
    Required,
}

/// Checks a PEM upload with a real X.509 parser.
pub fn validate(pem: &[u8], rule: KeyRule) -> Result<Contents, PemError> {
    let text = String::from_utf8_lossy(pem);
    if text.contains("-----BEGIN ENCRYPTED PRIVATE KEY-----") || text.contains("Proc-Type: 4,ENCRYPTED") {
        return Err(PemError::EncryptedKey);
    }
    let mut certificates = Vec::new();
    let mut crls = 0;
    let mut keys = Vec::new();
    for section in Pem::iter_from_buffer(pem) {
        let section = section.map_err(|e| PemError::BadPem(format!("cannot decode a PEM section: {e}")))?;
        match section.label.as_str() {
            "CERTIFICATE" | "TRUSTED CERTIFICATE" => {
                let number = certificates.len() + 1;
                match x509_parser::parse_x509_certificate(&section.contents) {
                    Ok((&[], _)) => certificates.push(section.contents),
                    Ok(_) => return Err(PemError::BadCertificate(format!("certificate {number} has trailing data"))),
                    Err(e) => return Err(PemError::BadCertificate(format!("certificate {number}: {e}"))),
                }
            }
            "X509 CRL" => match x509_parser::parse_x509_crl(&section.contents) {
                Ok(_) => crls += 1,
                Err(e) => return Err(PemError::BadCertificate(format!("CRL {}: {e}", crls + 1))),
            },
            "PRIVATE KEY" | "RSA PRIVATE KEY" | "EC PRIVATE KEY" => keys.push(section),
            // DH parameters and the like are haproxy's business.
            _ => {}
        }
    }
    if certificates.is_empty() && (crls == 0 || !keys.is_empty() || rule == KeyRule::Required) {
        return Err(PemError::NoCertificate);
    }
    if keys.len() > 1 {
        return Err(PemError::BadKey(format!("{} private keys found; a file holds at most one", keys.len())));
    }
    let Some(key) = keys.pop() else {
        return match rule {
            KeyRule::Required => Err(PemError::NoKey),
            KeyRule::Optional => Ok(Contents { certificates: certificates.len(), crls, key: false }),
        };
    };
    check_key_matches(&key, &certificates)?;
    Ok(Contents { certificates: certificates.len(), crls, key: true })
}

fn key_der(section: &Pem) -> PrivateKeyDer<'static> {
    let bytes = section.contents.clone();
    match section.label.as_str() {
        "RSA PRIVATE KEY" => PrivateKeyDer::Pkcs1(PrivatePkcs1KeyDer::from(bytes)),
        "EC PRIVATE KEY" => PrivateKeyDer::Sec1(PrivateSec1KeyDer::from(bytes)),
        _ => PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(bytes)),
    }
}

/// The key must belong to the first certificate, which haproxy serves.
fn check_key_matches(key: &Pem, certificates: &[Vec<u8>]) -> Result<(), PemError> {
    let matches = |cert: &[u8]| key_matches(key, cert);
    let Some(first) = certificates.first() else { return Err(PemError::NoCertificate) };
    if matches(first)? {
        return Ok(());
    }
    let other = certificates.iter().skip(1).position(|c| matches(c).unwrap_or(false));
    Err(PemError::Mismatch(match other {
        Some(i) => format!(
            "the key belongs to certificate {} of the file; haproxy serves the first certificate, so put that one first",
            i + 2
        ),
        None => "the private key belongs to none of the certificates".into(),
    }))
}

fn key_matches(key: &Pem, cert: &[u8]) -> Result<bool, PemError> {
    let provider = rustls::crypto::ring::default_provider();
    match provider.key_provider.load_private_key(key_der(key)) {
        Ok(signing_key) => {
            let certified = CertifiedKey::new(vec![CertificateDer::from(cert.to_vec())], Arc::clone(&signing_key));
            match certified.keys_match() {
                Ok(()) => Ok(true),
                Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::KeyMismatch)) => Ok(false),
                // The provider cannot derive the public key: compare by hand.
                Err(_) => public_key_matches(key, cert),
            }
        }
        // Keys ring does not sign with (RSA under 2048 bits, P-521...) are
        // still haproxy's to judge; compare the public halves directly.
        Err(_) => public_key_matches(key, cert),
    }
}

/// The public half of a private key, read from its own structure.
#[derive(Debug, PartialEq, Eq)]
enum PublicHalf {
    Rsa { modulus: Vec<u8>, exponent: Vec<u8> },
    Ec { point: Vec<u8> },
}

fn public_key_matches(key: &Pem, cert: &[u8]) -> Result<bool, PemError> {
    let mine = public_half(key.label.as_str(), &key.contents)?;
    let (_, certificate) =
        x509_parser::parse_x509_certificate(cert).map_err(|e| PemError::BadCertificate(e.to_string()))?;
    let theirs = match certificate.public_key().parsed() {
        Ok(PublicKey::RSA(rsa)) => PublicHalf::Rsa { modulus: unsigned(rsa.modulus), exponent: unsigned(rsa.exponent) },
        Ok(PublicKey::EC(point)) => PublicHalf::Ec { point: point.data().to_vec() },
        _ => return Ok(false),
    };
    Ok(mine == theirs)
}

fn unsigned(bytes: &[u8]) -> Vec<u8> {
    let start = bytes.iter().position(|b| *b != 0).unwrap_or(bytes.len());
    bytes[start..].to_vec()
}

fn bad_key(what: &str) -> PemError {
    PemError::BadKey(format!("cannot read the private key: {what}"))
}

fn sequence<'a>(der: &'a [u8]) -> Result<Vec<BerObject<'a>>, PemError> {
    let (_, object) = x509_parser::der_parser::parse_der(der).map_err(|_| bad_key("not DER"))?;
    match object.content {
        BerObjectContent::Sequence(items) => Ok(items),
        _ => Err(bad_key("not a sequence")),
    }
}

fn public_half(label: &str, der: &[u8]) -> Result<PublicHalf, PemError> {
    match label {
        "RSA PRIVATE KEY" => {
            // RSAPrivateKey ::= SEQUENCE { version, modulus, publicExponent, ... }
            let items = sequence(der)?;
            let integer = |i: usize| match items.get(i).map(|o| &o.content) {
                Some(BerObjectContent::Integer(bytes)) => Ok(unsigned(bytes)),
                _ => Err(bad_key("malformed RSA key")),
            };
            Ok(PublicHalf::Rsa { modulus: integer(1)?, exponent: integer(2)? })
        }
        "EC PRIVATE KEY" => {
            // ECPrivateKey ::= SEQUENCE { version, privateKey, [0] parameters, [1] publicKey }
            let items = sequence(der)?;
            for item in &items {
                if let BerObjectContent::Unknown(any) = &item.content
                    && any.header.is_contextspecific()
                    && any.header.tag().0 == 1
                {
                    let (_, bits) =
                        x509_parser::der_parser::parse_der(any.data).map_err(|_| bad_key("malformed EC public key"))?;
                    if let BerObjectContent::BitString(_, bits) = bits.content {
                        return Ok(PublicHalf::Ec { point: bits.data.to_vec() });
                    }
                }
            }
            Err(PemError::BadKey("the EC key does not carry its public key and its curve is not supported".into()))
        }
        _ => {
            // PrivateKeyInfo ::= SEQUENCE { version, AlgorithmIdentifier, OCTET STRING key }
            let items = sequence(der)?;
            let algorithm = match items.get(1).map(|o| &o.content) {
                Some(BerObjectContent::Sequence(alg)) => match alg.first().map(|o| &o.content) {
                    Some(BerObjectContent::OID(oid)) => oid.clone(),
                    _ => return Err(bad_key("malformed algorithm")),
                },
                _ => return Err(bad_key("malformed algorithm")),
            };
            let inner = match items.get(2).map(|o| &o.content) {
                Some(BerObjectContent::OctetString(bytes)) => *bytes,
                _ => return Err(bad_key("malformed PKCS#8 key")),
            };
            if algorithm == oid!(1.2.840.113549.1.1.1) {
                public_half("RSA PRIVATE KEY", inner)
            } else if algorithm == oid!(1.2.840.10045.2.1) {
                public_half("EC PRIVATE KEY", inner)
            } else {
                Err(PemError::BadKey(format!("unsupported key algorithm {algorithm}")))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_names() {
        for good in
            ["www.example.com.pem", "WILDCARD.example.com.pem", "6c1f7e0e-8b1e-4c1e-9e5a-9d5ee1d5d1f2.pem", "a_b.pem"]
        {
            assert!(CertFileName::parse(good).is_ok(), "{good}");
        }
        for bad in [
            "",
            ".pem",
            "cert",
            "cert.crt",
            "../x.pem",
            "a/b.pem",
            ".hidden.pem",
            "a..pem",
            "x\n.pem",
            "x y.pem",
            "x\0.pem",
            "é.pem",
        ] {
            assert_eq!(CertFileName::parse(bad), Err(BadFileName(bad.to_owned())), "{bad:?}");
        }
    }

    #[test]
    fn empty_and_garbage_bodies_have_no_certificate() {
        assert_eq!(validate(b"", KeyRule::Optional), Err(PemError::NoCertificate));
        assert_eq!(validate(b"hello", KeyRule::Optional), Err(PemError::NoCertificate));
        let broken = b"-----BEGIN CERTIFICATE-----\n!!!!\n-----END CERTIFICATE-----\n";
        assert!(matches!(validate(broken, KeyRule::Optional), Err(PemError::BadPem(_))));
        let not_x509 = b"-----BEGIN CERTIFICATE-----\naGVsbG8=\n-----END CERTIFICATE-----\n";
        assert!(matches!(validate(not_x509, KeyRule::Optional), Err(PemError::BadCertificate(_))));
    }

    #[test]
    fn encrypted_keys_are_refused() {
        let pem = b"-----BEGIN ENCRYPTED PRIVATE KEY-----\nMIIB\n-----END ENCRYPTED PRIVATE KEY-----\n";
        assert_eq!(validate(pem, KeyRule::Optional), Err(PemError::EncryptedKey));
        let legacy = b"-----BEGIN RSA PRIVATE KEY-----\nProc-Type: 4,ENCRYPTED\nDEK-Info: AES-128-CBC,00\n\nMIIB\n-----END RSA PRIVATE KEY-----\n";
        assert_eq!(validate(legacy, KeyRule::Optional), Err(PemError::EncryptedKey));
    }

    fn fixture(name: &str) -> String {
        std::fs::read_to_string(format!("{}/tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"))).expect(name)
    }

    fn bundle(parts: &[&str]) -> Vec<u8> {
        parts.iter().map(|p| fixture(p)).collect::<String>().into_bytes()
    }

    #[test]
    fn key_certificate_and_chain_in_any_order() {
        let expected = Contents { certificates: 2, crls: 0, key: true };
        for order in [
            ["rsa2048.key", "rsa2048.crt", "ca.crt"],
            ["rsa2048.crt", "ca.crt", "rsa2048.key"],
            ["rsa2048.crt", "rsa2048.key", "ca.crt"],
        ] {
            assert_eq!(validate(&bundle(&order), KeyRule::Optional), Ok(expected), "{order:?}");
            assert_eq!(validate(&bundle(&order), KeyRule::Required), Ok(expected), "{order:?}");
        }
    }

    #[test]
    fn every_key_type_and_encoding_haproxy_reads() {
        for (key, cert) in [
            ("rsa2048.pkcs1.key", "rsa2048.crt"),
            ("rsa1024.key", "rsa1024.crt"),
            ("ecp256.key", "ecp256.crt"),
            ("ecp521.key", "ecp521.crt"),
            ("ecp521.sec1.key", "ecp521.crt"),
        ] {
            let result = validate(&bundle(&[key, cert]), KeyRule::Required);
            assert_eq!(result, Ok(Contents { certificates: 1, crls: 0, key: true }), "{key}");
        }
    }

    #[test]
    fn a_key_of_another_certificate_is_refused() {
        for (key, cert) in [
            ("rsa2048.key", "ecp256.crt"),
            ("ecp256.key", "rsa2048.crt"),
            ("rsa1024.key", "rsa2048.crt"),
            ("ecp521.sec1.key", "ecp256.crt"),
        ] {
            assert!(matches!(validate(&bundle(&[key, cert]), KeyRule::Optional), Err(PemError::Mismatch(_))), "{key}");
        }
        // The key belongs to the second certificate: haproxy would serve the wrong one.
        let err = validate(&bundle(&["ca.crt", "rsa2048.crt", "rsa2048.key"]), KeyRule::Optional).expect_err("order");
        assert_eq!(err.to_string(), "Certificate and key do not match");
        assert!(err.details().expect("details").contains("certificate 2"));
    }

    #[test]
    fn bundles_and_crls_without_a_key() {
        assert_eq!(
            validate(&bundle(&["ca.crt"]), KeyRule::Optional),
            Ok(Contents { certificates: 1, crls: 0, key: false })
        );
        assert_eq!(
            validate(&bundle(&["ca.crl"]), KeyRule::Optional),
            Ok(Contents { certificates: 0, crls: 1, key: false })
        );
        assert_eq!(validate(&bundle(&["ca.crt"]), KeyRule::Required), Err(PemError::NoKey));
        assert_eq!(validate(&bundle(&["ca.crl"]), KeyRule::Required), Err(PemError::NoCertificate));
        assert_eq!(validate(&bundle(&["rsa2048.key"]), KeyRule::Optional), Err(PemError::NoCertificate));
    }

    #[test]
    fn encrypted_fixture_keys_and_two_keys_are_refused() {
        for key in ["rsa2048.encrypted.key", "rsa2048.legacy-encrypted.key"] {
            assert_eq!(validate(&bundle(&[key, "rsa2048.crt"]), KeyRule::Optional), Err(PemError::EncryptedKey));
        }
        let two = bundle(&["rsa2048.key", "rsa2048.pkcs1.key", "rsa2048.crt"]);
        assert!(matches!(validate(&two, KeyRule::Optional), Err(PemError::BadKey(_))));
    }
}
