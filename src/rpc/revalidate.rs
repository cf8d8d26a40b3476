//! Revocation and expiry on connections already open (SPEC §5). The handshake checks a client
//! certificate once; an HTTP/2 connection may then live for days (a pull long-polls forever). So
//! each connection keeps its peer's certificate chain ([`PeerCertificate`]) and:
//!
//! - every call first checks it against the trust in force ([`ClientTrust`]: the CA bundle and
//!   CRLs of the last successful reload) and against its `notAfter`; a refused call answers
//!   `unauthenticated`;
//! - [`until_refused`] resolves as soon as a reload (file change or SIGHUP) no longer accepts the
//!   certificate, or when it expires, and the server then closes the connection — so a revoked or
//!   expired peer loses an idle or long-polling connection too, within the reload interval.
//!
//! Closures are counted in `bsfg_tls_connections_closed_total{reason}`. A stale CRL is watched by
//! [`watch_crl_freshness`] (see `crl.rs` for the policy). Limits: a call already running when the
//! certificate is revoked is not interrupted by the per-call check; the connection's closure ends
//! it.

use super::{
    crl::{self, CrlFreshness},
    error::{Code, RpcError},
    tls::certificate_error_reason,
};
use crate::{config::TlsFiles, ops::metrics::Metrics};
use rustls::server::danger::ClientCertVerifier;
use rustls_pki_types::{CertificateDer, UnixTime};
use std::{
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};
use tokio::sync::watch;

/// The client verifier of one successful TLS reload, numbered so a connection re-checks its
/// certificate once per reload, not on every call.
pub struct ClientTrust {
    pub verifier: Arc<dyn ClientCertVerifier>,
    pub generation: u64,
    /// Freshness of each configured CRL file as loaded (unreadable ones are left out: the reload
    /// itself would have failed).
    pub crls: Vec<CrlFreshness>,
}

impl ClientTrust {
    pub fn new(verifier: Arc<dyn ClientCertVerifier>, files: &TlsFiles, generation: u64) -> Self {
        ClientTrust {
            verifier,
            generation,
            crls: files
                .crls
                .iter()
                .filter_map(|p| crl::freshness(p).ok())
                .collect(),
        }
    }
}

/// The certificate chain a connection's peer presented, and the last trust it passed.
pub struct PeerCertificate {
    chain: Vec<CertificateDer<'static>>,
    /// Unix seconds.
    not_after: i64,
    verified_generation: AtomicU64,
}

impl PeerCertificate {
    /// `chain` is leaf first, as the handshake gave it; `None` when it is empty or unparsable.
    pub fn new(chain: &[CertificateDer<'_>]) -> Option<Self> {
        let leaf = chain.first()?;
        let (_, parsed) = x509_parser::parse_x509_certificate(leaf.as_ref()).ok()?;
        Some(PeerCertificate {
            chain: chain.iter().map(|c| c.clone().into_owned()).collect(),
            not_after: parsed.validity().not_after.timestamp(),
            verified_generation: AtomicU64::new(0),
        })
    }

    /// Verifies the chain against `trust` now; `Err` carries the reason label.
    fn verify(&self, trust: &ClientTrust) -> Result<(), &'static str> {
        if crl::now_unix() > self.not_after {
            return Err("expired");
        }
        if self.verified_generation.load(Ordering::Acquire) == trust.generation {
            return Ok(());
        }
        let (leaf, intermediates) = self.chain.split_first().ok_or("no_client_certificate")?;
        trust
            .verifier
            .verify_client_cert(leaf, intermediates, UnixTime::now())
            .map_err(|e| certificate_error_reason(&e))?;
        self.verified_generation
            .store(trust.generation, Ordering::Release);
        Ok(())
    }

    /// The check each call makes before anything else.
    pub fn check_call(&self, trust: &ClientTrust) -> Result<(), RpcError> {
        self.verify(trust).map_err(|reason| {
            RpcError::new(
                Code::Unauthenticated,
                format!(
                    "the client certificate is no longer accepted ({reason}); the connection is being closed"
                ),
            )
        })
    }
}

/// Resolves with the reason once `peer` is no longer accepted: a reload refuses it, or it
/// expires. Never resolves while it stays valid.
pub async fn until_refused(
    peer: &PeerCertificate,
    mut trust: watch::Receiver<Arc<ClientTrust>>,
) -> &'static str {
    let mut reloads_seen = true;
    loop {
        // notAfter is inclusive to the second: the certificate is expired from the next one.
        let now_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX));
        let left_ms = peer
            .not_after
            .saturating_add(1)
            .saturating_mul(1000)
            .saturating_sub(now_ms)
            .max(0);
        let expiry = tokio::time::sleep(Duration::from_millis(left_ms.unsigned_abs()));
        let reloaded = async {
            if reloads_seen {
                trust.changed().await.is_ok()
            } else {
                std::future::pending().await
            }
        };
        tokio::select! {
            () = expiry => {
                if crl::now_unix() > peer.not_after {
                    return "expired";
                }
            }
            alive = reloaded => {
                if !alive {
                    reloads_seen = false;
                    continue;
                }
                let current = trust.borrow_and_update().clone();
                if let Err(reason) = peer.verify(&current) {
                    return reason;
                }
            }
        }
    }
}

/// Counts one connection closed because its certificate is no longer accepted.
pub fn record_closed(metrics: &Metrics, reason: &str) {
    metrics.add_counter(
        format!("bsfg_tls_connections_closed_total{{reason=\"{reason}\"}}"),
        1,
    );
}

/// Publishes `bsfg_tls_crl_stale{crl}` and `bsfg_tls_crl_next_update_timestamp_seconds{crl}` for
/// the CRLs in force, every `interval` and at each reload, and warns when one becomes stale (and
/// again at each reload while it stays stale). Runs forever.
pub async fn watch_crl_freshness(
    mut trust: watch::Receiver<Arc<ClientTrust>>,
    metrics: Arc<Metrics>,
    interval: Duration,
) {
    let mut warned: Vec<std::path::PathBuf> = Vec::new();
    let mut tick =
        tokio::time::interval(interval.clamp(Duration::from_millis(100), Duration::from_secs(60)));
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            changed = trust.changed() => {
                if changed.is_err() {
                    return;
                }
                warned.clear();
            }
        }
        let current = trust.borrow_and_update().clone();
        let now = crl::now_unix();
        for crl in &current.crls {
            let path = crl.path.display().to_string();
            let stale = crl.is_stale(now);
            metrics.set_gauge(
                format!("bsfg_tls_crl_stale{{crl=\"{path}\"}}"),
                if stale { 1.0 } else { 0.0 },
            );
            if let Some(next) = crl.next_update {
                metrics.set_gauge(
                    format!("bsfg_tls_crl_next_update_timestamp_seconds{{crl=\"{path}\"}}"),
                    next as f64,
                );
            }
            if stale && !warned.contains(&crl.path) {
                warned.push(crl.path.clone());
                tracing::warn!(
                    crl = %path,
                    next_update_unix = crl.next_update.unwrap_or(0),
                    "CRL is past its nextUpdate; still enforced (never fail open): publish a fresh CRL"
                );
            } else if !stale {
                warned.retain(|p| p != &crl.path);
            }
        }
    }
}
