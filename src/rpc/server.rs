//! Accepts TLS connections, serves HTTP/1.1 and HTTP/2 on them with hyper, and routes each
//! request to its method, in the protocol its content type names (Connect, gRPC or gRPC-Web; see
//! `protocol.rs`). Slow clients are bounded: the TLS handshake and request headers
//! must arrive within `limits.header_timeout`, the body within `limits.body_timeout`, and a call
//! runs at most `limits.call_timeout` (or the client's shorter `Connect-Timeout-Ms`), and a
//! connection with no call in flight for `limits.idle_timeout` is closed — HTTP/2 included, where
//! a client could otherwise hold a connection open forever after its handshake.
//!
//! Shutdown: stop accepting, let calls in flight finish for up to the drain deadline, then close.

use super::{
    Node,
    admission::ConnectionTable,
    authz::Identity,
    budget::BodyBudget,
    connect::{self, BodyLimits, MethodInfo},
    error::{Code, RpcError},
    handlers::{self, CallContext},
    operator, operator_firmware,
    protocol::{self, Protocol, ResponseBody},
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
    sync::Arc,
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
const STATUS: MethodInfo = MethodInfo {
    name: "GetStatus",
    get_allowed: true,
};
const SKIP_GAP: MethodInfo = MethodInfo {
    name: "SkipGap",
    get_allowed: false,
};
const FIRMWARE_STATUS: MethodInfo = MethodInfo {
    name: "GetFirmwareStatus",
    get_allowed: true,
};
const FIRMWARE_INSTALL: MethodInfo = MethodInfo {
    name: "InstallFirmware",
    get_allowed: false,
};
const FIRMWARE_APPROVE: MethodInfo = MethodInfo {
    name: "ApproveFirmwareInstall",
    get_allowed: false,
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
    let connections =
        ConnectionTable::new(node.config.limits.max_connections, node.metrics.clone());
    let budget = BodyBudget::new(
        node.config.limits.max_buffered_request_bytes,
        node.metrics.clone(),
    );
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
                    let Some(slot) = connections.admit() else {
                        tracing::warn!(%peer, max = node.config.limits.max_connections, "connection refused: every connection has a call in flight");
                        continue;
                    };
                    let _ = stream.set_nodelay(true);
                    let acceptor = TlsAcceptor::from(tls_config.borrow().clone());
                    let node = node.clone();
                    let watcher = graceful.watcher();
                    let trust = trust.clone();
                    let budget = budget.clone();
                    tokio::spawn(async move {
                        let activity = slot.activity.clone();
                        let (slot, calls) = (&slot, Calls { trust, budget, activity });
                        tokio::select! {
                            () = serve_connection(stream, peer, acceptor, calls, node, watcher) => {}
                            () = slot.evicted() => {
                                tracing::debug!(%peer, "longest-idle connection closed to make room (limits.max_connections)");
                            }
                        }
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

/// What every call on a connection is checked against and reads its body through.
struct Calls {
    trust: watch::Receiver<Arc<ClientTrust>>,
    budget: BodyBudget,
    activity: Arc<super::admission::ConnectionActivity>,
}

async fn serve_connection<S: Store>(
    stream: tokio::net::TcpStream,
    peer: SocketAddr,
    acceptor: TlsAcceptor,
    calls: Calls,
    node: Arc<Node<S>>,
    watcher: hyper_util::server::graceful::Watcher,
) {
    let Calls {
        trust,
        budget,
        activity,
    } = calls;
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
    let calls = activity.clone();
    let metrics = node.metrics.clone();
    let call_trust = trust.clone();
    let call_certificate = certificate.clone();
    let service = hyper::service::service_fn(move |request| {
        let node = node.clone();
        let identity = identity.clone();
        let call = calls.call();
        let budget = budget.clone();
        let refused = call_certificate.check_call(&call_trust.borrow()).err();
        async move {
            let response = match refused {
                Some(e) => {
                    node.metrics
                        .record_call("revalidation", e.code.as_str(), Duration::ZERO);
                    tracing::info!(identity = %identity.common_name, code = e.code.as_str(), message = %e.message, "call refused");
                    // In the caller's protocol: a gRPC client reads grpc-status, not JSON.
                    Protocol::of(request.headers()).refuse(e)
                }
                None => route(node, identity, request, budget).await,
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
        .max_concurrent_streams(limits.max_streams_per_connection)
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
/// The request-body limits every call is read under.
fn body_limits<S: Store>(node: &Node<S>) -> BodyLimits {
    BodyLimits {
        max_bytes: node.config.limits.max_request_bytes,
        body_timeout: node.config.limits.body_timeout,
    }
}

macro_rules! unary {
    ($node:expr, $protocol:expr, $identity:expr, $request:expr, $budget:expr, $info:expr, $type_name:literal, $handler:path) => {{
        let node = &$node;
        let limits = body_limits(node);
        match $protocol
            .read_request($request, &$info, limits, $budget)
            .await
        {
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
                            Ok(Ok(response)) => Ok($protocol.encode(&call, &response)),
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
    budget: BodyBudget,
) -> Response<ResponseBody> {
    let started = Instant::now();
    let path = request.uri().path().to_string();
    let protocol = Protocol::of(request.headers());
    let (method, result) = match path.as_str() {
        "/bsfg.v1.BoundaryService/AppendFact" => (
            APPEND.name,
            unary!(
                node,
                protocol,
                identity,
                request,
                &budget,
                APPEND,
                "bsfg.v1.AppendFactRequest",
                handlers::append_fact
            ),
        ),
        "/bsfg.v1.BoundaryService/FetchFacts" => (
            FETCH.name,
            unary!(
                node,
                protocol,
                identity,
                request,
                &budget,
                FETCH,
                "bsfg.v1.FetchFactsRequest",
                handlers::fetch_facts
            ),
        ),
        "/bsfg.v1.BoundaryService/ConfirmReceipt" => (
            CONFIRM.name,
            unary!(
                node,
                protocol,
                identity,
                request,
                &budget,
                CONFIRM,
                "bsfg.v1.ConfirmReceiptRequest",
                handlers::confirm_receipt
            ),
        ),
        "/bsfg.v1.BoundaryService/PutObject" => (
            PUT.name,
            unary!(
                node,
                protocol,
                identity,
                request,
                &budget,
                PUT,
                "bsfg.v1.PutObjectRequest",
                handlers::put_object
            ),
        ),
        "/bsfg.v1.ArtifactService/GetObject" => (
            GET.name,
            unary!(
                node,
                protocol,
                identity,
                request,
                &budget,
                GET,
                "bsfg.v1.GetObjectRequest",
                handlers::get_object
            ),
        ),
        "/bsfg.v1.OperatorService/GetStatus" => (
            STATUS.name,
            unary!(
                node,
                protocol,
                identity,
                request,
                &budget,
                STATUS,
                "bsfg.v1.GetStatusRequest",
                operator::get_status
            ),
        ),
        "/bsfg.v1.OperatorService/SkipGap" => (
            SKIP_GAP.name,
            unary!(
                node,
                protocol,
                identity,
                request,
                &budget,
                SKIP_GAP,
                "bsfg.v1.SkipGapRequest",
                operator::skip_gap
            ),
        ),
        "/bsfg.v1.OperatorService/GetFirmwareStatus" => (
            FIRMWARE_STATUS.name,
            unary!(
                node,
                protocol,
                identity,
                request,
                &budget,
                FIRMWARE_STATUS,
                "bsfg.v1.GetFirmwareStatusRequest",
                operator_firmware::get_firmware_status
            ),
        ),
        "/bsfg.v1.OperatorService/InstallFirmware" => (
            FIRMWARE_INSTALL.name,
            unary!(
                node,
                protocol,
                identity,
                request,
                &budget,
                FIRMWARE_INSTALL,
                "bsfg.v1.InstallFirmwareRequest",
                operator_firmware::install_firmware
            ),
        ),
        "/bsfg.v1.OperatorService/ApproveFirmwareInstall" => (
            FIRMWARE_APPROVE.name,
            unary!(
                node,
                protocol,
                identity,
                request,
                &budget,
                FIRMWARE_APPROVE,
                "bsfg.v1.ApproveFirmwareInstallRequest",
                operator_firmware::approve_firmware_install
            ),
        ),
        "/metrics" => (
            "metrics",
            metrics(&node, &identity, &request)
                .await
                .map(protocol::boxed),
        ),
        _ => {
            let (parts, body) = request.into_parts();
            let limits = body_limits(&node);
            connect::drain_before_refusal(&parts.headers, body, limits).await;
            (
                "unknown",
                Err(
                    RpcError::new(Code::Unimplemented, format!("no method at {path:?}"))
                        .with_status(StatusCode::NOT_FOUND),
                ),
            )
        }
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
            protocol.refuse(e)
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
    // What GetObject read from the object store: counted by the store, process-wide.
    let reads = crate::store::object_read_counters();
    for (series, value) in [
        ("bsfg_object_bytes_read_total", reads.bytes_read),
        ("bsfg_object_bytes_skipped_total", reads.bytes_skipped),
        ("bsfg_object_index_builds_total", reads.index_builds),
    ] {
        node.metrics.set_gauge(series.into(), value as f64);
    }
    let mut response = Response::new(Full::new(Bytes::from(node.metrics.render())));
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        http::HeaderValue::from_static("text/plain; version=0.0.4"),
    );
    Ok(response)
}
