//! `bsfg`, the boundary store-and-forward gateway node. `serve` reads like a runbook:
//! parse CLI → load config → load certificates → bind → sandbox → open the store → pulls →
//! serve → notify systemd → wait for a signal → drain with a deadline.

use bsfg::{
    cli::{self, Cli, Command},
    config::Config,
    ops, replicate,
    rpc::{self, Node, tls::TlsReloader},
    store::jetstream::JetStreamStore,
};
use clap::Parser;
use std::{path::Path, process::ExitCode, sync::Arc, time::Duration};

/// Exit status for configuration problems (sysexits EX_CONFIG).
const EXIT_CONFIG: u8 = 78;
/// Exit status when the node cannot start for another reason (EX_UNAVAILABLE).
const EXIT_UNAVAILABLE: u8 = 69;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let serving = matches!(cli.command, Command::Serve { .. });
    ops::logging::init(if serving { "info" } else { "warn" });
    match cli.command {
        Command::Serve {
            config,
            drain_seconds,
            insecure_no_sandbox,
            seccomp_log,
        } => serve(
            &config,
            Duration::from_secs(drain_seconds),
            SandboxChoice {
                enabled: !insecure_no_sandbox,
                seccomp_log,
            },
        ),
        Command::CheckConfig { config } => check_config(&config),
        Command::Status {
            config,
            node,
            node_identity,
            identity,
            key,
            ca,
        } => match (config, node, node_identity, identity, ca) {
            (Some(config), ..) => cli::status::print_status(&config),
            (None, Some(url), Some(node_identity), Some(certificate), Some(ca)) => {
                cli::status::print_remote_status(&cli::remote::RemoteNode::new(
                    &url,
                    &node_identity,
                    &certificate,
                    key.as_deref(),
                    &ca,
                ))
            }
            _ => {
                eprintln!(
                    "bsfg status: give --config FILE, or --node URL with --node-identity, --identity and --ca"
                );
                ExitCode::from(64)
            }
        },
        Command::SkipGap {
            config,
            consumer,
            operator,
            reason,
            dry_run,
        } => cli::skip_gap::skip_gap(
            &config,
            &bsfg::ops::skip_gap::SkipGapRequest {
                consumer: &consumer,
                operator: &operator,
                reason: &reason,
                dry_run,
            },
        ),
        Command::DevPki {
            out,
            zones,
            clients,
            days,
        } => match cli::dev_pki::write_dev_pki(&out, &zones, &clients, days) {
            Ok(files) => {
                println!(
                    "wrote {} files to {}: {}",
                    files.len(),
                    out.display(),
                    files.join(", ")
                );
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("bsfg dev-pki: {e}");
                ExitCode::FAILURE
            }
        },
        Command::Firmware { command } => cli::firmware::run(command),
        Command::BootBackend { esp, action } => cli::boot_backend::run(&esp, &action),
    }
}

fn check_config(path: &Path) -> ExitCode {
    let config = match Config::load(path) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    if let Err(e) = rpc::tls::server_config(&config.tls) {
        eprintln!(
            "{}: 1 problem\n  {}: tls = {e}",
            path.display(),
            path.display()
        );
        return ExitCode::from(EXIT_CONFIG);
    }
    for (i, pull) in config.pulls.iter().enumerate() {
        if pull.accept_from_zones.is_none() {
            eprintln!(
                "{}: warning: pulls[{i}].accept_from_zones is not set: pull {:?} accepts facts from any zone its peer relays",
                path.display(),
                pull.name
            );
        }
    }
    println!(
        "{}: ok (zone {}, listen {}, {} consumers, {} buckets, {} identities)",
        path.display(),
        config.zone,
        config.listen,
        config.consumers.len(),
        config.buckets.len(),
        config.access.grants.len()
    );
    ExitCode::SUCCESS
}

/// How `serve` treats the sandbox.
struct SandboxChoice {
    enabled: bool,
    seccomp_log: bool,
}

fn serve(path: &Path, drain: Duration, sandbox: SandboxChoice) -> ExitCode {
    // 1. Configuration, in full: every problem reported, then one failure.
    let config = match Config::load(path) {
        Ok(c) => Arc::new(c),
        Err(e) => {
            tracing::error!("{e}");
            eprintln!("{e}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    // 2. Certificates: the node refuses to serve without a valid identity.
    let (reloader, tls_config) = match TlsReloader::new(config.tls.clone()) {
        Ok(r) => r,
        Err(e) => {
            tracing::error!(error = %e, "cannot load the node's TLS identity; refusing to serve");
            eprintln!("bsfg: cannot load the node's TLS identity; refusing to serve: {e}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    // 3. Bind the one listener while binding is still allowed.
    let listener = match std::net::TcpListener::bind(config.listen).and_then(|l| {
        l.set_nonblocking(true)?;
        Ok(l)
    }) {
        Ok(l) => l,
        Err(e) => {
            tracing::error!(address = %config.listen, error = %e, "cannot bind the listener");
            return ExitCode::from(EXIT_UNAVAILABLE);
        }
    };
    bsfg::rpc::admission::warn_if_fd_limit_too_low(config.limits.max_connections);
    // 4. Sandbox, before any other thread exists (landlock binds the calling thread and its
    //    children): from here on the node can only do what serving needs.
    let report = if sandbox.enabled {
        let port = listener.local_addr().map(|a| a.port()).unwrap_or(0);
        match bsfg::sandbox::apply(&sandbox_plan(&config, port, sandbox.seccomp_log)) {
            Ok(report) => Some(report),
            Err(e) => {
                tracing::error!(error = %e, "a sandbox step failed; refusing to serve (--insecure-no-sandbox overrides)");
                eprintln!("bsfg: a sandbox step failed; refusing to serve: {e}");
                return ExitCode::from(EXIT_UNAVAILABLE);
            }
        }
    } else {
        tracing::error!(
            "SANDBOX DISABLED by --insecure-no-sandbox: a compromise of this process is not contained"
        );
        None
    };
    // 5. The async runtime, its threads created inside the sandbox.
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("bsfg: cannot start the async runtime: {e}");
            return ExitCode::from(EXIT_UNAVAILABLE);
        }
    };
    runtime.block_on(run(config, listener, reloader, tls_config, report, drain))
}

/// The directories and ports the sandbox keeps open for this configuration.
fn sandbox_plan(config: &Config, bind_port: u16, seccomp_log: bool) -> bsfg::sandbox::SandboxPlan {
    let tls = &config.tls;
    let mut files = vec![
        &config.path,
        &tls.certificate,
        &tls.private_key,
        &tls.client_ca,
        &tls.peer_ca,
    ];
    files.extend(tls.crls.iter());
    files.extend(config.nats.credentials_file.iter());
    // Directories, so certificates replaced by rename (the usual rotation) are still readable.
    let mut read_only: Vec<std::path::PathBuf> = files
        .into_iter()
        .filter_map(|f| std::fs::canonicalize(f).ok())
        .filter_map(|f| f.parent().map(Path::to_path_buf))
        .collect();
    // Name resolution for peers and nats-server given by host name: musl reads resolv.conf and
    // hosts; glibc also reads nsswitch.conf (without it, it asks DNS before /etc/hosts),
    // host.conf and gai.conf (address sorting). Proven for both builds by tests/sandbox.rs.
    for file in [
        "/etc/resolv.conf",
        "/etc/hosts",
        "/etc/nsswitch.conf",
        "/etc/host.conf",
        "/etc/gai.conf",
    ] {
        if Path::new(file).exists() {
            read_only.push(file.into());
        }
    }
    read_only.sort();
    read_only.dedup();
    let port_of = |url: &str| {
        url.rsplit_once(':')
            .and_then(|(_, port)| port.trim_end_matches('/').parse::<u16>().ok())
    };
    let mut connect_ports: Vec<u16> = config
        .pulls
        .iter()
        .filter_map(|p| port_of(&p.peer_url))
        .collect();
    connect_ports.push(port_of(&config.nats.url).unwrap_or(4222));
    connect_ports.sort_unstable();
    connect_ports.dedup();
    bsfg::sandbox::SandboxPlan {
        read_only,
        read_write: Vec::new(),
        bind_port,
        connect_ports,
        seccomp_log,
    }
}

async fn run(
    config: Arc<Config>,
    listener: std::net::TcpListener,
    reloader: TlsReloader,
    tls_config: tokio::sync::watch::Receiver<Arc<rustls::ServerConfig>>,
    sandbox: Option<bsfg::sandbox::SandboxReport>,
    drain: Duration,
) -> ExitCode {
    let listener = match tokio::net::TcpListener::from_std(listener) {
        Ok(l) => l,
        Err(e) => {
            tracing::error!(error = %e, "cannot register the listener");
            return ExitCode::from(EXIT_UNAVAILABLE);
        }
    };
    let local = listener
        .local_addr()
        .map(|a| a.to_string())
        .unwrap_or_default();
    let metrics: Arc<ops::metrics::Metrics> = Default::default();
    match &sandbox {
        Some(r) => {
            tracing::info!(
                no_new_privs = r.no_new_privs,
                capabilities_dropped = r.capabilities_dropped,
                landlock_abi = r.landlock_abi,
                landlock = r.landlock,
                landlock_network_rules = r.landlock_network_rules,
                seccomp = r.seccomp,
                "sandbox applied"
            );
            if r.seccomp == "log" {
                tracing::warn!(
                    "seccomp is in log mode (--seccomp-log): syscalls outside the policy are logged by the kernel, not stopped"
                );
            }
            metrics.set_gauge(
                "bsfg_sandbox_landlock_abi".into(),
                f64::from(r.landlock_abi),
            );
            metrics.set_gauge(
                "bsfg_sandbox_landlock_enforced".into(),
                match r.landlock {
                    "full" => 2.0,
                    "partial" => 1.0,
                    _ => 0.0,
                },
            );
            metrics.set_gauge(
                "bsfg_sandbox_seccomp_kill".into(),
                if r.seccomp == "kill" { 1.0 } else { 0.0 },
            );
        }
        None => metrics.set_gauge("bsfg_sandbox_landlock_enforced".into(), 0.0),
    }
    #[cfg(feature = "sandbox-selftest")]
    tokio::spawn(bsfg::sandbox::selftest_triggers());
    ops::notify::status("connecting to JetStream");
    // 6. The zone's store: streams, consumers and buckets from config. Retried until it answers.
    let store = match open_store(&config).await {
        Some(s) => Arc::new(s),
        None => return ExitCode::from(EXIT_UNAVAILABLE),
    };
    // What an artifact's put left in the Object Store when the node stopped midway.
    store.purge_unfinished_puts().await;
    let node = Arc::new(Node {
        config: config.clone(),
        store,
        metrics,
    });
    // 7. Pull from the neighbours this node receives from (SPEC §6).
    let pulls = match replicate::start_pulls(&node) {
        Ok(pulls) => pulls,
        Err(e) => {
            tracing::error!(error = %e, "cannot set up the pulls");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    // 7b. Watch retention pass consumers' cursors, independent of fetches (SPEC §3).
    tokio::spawn(bsfg::store::eviction::watch(
        node.store.clone(),
        config.clone(),
        node.metrics.clone(),
    ));
    // 8. Serve, reloading certificates on SIGHUP and file change; tell systemd we are ready.
    let trust = reloader.trust();
    tokio::spawn(reloader.run());
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let server = tokio::spawn(rpc::server::serve(
        listener,
        tls_config,
        trust,
        node.clone(),
        stopped,
        drain,
    ));
    tracing::info!(zone = %config.zone, listen = %local, "bsfg node serving");
    let serving = format!(
        "serving zone {} on {local}, {} pulls, sandbox {}",
        config.zone,
        config.pulls.len(),
        sandbox.as_ref().map_or("OFF", |r| r.landlock)
    );
    ops::notify::ready(&serving);
    // STATUS= refreshed every 2 s: pulls up/down and backlog (SPEC §7).
    tokio::spawn(replicate::status_line::refresh(node, pulls, serving));
    // 9. Wait for SIGTERM or SIGINT, then drain with a deadline.
    wait_for_stop_signal().await;
    tracing::info!("stop requested");
    ops::notify::stopping();
    let _ = stop.send(true);
    let _ = server.await;
    tracing::info!("bsfg node stopped");
    ExitCode::SUCCESS
}

async fn open_store(config: &Config) -> Option<JetStreamStore> {
    let mut delay = Duration::from_millis(200);
    for attempt in 1.. {
        match JetStreamStore::open(config).await {
            Ok(store) => return Some(store),
            Err(e) => {
                tracing::warn!(attempt, error = %e, retry_in_ms = delay.as_millis() as u64, "JetStream not ready");
                // What `systemctl status` and the appliance's boot check show while it waits:
                // e.g. streams whose max_bytes together exceed what JetStream may reserve.
                ops::notify::status(&format!("JetStream not ready (attempt {attempt}): {e}"));
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(delay) => {}
            _ = wait_for_stop_signal() => return None,
        }
        delay = (delay * 2).min(Duration::from_secs(5));
    }
    None
}

async fn wait_for_stop_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    match (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) {
        (Ok(mut term), Ok(mut int)) => {
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
            }
        }
        _ => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}
