//! `bsfg status`: the first thing an operator runs. One line per consumer this node serves and
//! per pull it runs, with the figures the runbook's alerts are about. `--config FILE` reads the
//! zone's nats-server on the box; `--node URL` asks a node over its operator's door
//! (`OperatorService/GetStatus`, mTLS with the operator's certificate), so a box without a shell
//! can be read from anywhere its listener is reachable. Exit 1 when something needs an operator.

use super::remote::{EXIT_UNAVAILABLE, RemoteNode};
use crate::{
    config::Config,
    ops::status::{collect, render},
    proto::{GetStatusRequest, GetStatusResponse},
};
use std::{path::Path, process::ExitCode};

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

pub fn print_remote_status(node: &RemoteNode) -> ExitCode {
    match node.call::<_, GetStatusResponse>("GetStatus", &GetStatusRequest {}) {
        Ok(status) => show(
            &status,
            &format!("node {} bsfg {}", node.url, status.version),
        ),
        Err(e) => {
            eprintln!("bsfg status: {}: {e}", node.url);
            ExitCode::from(EXIT_UNAVAILABLE)
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
