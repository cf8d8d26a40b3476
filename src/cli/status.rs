//! `bsfg status`: the first thing an operator runs. One line per consumer this node serves and
//! per pull it runs, with the figures the runbook's alerts are about. `--config FILE` reads the
//! zone's nats-server on the box; `--node URL` asks a node over its operator's door
//! (`OperatorService/GetStatus`, mTLS with the operator's certificate), so a box without a shell
//! can be read from anywhere its listener is reachable. Exit 1 when something needs an operator.

use crate::{
    config::Config,
    ops::status::{collect, render},
    proto::{GetStatusRequest, GetStatusResponse},
    rpc::client::PeerClient,
};
use std::{path::Path, process::ExitCode, time::Duration};

/// Where the operator's certificate and the node's CA are, for `--node`.
#[derive(Debug, Clone)]
pub struct RemoteNode<'a> {
    pub url: &'a str,
    /// The node's certificate Subject CN (e.g. `idmz-bsfg`).
    pub node_identity: &'a str,
    pub certificate: &'a Path,
    pub private_key: &'a Path,
    pub ca: &'a Path,
}

pub fn print_status(path: &Path) -> ExitCode {
    let config = match Config::load(path) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(78);
        }
    };
    let status = match runtime().and_then(|rt| {
        rt.block_on(collect(&config))
            .map_err(|e| (69, e.to_string()))
    }) {
        Ok(status) => status,
        Err((code, e)) => {
            eprintln!("bsfg status: {e}");
            return ExitCode::from(code);
        }
    };
    show(&status, &format!("nats {}", config.nats.url))
}

pub fn print_remote_status(node: &RemoteNode<'_>) -> ExitCode {
    let files = crate::config::TlsFiles {
        certificate: node.certificate.to_path_buf(),
        private_key: node.private_key.to_path_buf(),
        client_ca: node.ca.to_path_buf(),
        peer_ca: node.ca.to_path_buf(),
        crls: Vec::new(),
        reload_interval: Duration::from_secs(60),
    };
    let timeout = Duration::from_secs(30);
    let status = runtime().and_then(|rt| {
        rt.block_on(async {
            let client = PeerClient::new(
                node.url,
                node.node_identity,
                files,
                node.ca.to_path_buf(),
                timeout,
            )
            .map_err(|e| (64, e.to_string()))?;
            client
                .unary::<GetStatusRequest, GetStatusResponse>(
                    "/bsfg.v1.OperatorService/GetStatus",
                    &GetStatusRequest {},
                    timeout,
                )
                .await
                .map_err(|e| (69, e.to_string()))
        })
    });
    match status {
        Ok(status) => show(
            &status,
            &format!("node {} bsfg {}", node.url, status.version),
        ),
        Err((code, e)) => {
            eprintln!("bsfg status: {}: {e}", node.url);
            ExitCode::from(code)
        }
    }
}

fn show(status: &GetStatusResponse, source: &str) -> ExitCode {
    print!("{}", render(status, source));
    if status.unhealthy {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    }
}

fn runtime() -> Result<tokio::runtime::Runtime, (u8, String)> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| (1, e.to_string()))
}
