//! One long-lived HTTP/2 connection over mutual TLS, as a pull or a busy producer keeps it:
//! every call goes over the same connection, and a call made after the server closed it fails
//! instead of silently opening a new one (curl and the Connect clients reconnect by themselves,
//! which would hide whether an open connection was cut).

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http2::SendRequest;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName, pem::PemObject};
use std::{path::Path, sync::Arc, time::Duration};

pub struct H2Connection {
    runtime: tokio::runtime::Runtime,
    sender: SendRequest<Full<Bytes>>,
    port: u16,
}

/// What one call got: the HTTP status and body, or why the connection could not carry it.
#[derive(Debug)]
pub enum H2Reply {
    Answered { status: u16, body: String },
    ConnectionGone(String),
}

impl H2Reply {
    pub fn status(&self) -> u16 {
        match self {
            H2Reply::Answered { status, .. } => *status,
            H2Reply::ConnectionGone(_) => 0,
        }
    }
}

impl H2Connection {
    /// Connects to `127.0.0.1:port` with `cert`/`key`, trusting `ca`.
    pub fn open(port: u16, ca: &Path, cert: &Path, key: &Path) -> Result<Self, String> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| e.to_string())?;
        let sender = runtime.block_on(handshake(port, ca, cert, key))?;
        Ok(H2Connection {
            runtime,
            sender,
            port,
        })
    }

    /// POSTs a JSON Connect request on this connection.
    pub fn call_json(&mut self, path: &str, json: &str) -> H2Reply {
        let request = match http::Request::post(format!("https://127.0.0.1:{}{path}", self.port))
            .header(http::header::CONTENT_TYPE, "application/json")
            .header("connect-protocol-version", "1")
            .body(Full::new(Bytes::from(json.to_string())))
        {
            Ok(r) => r,
            Err(e) => return H2Reply::ConnectionGone(e.to_string()),
        };
        let sender = &mut self.sender;
        self.runtime.block_on(async move {
            let exchange = async {
                sender.ready().await.map_err(|e| e.to_string())?;
                let response = sender
                    .send_request(request)
                    .await
                    .map_err(|e| e.to_string())?;
                let status = response.status().as_u16();
                let body = response
                    .into_body()
                    .collect()
                    .await
                    .map_err(|e| e.to_string())?
                    .to_bytes();
                Ok::<_, String>(H2Reply::Answered {
                    status,
                    body: String::from_utf8_lossy(&body).into_owned(),
                })
            };
            match tokio::time::timeout(Duration::from_secs(10), exchange).await {
                Ok(Ok(reply)) => reply,
                Ok(Err(e)) => H2Reply::ConnectionGone(e),
                Err(_) => H2Reply::ConnectionGone("timed out".into()),
            }
        })
    }

    /// True once the server has closed the connection.
    pub fn is_closed(&mut self) -> bool {
        // Let the connection task notice a GOAWAY or a closed socket.
        self.runtime
            .block_on(async { tokio::time::sleep(Duration::from_millis(10)).await });
        self.sender.is_closed()
    }
}

/// An HTTP/2 connection to `127.0.0.1:port` with any request body type (e.g. a streamed one),
/// driven by the caller's runtime.
pub async fn handshake<B>(
    port: u16,
    ca: &Path,
    cert: &Path,
    key: &Path,
) -> Result<SendRequest<B>, String>
where
    B: hyper::body::Body + Send + Unpin + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_file_iter(ca).map_err(|e| e.to_string())? {
        roots
            .add(c.map_err(|e| e.to_string())?)
            .map_err(|e| e.to_string())?;
    }
    let chain = CertificateDer::pem_file_iter(cert)
        .map_err(|e| e.to_string())?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| e.to_string())?;
    let key = PrivateKeyDer::from_pem_file(key).map_err(|e| e.to_string())?;
    let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_protocol_versions(&[&rustls::version::TLS13])
    .map_err(|e| e.to_string())?
    .with_root_certificates(roots)
    .with_client_auth_cert(chain, key)
    .map_err(|e| e.to_string())?;
    config.alpn_protocols = vec![b"h2".to_vec()];
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .map_err(|e| e.to_string())?;
    let server_name = ServerName::try_from("localhost").map_err(|e| e.to_string())?;
    let tls = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(server_name, tcp)
        .await
        .map_err(|e| format!("TLS handshake: {e}"))?;
    let (sender, connection) = hyper::client::conn::http2::Builder::new(TokioExecutor::new())
        .timer(TokioTimer::new())
        .handshake(TokioIo::new(tls))
        .await
        .map_err(|e| format!("HTTP/2 handshake: {e}"))?;
    tokio::spawn(async move {
        let _ = connection.await;
    });
    Ok(sender)
}
