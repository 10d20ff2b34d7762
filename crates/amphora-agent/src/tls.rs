//! Mutual TLS towards the controller.
//!
//! The agent presents `agent_server_cert` (one PEM file holding the private
//! key and the certificate chain, as upstream) and accepts only clients
//! whose certificate chains to `agent_server_ca` and is within its validity
//! period. The configuration sits behind an atomic pointer so a rotated
//! certificate applies to new connections while open ones finish.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use arc_swap::ArcSwap;
use rustls::RootCertStore;
use rustls::ServerConfig;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;

use crate::certs::{self, KeyRule, PemError};
use crate::config::TlsProtocol;
use crate::fsutil;

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read {option} = {path}: {detail}")]
    Read { option: &'static str, path: PathBuf, detail: String },
    #[error("{option} = {path}: {detail}")]
    Content { option: &'static str, path: PathBuf, detail: String },
    #[error("invalid TLS set-up: {0}")]
    Setup(String),
}

/// Where the agent's TLS material lives.
#[derive(Debug, Clone)]
pub struct TlsFiles {
    pub server_ca: PathBuf,
    pub server_cert: PathBuf,
    pub min_protocol: TlsProtocol,
}

/// The live server configuration, swappable at run time.
#[derive(Debug)]
pub struct TlsState {
    files: TlsFiles,
    current: ArcSwap<ServerConfig>,
    /// Serialises rotations so the file and the live configuration agree.
    rotating: Mutex<()>,
}

#[derive(Debug, thiserror::Error)]
pub enum RotateError {
    #[error(transparent)]
    Pem(#[from] PemError),
    #[error(transparent)]
    Tls(#[from] TlsError),
    #[error("cannot write {path}: {source}")]
    Write { path: PathBuf, source: std::io::Error },
}

impl TlsState {
    pub fn load(files: TlsFiles) -> Result<Self, TlsError> {
        let config = build(&files, None)?;
        Ok(Self { files, current: ArcSwap::from_pointee(config), rotating: Mutex::new(()) })
    }

    /// Replaces the agent's server certificate without restarting: the new
    /// PEM (key and certificate chain) is validated, written atomically to
    /// `agent_server_cert`, then used for every connection opened after
    /// this returns. Connections already open keep their session.
    pub fn rotate(&self, pem: &[u8]) -> Result<(), RotateError> {
        certs::validate(pem, KeyRule::Required)?;
        let config = build(&self.files, Some(pem))?;
        let _guard = self.rotating.lock().unwrap_or_else(|e| e.into_inner());
        fsutil::write_atomic(&self.files.server_cert, pem, 0o600)
            .map_err(|source| RotateError::Write { path: self.files.server_cert.clone(), source })?;
        self.current.store(Arc::new(config));
        tracing::info!(path = %self.files.server_cert.display(), "server certificate rotated");
        Ok(())
    }

    /// The configuration new connections use.
    pub fn current(&self) -> Arc<ServerConfig> {
        self.current.load_full()
    }
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Builds a server configuration; `server_pem` replaces the certificate
/// file's content when given (a certificate being rotated in).
pub fn build(files: &TlsFiles, server_pem: Option<&[u8]>) -> Result<ServerConfig, TlsError> {
    let roots = load_roots(&files.server_ca)?;
    let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider())
        .build()
        .map_err(|e| TlsError::Setup(format!("client certificate verifier: {e}")))?;

    let pem = match server_pem {
        Some(pem) => pem.to_vec(),
        None => std::fs::read(&files.server_cert).map_err(|e| TlsError::Read {
            option: "agent_server_cert",
            path: files.server_cert.clone(),
            detail: e.to_string(),
        })?,
    };
    let content_error =
        |detail: String| TlsError::Content { option: "agent_server_cert", path: files.server_cert.clone(), detail };
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<_, _>>()
        .map_err(|e| content_error(format!("bad certificate: {e}")))?;
    if chain.is_empty() {
        return Err(content_error("no certificate found".into()));
    }
    let key = PrivateKeyDer::from_pem_slice(&pem).map_err(|e| content_error(format!("no usable private key: {e}")))?;

    let versions: &[&'static rustls::SupportedProtocolVersion] = match files.min_protocol {
        TlsProtocol::Tls12 => &[&rustls::version::TLS13, &rustls::version::TLS12],
        TlsProtocol::Tls13 => &[&rustls::version::TLS13],
    };
    let mut config = ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(versions)
        .map_err(|e| TlsError::Setup(e.to_string()))?
        .with_client_cert_verifier(verifier)
        .with_single_cert(chain, key)
        .map_err(|e| content_error(format!("certificate and key do not match: {e}")))?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}

fn load_roots(path: &Path) -> Result<RootCertStore, TlsError> {
    let read_error = |detail: String| TlsError::Read { option: "agent_server_ca", path: path.to_owned(), detail };
    let pem = std::fs::read(path).map_err(|e| read_error(e.to_string()))?;
    let mut roots = RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(&pem) {
        let cert = cert.map_err(|e| read_error(format!("bad certificate: {e}")))?;
        roots.add(cert).map_err(|e| TlsError::Content {
            option: "agent_server_ca",
            path: path.to_owned(),
            detail: format!("unusable CA certificate: {e}"),
        })?;
    }
    if roots.is_empty() {
        return Err(TlsError::Content {
            option: "agent_server_ca",
            path: path.to_owned(),
            detail: "no CA certificate found".into(),
        });
    }
    Ok(roots)
}
