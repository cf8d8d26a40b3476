//! TLS for the RPC listener: TLS 1.3 only, ALPN `h2` and `http/1.1`, a client certificate
//! required and verified against the configured CA bundle (and CRLs), the caller's identity taken
//! from the certificate's Subject CN.
//!
//! Certificates are published through a `tokio::sync::watch` channel (the linkerd2-proxy habit):
//! [`TlsReloader`] rebuilds the server configuration on SIGHUP and when a file changes, and every
//! new connection takes the newest one; the listener is never dropped. A reload that fails keeps
//! the previous configuration and says why.

pub use super::revalidate::ClientTrust;
use crate::config::TlsFiles;
use rustls::{
    ServerConfig,
    crypto::CryptoProvider,
    server::{WebPkiClientVerifier, danger::ClientCertVerifier},
};
use rustls_pki_types::{
    CertificateDer, CertificateRevocationListDer, PrivateKeyDer, pem::PemObject,
};
use std::{path::Path, sync::Arc, time::SystemTime};
use tokio::sync::watch;

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("{path}: {problem}")]
    File { path: String, problem: String },
    #[error("TLS configuration: {0}")]
    Rustls(String),
}

fn file_error(path: &Path, problem: impl std::fmt::Display) -> TlsError {
    TlsError::File {
        path: path.display().to_string(),
        problem: problem.to_string(),
    }
}

pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

pub fn load_certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| file_error(path, format!("cannot read PEM certificates: {e}")))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| file_error(path, format!("invalid PEM certificate: {e}")))?;
    if certs.is_empty() {
        return Err(file_error(path, "contains no PEM certificate"));
    }
    Ok(certs)
}

pub fn load_private_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    PrivateKeyDer::from_pem_file(path)
        .map_err(|e| file_error(path, format!("cannot read a PEM private key: {e}")))
}

fn load_crls(
    paths: &[std::path::PathBuf],
) -> Result<Vec<CertificateRevocationListDer<'static>>, TlsError> {
    let mut out = Vec::new();
    for path in paths {
        out.extend(super::crl::read_crl_file(path)?);
    }
    Ok(out)
}

/// Client verifier: the CA bundle and CRLs of `files`.
pub fn client_verifier(files: &TlsFiles) -> Result<Arc<dyn ClientCertVerifier>, TlsError> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in load_certificates(&files.client_ca)? {
        roots.add(cert).map_err(|e| {
            file_error(
                &files.client_ca,
                format!("not a usable CA certificate: {e}"),
            )
        })?;
    }
    let mut builder = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider());
    let crls = load_crls(&files.crls)?;
    if !crls.is_empty() {
        builder = builder.with_crls(crls).only_check_end_entity_revocation();
    }
    builder.build().map_err(|e| {
        file_error(
            &files.client_ca,
            format!("cannot build a client verifier: {e}"),
        )
    })
}

/// Builds the listener's TLS configuration from the files, checking each.
pub fn server_config(files: &TlsFiles) -> Result<Arc<ServerConfig>, TlsError> {
    Ok(build(files)?.0)
}

/// The listener's configuration and the client verifier inside it (kept to re-check the
/// certificates of connections already open, `revalidate.rs`).
fn build(files: &TlsFiles) -> Result<(Arc<ServerConfig>, Arc<dyn ClientCertVerifier>), TlsError> {
    let chain = load_certificates(&files.certificate)?;
    let key = load_private_key(&files.private_key)?;
    let verifier = client_verifier(files)?;
    let mut config = ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| TlsError::Rustls(e.to_string()))?
        .with_client_cert_verifier(verifier.clone())
        .with_single_cert(chain, key)
        .map_err(|e| {
            file_error(
                &files.private_key,
                format!("does not match the certificate: {e}"),
            )
        })?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok((Arc::new(config), verifier))
}

/// The Subject CN of a DER certificate.
pub fn common_name(cert: &[u8]) -> Option<String> {
    let (_, parsed) = x509_parser::parse_x509_certificate(cert).ok()?;
    let cn = parsed.subject().iter_common_name().next()?;
    cn.as_str().ok().map(str::to_string)
}

/// Why a handshake failed, as a short label for logs and the `reason` metric label.
pub fn failure_reason(error: &std::io::Error) -> &'static str {
    if error.kind() == std::io::ErrorKind::TimedOut {
        return "timeout";
    }
    let Some(tls) = error
        .get_ref()
        .and_then(|e| e.downcast_ref::<rustls::Error>())
    else {
        return if error.kind() == std::io::ErrorKind::UnexpectedEof {
            "connection_closed"
        } else {
            "io"
        };
    };
    certificate_error_reason(tls)
}

/// A rustls error as a short label (`revoked`, `expired`, `unknown_ca`, ...).
pub fn certificate_error_reason(error: &rustls::Error) -> &'static str {
    use rustls::{CertificateError, Error};
    match error {
        Error::NoCertificatesPresented => "no_client_certificate",
        Error::InvalidCertificate(CertificateError::UnknownIssuer) => "unknown_ca",
        Error::InvalidCertificate(CertificateError::Expired)
        | Error::InvalidCertificate(CertificateError::ExpiredContext { .. }) => "expired",
        Error::InvalidCertificate(CertificateError::NotValidYet)
        | Error::InvalidCertificate(CertificateError::NotValidYetContext { .. }) => "not_yet_valid",
        Error::InvalidCertificate(CertificateError::Revoked) => "revoked",
        Error::InvalidCertificate(_) => "bad_certificate",
        Error::PeerIncompatible(_) => "protocol_version",
        Error::NoApplicationProtocol => "alpn",
        _ => "protocol",
    }
}

/// Latest modification times of the TLS files, to notice changes.
fn fingerprint(files: &TlsFiles) -> Vec<Option<SystemTime>> {
    let mut paths = vec![&files.certificate, &files.private_key, &files.client_ca];
    paths.extend(files.crls.iter());
    paths
        .into_iter()
        .map(|p| std::fs::metadata(p).and_then(|m| m.modified()).ok())
        .collect()
}

/// Keeps the listener's TLS configuration current.
pub struct TlsReloader {
    files: TlsFiles,
    sender: watch::Sender<Arc<ServerConfig>>,
    trust: watch::Sender<Arc<ClientTrust>>,
}

impl TlsReloader {
    pub fn new(files: TlsFiles) -> Result<(Self, watch::Receiver<Arc<ServerConfig>>), TlsError> {
        let (config, verifier) = build(&files)?;
        let (sender, receiver) = watch::channel(config);
        let (trust, _) = watch::channel(Arc::new(ClientTrust::new(verifier, &files, 1)));
        Ok((
            TlsReloader {
                files,
                sender,
                trust,
            },
            receiver,
        ))
    }

    /// The client verifier in force, for re-checking connections already open.
    pub fn trust(&self) -> watch::Receiver<Arc<ClientTrust>> {
        self.trust.subscribe()
    }

    /// Rebuilds the configuration now; on failure the old one stays in force.
    pub fn reload(&self, why: &str) -> bool {
        match build(&self.files) {
            Ok((config, verifier)) => {
                self.sender.send_replace(config);
                let generation = self.trust.borrow().generation + 1;
                self.trust.send_replace(Arc::new(ClientTrust::new(
                    verifier,
                    &self.files,
                    generation,
                )));
                tracing::info!(trigger = why, "TLS certificates reloaded");
                true
            }
            Err(e) => {
                tracing::error!(trigger = why, error = %e, "TLS reload failed; keeping the previous certificates");
                false
            }
        }
    }

    /// Reloads on SIGHUP and whenever a file's modification time changes. Runs forever.
    pub async fn run(self) {
        let mut hangup = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
        {
            Ok(s) => Some(s),
            Err(e) => {
                tracing::warn!(error = %e, "cannot listen for SIGHUP; reloading on file change only");
                None
            }
        };
        let mut seen = fingerprint(&self.files);
        let mut tick = tokio::time::interval(
            self.files
                .reload_interval
                .max(std::time::Duration::from_millis(100)),
        );
        loop {
            let hup = async {
                match hangup.as_mut() {
                    Some(s) => s.recv().await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                _ = hup => {
                    seen = fingerprint(&self.files);
                    self.reload("SIGHUP");
                }
                _ = tick.tick() => {
                    let now = fingerprint(&self.files);
                    if now != seen {
                        seen = now;
                        self.reload("file change");
                    }
                }
            }
        }
    }
}
