//! A Connect unary client over HTTP/2 and mutual TLS 1.3, for the pull loop (and benchmarks).
//!
//! One HTTP/2 connection per peer, opened on first use and again after it fails; requests are
//! multiplexed on it. The peer must present a certificate chaining to the configured CA, valid for
//! the URL's host, and its Subject CN must equal the expected peer identity — otherwise the
//! connection is refused before any request is sent. Certificates are re-read at each (re)connect,
//! so rotation needs no restart.
//!
//! Responses are decoded by their content type (binary or JSON), and fields from a newer peer's
//! schema are skipped in both codecs, so a pull keeps working across a staged upgrade.
//!
//! A link that dies silently (a firewall dropping packets, no FIN, no RST) is noticed within
//! [`KEEP_ALIVE_INTERVAL`] + [`KEEP_ALIVE_TIMEOUT`] while a call is open: the connection sends an
//! HTTP/2 PING when nothing arrived for a second and gives up when its answer does not come.
//! Connecting does not wait out one hanging attempt after another: a new attempt starts every
//! [`CONNECT_STAGGER`] while earlier ones are pending, and the first to finish its handshakes
//! wins, so a link that heals is in use again about a second later.
//!
//! The peer's server certificate is also checked against the configured CRLs (`tls.crls`; a CRL
//! of another issuer leaves the status unknown, which is accepted). An open connection is dropped
//! and re-made (so re-checked) before the next call when a CRL or the peer CA file changed or when
//! the peer's certificate has expired: a revoked peer fails with [`ClientError::PeerCertificate`].

use super::{
    crl::{now_unix, read_crl_file},
    error::Code,
    tls::{common_name, failure_reason, load_certificates, load_private_key, provider},
};
use crate::config::TlsFiles;
use bytes::Bytes;
use http::{Request, StatusCode, header};
use http_body_util::{BodyExt, Full, Limited};
use hyper::client::conn::http2::SendRequest;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use rustls::{ClientConfig, RootCertStore};
use rustls_pki_types::ServerName;
use std::{sync::Arc, time::Duration};
use tokio::sync::Mutex;

/// Largest response body the client accepts.
const MAX_RESPONSE_BYTES: usize = 64 * 1024 * 1024;
/// A PING goes out when nothing arrived on a connection with an open call for this long...
pub const KEEP_ALIVE_INTERVAL: Duration = Duration::from_secs(1);
/// ...and the connection is closed when its answer has not come after this long.
pub const KEEP_ALIVE_TIMEOUT: Duration = Duration::from_secs(2);
/// While connection attempts hang (a silent firewall), a new one starts this often.
pub const CONNECT_STAGGER: Duration = Duration::from_secs(1);
/// How long one round of staggered attempts lasts at most (less when the call's timeout is
/// shorter); then the caller's own retry takes over.
const CONNECT_ROUND: Duration = Duration::from_secs(10);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ClientError {
    #[error("peer URL {0:?} must be https://host:port")]
    BadUrl(String),
    #[error("cannot connect to {addr}: {reason}")]
    Connect { addr: String, reason: String },
    #[error(
        "peer at {addr} presented identity {found:?}, expected {expected:?}; refusing the connection"
    )]
    WrongPeer {
        addr: String,
        expected: String,
        found: String,
    },
    #[error("peer at {addr} presented a certificate that is {reason}; refusing the connection")]
    PeerCertificate { addr: String, reason: String },
    #[error("TLS set-up: {0}")]
    Tls(String),
    #[error("{code}: {message}")]
    Rpc { code: String, message: String },
    #[error("transport: {0}")]
    Transport(String),
    #[error("call timed out after {0:?}")]
    Timeout(Duration),
}

impl ClientError {
    /// The Connect code, for errors the peer answered with.
    pub fn code(&self) -> Option<&str> {
        match self {
            ClientError::Rpc { code, .. } => Some(code),
            _ => None,
        }
    }
}

pub struct PeerClient {
    addr: String,
    server_name: ServerName<'static>,
    expected_identity: String,
    tls_files: TlsFiles,
    peer_ca: std::path::PathBuf,
    timeout: Duration,
    connection: Mutex<Option<OpenConnection>>,
}

/// An open HTTP/2 connection and what its peer's certificate was checked against.
struct OpenConnection {
    sender: SendRequest<Full<Bytes>>,
    /// Modification times of the CRL and peer CA files when it was opened.
    trust_files: Vec<Option<std::time::SystemTime>>,
    /// The peer certificate's notAfter, Unix seconds.
    not_after: i64,
}

impl PeerClient {
    /// `url` is `https://host:port`; the node's own certificate (`tls_files`) is the client
    /// certificate, `peer_ca` the trust anchors for the peer.
    pub fn new(
        url: &str,
        expected_identity: &str,
        tls_files: TlsFiles,
        peer_ca: std::path::PathBuf,
        timeout: Duration,
    ) -> Result<Self, ClientError> {
        let authority = url
            .strip_prefix("https://")
            .map(|rest| rest.trim_end_matches('/'))
            .filter(|a| !a.is_empty() && !a.contains('/'))
            .ok_or_else(|| ClientError::BadUrl(url.to_string()))?;
        let host = authority
            .rsplit_once(':')
            .map(|(h, _)| h.trim_start_matches('[').trim_end_matches(']'))
            .ok_or_else(|| ClientError::BadUrl(url.to_string()))?;
        let server_name = ServerName::try_from(host.to_string())
            .map_err(|_| ClientError::BadUrl(url.to_string()))?;
        Ok(PeerClient {
            addr: authority.to_string(),
            server_name,
            expected_identity: expected_identity.to_string(),
            tls_files,
            peer_ca,
            timeout,
            connection: Mutex::new(None),
        })
    }

    fn client_config(&self) -> Result<Arc<ClientConfig>, ClientError> {
        let tls = |e: &dyn std::fmt::Display| ClientError::Tls(e.to_string());
        let mut roots = RootCertStore::empty();
        for cert in load_certificates(&self.peer_ca).map_err(|e| tls(&e))? {
            roots.add(cert).map_err(|e| tls(&e))?;
        }
        let chain = load_certificates(&self.tls_files.certificate).map_err(|e| tls(&e))?;
        let key = load_private_key(&self.tls_files.private_key).map_err(|e| tls(&e))?;
        let mut crls = Vec::new();
        for path in &self.tls_files.crls {
            crls.extend(read_crl_file(path).map_err(|e| tls(&e))?);
        }
        let mut verifier = rustls::client::WebPkiServerVerifier::builder_with_provider(
            Arc::new(roots),
            provider(),
        );
        if !crls.is_empty() {
            verifier = verifier
                .with_crls(crls)
                .only_check_end_entity_revocation()
                .allow_unknown_revocation_status();
        }
        let verifier = verifier.build().map_err(|e| tls(&e))?;
        let mut config = ClientConfig::builder_with_provider(provider())
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(|e| tls(&e))?
            .with_webpki_verifier(verifier)
            .with_client_auth_cert(chain, key)
            .map_err(|e| tls(&e))?;
        config.alpn_protocols = vec![b"h2".to_vec()];
        Ok(Arc::new(config))
    }

    fn trust_files(&self) -> Vec<Option<std::time::SystemTime>> {
        std::iter::once(&self.peer_ca)
            .chain(self.tls_files.crls.iter())
            .map(|p| std::fs::metadata(p).and_then(|m| m.modified()).ok())
            .collect()
    }

    /// Connects, starting another attempt every [`CONNECT_STAGGER`] while the earlier ones hang,
    /// for at most one round; the first attempt through wins and the others are dropped. An
    /// answer about the peer itself (wrong identity, a bad certificate, a TLS set-up error) ends
    /// the round at once; a refused or failed attempt ends it only when none is pending.
    async fn connect_staggered(&self) -> Result<OpenConnection, ClientError> {
        use futures::StreamExt;
        let round = self.timeout.min(CONNECT_ROUND);
        let deadline = tokio::time::Instant::now() + round;
        let mut pending = futures::stream::FuturesUnordered::new();
        pending.push(self.connect(round));
        let mut next_attempt = tokio::time::Instant::now() + CONNECT_STAGGER;
        let mut last_error = None;
        loop {
            tokio::select! {
                Some(result) = pending.next() => match result {
                    Ok(open) => return Ok(open),
                    Err(e @ ClientError::Connect { .. }) => {
                        last_error = Some(e);
                        if pending.is_empty() {
                            break;
                        }
                    }
                    Err(e) => return Err(e),
                },
                () = tokio::time::sleep_until(next_attempt), if next_attempt < deadline => {
                    let left = deadline.saturating_duration_since(tokio::time::Instant::now());
                    pending.push(self.connect(left));
                    next_attempt += CONNECT_STAGGER;
                }
                () = tokio::time::sleep_until(deadline) => break,
            }
        }
        Err(last_error.unwrap_or_else(|| ClientError::Connect {
            addr: self.addr.clone(),
            reason: format!("no connection within {round:?}"),
        }))
    }

    /// One connection attempt, TCP, TLS and HTTP/2 handshakes within `budget`.
    async fn connect(&self, budget: Duration) -> Result<OpenConnection, ClientError> {
        let failed = |reason: String| ClientError::Connect {
            addr: self.addr.clone(),
            reason,
        };
        tokio::time::timeout(budget, self.connect_once())
            .await
            .map_err(|_| failed(format!("no handshake within {budget:?}")))?
    }

    async fn connect_once(&self) -> Result<OpenConnection, ClientError> {
        let trust_files = self.trust_files();
        let failed = |reason: String| ClientError::Connect {
            addr: self.addr.clone(),
            reason,
        };
        let tcp = tokio::time::timeout(self.timeout, tokio::net::TcpStream::connect(&self.addr))
            .await
            .map_err(|_| failed("timed out".into()))?
            .map_err(|e| failed(e.to_string()))?;
        let _ = tcp.set_nodelay(true);
        let connector = tokio_rustls::TlsConnector::from(self.client_config()?);
        let tls = tokio::time::timeout(
            self.timeout,
            connector.connect(self.server_name.clone(), tcp),
        )
        .await
        .map_err(|_| failed("TLS handshake timed out".into()))?
        .map_err(|e| match failure_reason(&e) {
            reason @ ("revoked" | "expired" | "not_yet_valid" | "unknown_ca"
            | "bad_certificate") => ClientError::PeerCertificate {
                addr: self.addr.clone(),
                reason: reason.to_string(),
            },
            _ => failed(format!("TLS handshake: {e}")),
        })?;
        let leaf = tls
            .get_ref()
            .1
            .peer_certificates()
            .and_then(|chain| chain.first());
        let not_after = leaf
            .and_then(|leaf| x509_parser::parse_x509_certificate(leaf.as_ref()).ok())
            .map_or(0, |(_, parsed)| parsed.validity().not_after.timestamp());
        let found = leaf
            .and_then(|leaf| common_name(leaf.as_ref()))
            .unwrap_or_default();
        if found != self.expected_identity {
            return Err(ClientError::WrongPeer {
                addr: self.addr.clone(),
                expected: self.expected_identity.clone(),
                found,
            });
        }
        let (sender, connection) = hyper::client::conn::http2::Builder::new(TokioExecutor::new())
            .timer(TokioTimer::new())
            .keep_alive_interval(Some(KEEP_ALIVE_INTERVAL))
            .keep_alive_timeout(KEEP_ALIVE_TIMEOUT)
            .handshake(TokioIo::new(tls))
            .await
            .map_err(|e| failed(format!("HTTP/2 handshake: {e}")))?;
        let addr = self.addr.clone();
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::debug!(peer = %addr, error = %e, "peer connection closed");
            }
        });
        Ok(OpenConnection {
            sender,
            trust_files,
            not_after,
        })
    }

    async fn sender(&self) -> Result<SendRequest<Full<Bytes>>, ClientError> {
        let mut slot = self.connection.lock().await;
        if let Some(open) = slot.as_ref()
            && !open.sender.is_closed()
            && open.not_after >= now_unix()
            && open.trust_files == self.trust_files()
        {
            return Ok(open.sender.clone());
        }
        *slot = None;
        let open = self.connect_staggered().await?;
        let sender = open.sender.clone();
        *slot = Some(open);
        Ok(sender)
    }

    /// Drops the connection so the next call opens a new one.
    pub async fn reset(&self) {
        *self.connection.lock().await = None;
    }

    /// One unary call with the binary codec; `path` is `/bsfg.v1.BoundaryService/FetchFacts`.
    pub async fn unary<Req, Resp>(
        &self,
        path: &str,
        request: &Req,
        timeout: Duration,
    ) -> Result<Resp, ClientError>
    where
        Req: prost::Message,
        Resp: prost::Message + Default + serde::de::DeserializeOwned,
    {
        let mut sender = self.sender().await?;
        let http_request = Request::post(format!("https://{}{path}", self.addr))
            .header(header::CONTENT_TYPE, "application/proto")
            .header("connect-protocol-version", "1")
            .header("connect-timeout-ms", timeout.as_millis().to_string())
            .body(Full::new(Bytes::from(request.encode_to_vec())))
            .map_err(|e| ClientError::Transport(e.to_string()))?;
        let exchange = async {
            sender
                .ready()
                .await
                .map_err(|e| ClientError::Transport(e.to_string()))?;
            let response = sender
                .send_request(http_request)
                .await
                .map_err(|e| ClientError::Transport(e.to_string()))?;
            let status = response.status();
            let content_type = response
                .headers()
                .get(header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string);
            let body = Limited::new(response.into_body(), MAX_RESPONSE_BYTES)
                .collect()
                .await
                .map_err(|e| ClientError::Transport(format!("reading the response: {e}")))?
                .to_bytes();
            Ok::<_, ClientError>((status, content_type, body))
        };
        let (status, content_type, body) =
            match tokio::time::timeout(timeout + Duration::from_secs(1), exchange).await {
                Ok(Ok(reply)) => reply,
                Ok(Err(e)) => {
                    self.reset().await;
                    return Err(e);
                }
                Err(_) => {
                    self.reset().await;
                    return Err(ClientError::Timeout(timeout));
                }
            };
        if status == StatusCode::OK {
            return decode_response(content_type.as_deref(), &body);
        }
        let error: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
        Err(ClientError::Rpc {
            code: error["code"].as_str().unwrap_or("unknown").to_string(),
            message: error["message"].as_str().unwrap_or("").to_string(),
        })
    }
}

/// Decodes a successful unary response in the codec its content type names (binary when absent).
/// Fields this version does not know are skipped in both codecs.
pub fn decode_response<Resp>(content_type: Option<&str>, body: &[u8]) -> Result<Resp, ClientError>
where
    Resp: prost::Message + Default + serde::de::DeserializeOwned,
{
    let undecodable = |e: &dyn std::fmt::Display| ClientError::Rpc {
        code: Code::Internal.as_str().to_string(),
        message: format!("undecodable response: {e}"),
    };
    let essence = content_type
        .and_then(|v| v.split(';').next())
        .map(|v| v.trim().to_ascii_lowercase());
    match essence.as_deref() {
        Some("application/json") => serde_json::from_slice(body).map_err(|e| undecodable(&e)),
        _ => Resp::decode(body).map_err(|e| undecodable(&e)),
    }
}

#[cfg(test)]
#[path = "client_tests.rs"]
mod tests;
