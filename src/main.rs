//! `bsfg`, the boundary store-and-forward gateway node. `serve` reads like a runbook:
//! parse CLI → load config → load certificates → bind → open the store → serve → wait for a
//! signal → drain with a deadline.

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
        } => serve(&config, Duration::from_secs(drain_seconds)),
        Command::CheckConfig { config } => check_config(&config),
        Command::Status { config } => cli::status::print_status(&config),
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

fn serve(path: &Path, drain: Duration) -> ExitCode {
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
    runtime.block_on(run(path, drain))
}

async fn run(path: &Path, drain: Duration) -> ExitCode {
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
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    // 3. Bind the one listener before anything else can fail late.
    let listener = match tokio::net::TcpListener::bind(config.listen).await {
        Ok(l) => l,
        Err(e) => {
            tracing::error!(address = %config.listen, error = %e, "cannot bind the listener");
            return ExitCode::from(EXIT_UNAVAILABLE);
        }
    };
    let local = listener
        .local_addr()
        .map(|a| a.to_string())
        .unwrap_or_default();
    // 4. The zone's store: streams, consumers and buckets from config. Retried until it answers.
    let store = match open_store(&config).await {
        Some(s) => Arc::new(s),
        None => return ExitCode::from(EXIT_UNAVAILABLE),
    };
    let node = Arc::new(Node {
        config: config.clone(),
        store,
        metrics: Default::default(),
    });
    // 5. Pull from the neighbours this node receives from (SPEC §6).
    if let Err(e) = replicate::start_pulls(&node) {
        tracing::error!(error = %e, "cannot set up the pulls");
        return ExitCode::from(EXIT_CONFIG);
    }
    // 6. Serve, reloading certificates on SIGHUP and file change.
    tokio::spawn(reloader.run());
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let server = tokio::spawn(rpc::server::serve(
        listener, tls_config, node, stopped, drain,
    ));
    tracing::info!(zone = %config.zone, listen = %local, "bsfg node serving");
    // 7. Wait for SIGTERM or SIGINT, then drain with a deadline.
    wait_for_stop_signal().await;
    tracing::info!("stop requested");
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
