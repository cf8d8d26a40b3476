//! Certificate revocation lists: reading them (PEM or DER, several per file) and telling whether
//! each is still fresh (its `nextUpdate` not yet passed).
//!
//! Policy (docs/configuration.md, "Stale CRLs"): a CRL past its `nextUpdate` is still enforced —
//! the node never fails open — and it is made loud: `bsfg_tls_crl_stale{crl}` = 1, a warning in
//! the log, and `bsfg status` shows STALE and exits non-zero. The node never fetches CRLs itself;
//! publishing a fresh one is the PKI's job.

use super::tls::TlsError;
use rustls_pki_types::{CertificateRevocationListDer, pem::PemObject};
use std::path::{Path, PathBuf};

fn file_error(path: &Path, problem: impl std::fmt::Display) -> TlsError {
    TlsError::File {
        path: path.display().to_string(),
        problem: problem.to_string(),
    }
}

/// Every CRL in `path`, PEM (one or more) or a single DER.
pub fn read_crl_file(path: &Path) -> Result<Vec<CertificateRevocationListDer<'static>>, TlsError> {
    let bytes = std::fs::read(path).map_err(|e| file_error(path, format!("cannot read: {e}")))?;
    if !bytes.starts_with(b"-----BEGIN") {
        return Ok(vec![CertificateRevocationListDer::from(bytes)]);
    }
    CertificateRevocationListDer::pem_slice_iter(&bytes)
        .map(|crl| crl.map_err(|e| file_error(path, format!("invalid PEM CRL: {e}"))))
        .collect()
}

/// When one CRL file is due for renewal: the earliest `nextUpdate` of the CRLs in it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CrlFreshness {
    pub path: PathBuf,
    /// Unix seconds; `None` when no CRL in the file has a `nextUpdate`.
    pub next_update: Option<i64>,
}

impl CrlFreshness {
    pub fn is_stale(&self, now_unix: i64) -> bool {
        self.next_update.is_some_and(|next| next < now_unix)
    }
}

/// Reads `path` and returns its freshness.
pub fn freshness(path: &Path) -> Result<CrlFreshness, TlsError> {
    let mut next_update: Option<i64> = None;
    for der in read_crl_file(path)? {
        let (_, crl) = x509_parser::parse_x509_crl(der.as_ref())
            .map_err(|e| file_error(path, format!("not a CRL: {e}")))?;
        if let Some(next) = crl.next_update() {
            let next = next.timestamp();
            next_update = Some(next_update.map_or(next, |n| n.min(next)));
        }
    }
    Ok(CrlFreshness {
        path: path.to_path_buf(),
        next_update,
    })
}

pub fn now_unix() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::dev_pki::DevCa;
    use time::{Duration, OffsetDateTime};

    #[test]
    fn a_crl_past_its_next_update_is_stale() {
        let ca = DevCa::create("test CA").expect("ca");
        let dir = tempfile::tempdir().expect("tempdir");
        let now = OffsetDateTime::now_utc();
        let stale = dir.path().join("stale.pem");
        std::fs::write(
            &stale,
            ca.crl_valid(&[], now - Duration::days(2), now - Duration::days(1))
                .expect("crl"),
        )
        .expect("write");
        let fresh = dir.path().join("fresh.pem");
        std::fs::write(&fresh, ca.crl(&[]).expect("crl")).expect("write");
        assert!(freshness(&stale).expect("read").is_stale(now_unix()));
        assert!(!freshness(&fresh).expect("read").is_stale(now_unix()));
        assert!(freshness(&dir.path().join("missing.pem")).is_err());
    }
}
