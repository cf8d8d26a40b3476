//! Accepts TLS connections, serves HTTP/1.1 and HTTP/2 on them with hyper, and routes each
//! request to its Connect method. Slow clients are bounded: the TLS handshake and request headers
//! must arrive within `limits.header_timeout`, the body within `limits.body_timeout`, and a call
//! runs at most `limits.call_timeout` (or the client's shorter `Connect-Timeout-Ms`), and a
//! connection with no call in flight for `limits.idle_timeout` is closed — HTTP/2 included, where
//! a client could otherwise hold a connection open forever after its handshake.
//!
//! Shutdown: stop accepting, let calls in flight finish for up to the drain deadline, then close.

use super::{
    Node,
    authz::Identity,
    connect::{self, BodyLimits, MethodInfo},
    error::{Code, RpcError},
    handlers::{self, CallContext},
    revalidate::{self, ClientTrust, PeerCertificate},
    tls,
};
use crate::store::Store;
use bytes::Bytes;
use http::{Request, Response, StatusCode, header};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper_util::{
    rt::{TokioExecutor, TokioIo, TokioTimer},
    server::{conn::auto, graceful::GracefulShutdown},
};
use rustls::ServerConfig;
use std::{
    net::SocketAddr,
    sync::{
        Arc, Mutex,
        atomic::{AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};
use tokio::{net::TcpListener, sync::watch};
use tokio_rustls::TlsAcceptor;

const APPEND: MethodInfo = MethodInfo {
    name: "AppendFact",
    get_allowed: false,
};
const FETCH: MethodInfo = MethodInfo {
    name: "FetchFacts",
    get_allowed: true,
};
const CONFIRM: MethodInfo = MethodInfo {
    name: "ConfirmReceipt",
    get_allowed: false,
};
const PUT: MethodInfo = MethodInfo {
    name: "PutObject",
    get_allowed: false,
};
const GET: MethodInfo = MethodInfo {
    name: "GetObject",
    get_allowed: true,
};

/// Serves until `shutdown` turns true, then drains for at most `drain`.
pub async fn serve<S: Store>(
    listener: TcpListener,
    tls_config: watch::Receiver<Arc<ServerConfig>>,
    trust: watch::Receiver<Arc<ClientTrust>>,
    node: Arc<Node<S>>,
    mut shutdown: watch::Receiver<bool>,
    drain: Duration,
) {
    let graceful = GracefulShutdown::new();
    tokio::spawn(revalidate::watch_crl_freshness(
        trust.clone(),
        node.metrics.clone(),
        node.config.tls.reload_interval,
    ));
    // The watchdog is pinged from this loop: if it stops turning, systemd restarts the node.
    let mut watchdog = crate::ops::notify::watchdog_interval().map(tokio::time::interval);
    loop {
        let ping = async {
            match watchdog.as_mut() {
                Some(tick) => {
                    tick.tick().await;
                }
                None => std::future::pending::<()>().await,
            }
        };
        tokio::select! {
            _ = ping => crate::ops::notify::watchdog(),
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    let _ = stream.set_nodelay(true);
                    let acceptor = TlsAcceptor::from(tls_config.borrow().clone());
                    let node = node.clone();
                    let watcher = graceful.watcher();
                    let trust = trust.clone();
                    tokio::spawn(async move {
                        serve_connection(stream, peer, acceptor, trust, node, watcher).await;
                    });
                }
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
            changed = shutdown.changed() => {
                if changed.is_err() || *shutdown.borrow() {
                    break;
                }
            }
        }
    }
    drop(listener);
    tracing::info!(deadline_s = drain.as_secs(), "draining connections");
    if tokio::time::timeout(drain, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("drain deadline passed; closing remaining connections");
    }
}

/// Calls in flight on one connection, and since when none is: what the idle timeout watches.
struct ConnectionActivity {
    in_flight: AtomicUsize,
    idle_since: Mutex<Instant>,
}

/// One call in flight; its end (or its future being dropped) makes the connection idle again.
struct CallInFlight(Arc<ConnectionActivity>);

impl Drop for CallInFlight {
    fn drop(&mut self) {
        *self.0.lock_idle_since() = Instant::now();
        self.0.in_flight.fetch_sub(1, Ordering::SeqCst);
    }
}

impl ConnectionActivity {
    fn new() -> Arc<Self> {
        Arc::new(ConnectionActivity {
            in_flight: AtomicUsize::new(0),
            idle_since: Mutex::new(Instant::now()),
        })
    }

    fn lock_idle_since(&self) -> std::sync::MutexGuard<'_, Instant> {
        self.idle_since
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn call(self: &Arc<Self>) -> CallInFlight {
        self.in_flight.fetch_add(1, Ordering::SeqCst);
        CallInFlight(self.clone())
    }

    /// Resolves once no call has been in flight for `idle`.
    async fn idle_for(&self, idle: Duration) {
        loop {
            let quiet = *self.lock_idle_since();
            let wait = if self.in_flight.load(Ordering::SeqCst) > 0 {
                idle
            } else {
                match idle.checked_sub(quiet.elapsed()) {
                    Some(left) if !left.is_zero() => left,
                    _ => return,
                }
            };
            tokio::time::sleep(wait).await;
        }
    }
}

async fn serve_connection<S: Store>(
    stream: tokio::net::TcpStream,
    peer: SocketAddr,
    acceptor: TlsAcceptor,
    trust: watch::Receiver<Arc<ClientTrust>>,
    node: Arc<Node<S>>,
    watcher: hyper_util::server::graceful::Watcher,
) {
    let limits = node.config.limits.clone();
    let tls_stream =
        match tokio::time::timeout(limits.header_timeout, acceptor.accept(stream)).await {
            Ok(Ok(s)) => s,
            Ok(Err(e)) => {
                let reason = tls::failure_reason(&e);
                node.metrics.record_tls_failure(reason);
                tracing::warn!(%peer, reason, error = %e, "TLS handshake refused");
                return;
            }
            Err(_) => {
                node.metrics.record_tls_failure("timeout");
                tracing::warn!(%peer, reason = "timeout", "TLS handshake not completed in time");
                return;
            }
        };
    let identity = tls_stream
        .get_ref()
        .1
        .peer_certificates()
        .and_then(|chain| chain.first())
        .and_then(|leaf| tls::common_name(leaf.as_ref()));
    let Some(common_name) = identity else {
        node.metrics.record_tls_failure("no_common_name");
        tracing::warn!(%peer, reason = "no_common_name", "client certificate has no Subject CN");
        return;
    };
    // Kept to re-check revocation and expiry while the connection lives (revalidate.rs).
    let Some(certificate) = tls_stream
        .get_ref()
        .1
        .peer_certificates()
        .and_then(PeerCertificate::new)
        .map(Arc::new)
    else {
        node.metrics.record_tls_failure("bad_certificate");
        tracing::warn!(%peer, reason = "bad_certificate", "client certificate cannot be parsed");
        return;
    };
    let identity = Identity { common_name };
    let activity = ConnectionActivity::new();
    let calls = activity.clone();
    let metrics = node.metrics.clone();
    let call_trust = trust.clone();
    let call_certificate = certificate.clone();
    let service = hyper::service::service_fn(move |request| {
        let node = node.clone();
        let identity = identity.clone();
        let call = calls.call();
        let refused = call_certificate.check_call(&call_trust.borrow()).err();
        async move {
            let response = match refused {
                Some(e) => {
                    node.metrics
                        .record_call("revalidation", e.code.as_str(), Duration::ZERO);
                    tracing::info!(identity = %identity.common_name, code = e.code.as_str(), message = %e.message, "call refused");
                    e.into_response()
                }
                None => route(node, identity, request).await,
            };
            drop(call);
            Ok::<_, std::convert::Infallible>(response)
        }
    });
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout)
        .max_buf_size(64 * 1024);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(64)
        .max_header_list_size(64 * 1024)
        .keep_alive_interval(Some(Duration::from_secs(30)))
        .keep_alive_timeout(Duration::from_secs(20));
    let connection = builder.serve_connection(TokioIo::new(tls_stream), service);
    tokio::select! {
        served = watcher.watch(connection.into_owned()) => {
            if let Err(e) = served {
                tracing::debug!(%peer, error = %e, "connection ended with an error");
            }
        }
        () = activity.idle_for(limits.idle_timeout) => {
            tracing::debug!(%peer, idle_s = limits.idle_timeout.as_secs(), "idle connection closed");
        }
        reason = revalidate::until_refused(&certificate, trust) => {
            revalidate::record_closed(&metrics, reason);
            tracing::warn!(%peer, reason, "client certificate no longer accepted; connection closed");
        }
    }
}

/// Runs one unary method: read, decode, authorize and handle within the deadline, encode.
macro_rules! unary {
    ($node:expr, $identity:expr, $request:expr, $info:expr, $type_name:literal, $handler:path) => {{
        let node = &$node;
        let limits = BodyLimits {
            max_bytes: node.config.limits.max_request_bytes,
            body_timeout: node.config.limits.body_timeout,
        };
        match connect::read_request($request, &$info, limits).await {
            Err(e) => Err(e),
            Ok(call) => {
                let budget = call.timeout.map_or(node.config.limits.call_timeout, |t| {
                    t.min(node.config.limits.call_timeout)
                });
                let context = CallContext {
                    identity: $identity.clone(),
                    budget,
                };
                match connect::decode(&call, $type_name) {
                    Err(e) => Err(e),
                    Ok(message) => {
                        match tokio::time::timeout(budget, $handler(node, context, message)).await {
                            Ok(Ok(response)) => Ok(connect::encode(&call, &response)),
                            Ok(Err(e)) => Err(e),
                            Err(_) => Err(RpcError::new(
                                Code::DeadlineExceeded,
                                format!("the call did not finish within {} ms", budget.as_millis()),
                            )),
                        }
                    }
                }
            }
        }
    }};
}

async fn route<S: Store>(
    node: Arc<Node<S>>,
    identity: Identity,
    request: Request<Incoming>,
) -> Response<Full<Bytes>> {
    let started = Instant::now();
    let path = request.uri().path().to_string();
    let (method, result) = match path.as_str() {
        "/bsfg.v1.BoundaryService/AppendFact" => (
            APPEND.name,
            unary!(
                node,
                identity,
                request,
                APPEND,
                "bsfg.v1.AppendFactRequest",
                handlers::append_fact
            ),
        ),
        "/bsfg.v1.BoundaryService/FetchFacts" => (
            FETCH.name,
            unary!(
                node,
                identity,
                request,
                FETCH,
                "bsfg.v1.FetchFactsRequest",
                handlers::fetch_facts
            ),
        ),
        "/bsfg.v1.BoundaryService/ConfirmReceipt" => (
            CONFIRM.name,
            unary!(
                node,
                identity,
                request,
                CONFIRM,
                "bsfg.v1.ConfirmReceiptRequest",
                handlers::confirm_receipt
            ),
        ),
        "/bsfg.v1.BoundaryService/PutObject" => (
            PUT.name,
            unary!(
                node,
                identity,
                request,
                PUT,
                "bsfg.v1.PutObjectRequest",
                handlers::put_object
            ),
        ),
        "/bsfg.v1.ArtifactService/GetObject" => (
            GET.name,
            unary!(
                node,
                identity,
                request,
                GET,
                "bsfg.v1.GetObjectRequest",
                handlers::get_object
            ),
        ),
        "/metrics" => ("metrics", metrics(&node, &identity, &request).await),
        _ => (
            "unknown",
            Err(
                RpcError::new(Code::Unimplemented, format!("no method at {path:?}"))
                    .with_status(StatusCode::NOT_FOUND),
            ),
        ),
    };
    let elapsed = started.elapsed();
    match result {
        Ok(response) => {
            node.metrics.record_call(method, "ok", elapsed);
            tracing::debug!(identity = %identity.common_name, method, code = "ok", elapsed_ms = elapsed.as_millis() as u64, "call");
            response
        }
        Err(e) => {
            node.metrics.record_call(method, e.code.as_str(), elapsed);
            tracing::info!(identity = %identity.common_name, method, code = e.code.as_str(), message = %e.message, elapsed_ms = elapsed.as_millis() as u64, "call refused");
            e.into_response()
        }
    }
}

async fn metrics<S: Store>(
    node: &Node<S>,
    identity: &Identity,
    request: &Request<Incoming>,
) -> Result<Response<Full<Bytes>>, RpcError> {
    if request.method() != http::Method::GET {
        return Err(RpcError::new(Code::Unknown, "use GET for /metrics")
            .with_status(StatusCode::METHOD_NOT_ALLOWED)
            .with_header(header::ALLOW, "GET"));
    }
    node.config.access.may_read_metrics(identity)?;
    // Figures read from the store at scrape time: each consumer's frontier, each category's fill.
    for spec in node.config.consumers.values() {
        if let Ok((cursor, high)) = node.store.cursor(spec).await {
            let label = format!("{{consumer=\"{}\"}}", spec.name);
            node.metrics
                .set_gauge(format!("bsfg_frontier_offset{label}"), cursor as f64);
            node.metrics.set_gauge(
                format!("bsfg_consumer_backlog_facts{label}"),
                high.saturating_sub(cursor) as f64,
            );
        }
    }
    for category in crate::fact::Category::ALL {
        if let Ok(fill) = node.store.fill(category).await {
            node.metrics.set_gauge(
                format!("bsfg_store_buffer_fill_percent{{category=\"{category}\"}}"),
                fill.percent,
            );
        }
    }
    let mut response = Response::new(Full::new(Bytes::from(node.metrics.render())));
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        http::HeaderValue::from_static("text/plain; version=0.0.4"),
    );
    Ok(response)
}
