//! The operator's door from the command line: `bsfg status --node …` and `bsfg firmware status |
//! install | approve --node …` reach a node over mTLS with the operator's certificate, so nothing
//! needs a console on the box.

use crate::{
    config::TlsFiles,
    proto::{
        ApproveFirmwareInstallRequest, ApproveFirmwareInstallResponse, FirmwareInstall,
        GetFirmwareStatusRequest, GetFirmwareStatusResponse, InstallFirmwareRequest,
        InstallFirmwareResponse,
    },
    rpc::client::{ClientError, PeerClient},
};
use std::{
    path::{Path, PathBuf},
    process::ExitCode,
    time::{Duration, Instant},
};

/// Exit statuses (sysexits): usage, unreachable or refused.
pub const EXIT_USAGE: u8 = 64;
pub const EXIT_UNAVAILABLE: u8 = 69;

const CALL_TIMEOUT: Duration = Duration::from_secs(30);

/// A node and the operator's credentials for it.
#[derive(Debug, Clone)]
pub struct RemoteNode {
    pub url: String,
    /// The node's certificate Subject CN (e.g. `idmz-bsfg`).
    pub node_identity: String,
    pub certificate: PathBuf,
    pub private_key: PathBuf,
    pub ca: PathBuf,
}

impl RemoteNode {
    /// `--identity CERT` with `--key` or `CERT` with `.key`.
    pub fn new(
        url: &str,
        node_identity: &str,
        certificate: &Path,
        key: Option<&Path>,
        ca: &Path,
    ) -> Self {
        RemoteNode {
            url: url.to_string(),
            node_identity: node_identity.to_string(),
            certificate: certificate.to_path_buf(),
            private_key: key.map_or_else(|| certificate.with_extension("key"), Path::to_path_buf),
            ca: ca.to_path_buf(),
        }
    }

    fn client(&self) -> Result<PeerClient, ClientError> {
        let files = TlsFiles {
            certificate: self.certificate.clone(),
            private_key: self.private_key.clone(),
            client_ca: self.ca.clone(),
            peer_ca: self.ca.clone(),
            crls: Vec::new(),
            reload_interval: Duration::from_secs(60),
        };
        PeerClient::new(
            &self.url,
            &self.node_identity,
            files,
            self.ca.clone(),
            CALL_TIMEOUT,
        )
    }

    /// One call of `OperatorService/<method>`.
    pub fn call<Req, Resp>(&self, method: &str, request: &Req) -> Result<Resp, ClientError>
    where
        Req: prost::Message,
        Resp: prost::Message + Default + serde::de::DeserializeOwned,
    {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| ClientError::Transport(e.to_string()))?;
        runtime.block_on(async {
            self.client()?
                .unary(
                    &format!("/bsfg.v1.OperatorService/{method}"),
                    request,
                    CALL_TIMEOUT,
                )
                .await
        })
    }
}

fn refused(node: &RemoteNode, e: &ClientError) -> ExitCode {
    eprintln!("bsfg: {}: {e}", node.url);
    ExitCode::from(EXIT_UNAVAILABLE)
}

/// `bsfg firmware status --node …`
pub fn firmware_status(node: &RemoteNode) -> ExitCode {
    match node
        .call::<_, GetFirmwareStatusResponse>("GetFirmwareStatus", &GetFirmwareStatusRequest {})
    {
        Ok(status) => {
            print!("{}", render_firmware(&status));
            ExitCode::SUCCESS
        }
        Err(e) => refused(node, &e),
    }
}

/// The text of `bsfg firmware status`.
pub fn render_firmware(status: &GetFirmwareStatusResponse) -> String {
    let mut out = String::new();
    if status.booted_slot.is_empty() {
        out.push_str(
            "no firmware agent has reported (not an appliance, or its agent is not running)\n",
        );
    } else {
        out.push_str(&format!(
            "running slot {} version {}\n",
            status.booted_slot, status.running_version
        ));
    }
    for slot in &status.slots {
        out.push_str(&format!(
            "  slot {}  {:<6} version {:<12}{}{}{}\n",
            slot.name,
            slot.state,
            if slot.version.is_empty() {
                "-"
            } else {
                &slot.version
            },
            if slot.booted { "  booted" } else { "" },
            if slot.primary { "  next boot" } else { "" },
            if slot.state == "trial" {
                format!("  {} tries left", slot.tries_left)
            } else {
                String::new()
            }
        ));
    }
    if status.installs.is_empty() {
        out.push_str("no installs asked for\n");
    }
    for install in &status.installs {
        out.push_str(&format!("{}\n", install_line(install)));
    }
    out
}

fn install_line(install: &FirmwareInstall) -> String {
    format!(
        "install {}  {:<17} {}/{} {}  ticket {:?}  by {}{}{}",
        install.attempt,
        install.state,
        install.bucket,
        install.key,
        install.digest,
        install.change_ticket,
        install.operator,
        if install.approver.is_empty() {
            String::new()
        } else {
            format!(", approved by {}", install.approver)
        },
        if install.message.is_empty() {
            String::new()
        } else {
            format!("\n    {}", install.message)
        }
    )
}

/// What `bsfg firmware install --node …` asks for.
#[derive(Debug, Clone)]
pub struct InstallAsk<'a> {
    pub bucket: &'a str,
    pub key: &'a str,
    pub digest: &'a str,
    pub ticket: &'a str,
    /// Follow the install until it ends (blessed, rolled back, refused, failed) or this long.
    pub follow: Option<Duration>,
}

/// `bsfg firmware install --node …`: asks, then shows each state change as it happens.
pub fn firmware_install(node: &RemoteNode, ask: &InstallAsk<'_>) -> ExitCode {
    let request = InstallFirmwareRequest {
        bucket: ask.bucket.into(),
        key: ask.key.into(),
        digest: ask.digest.into(),
        change_ticket: ask.ticket.into(),
    };
    let answer = match node.call::<_, InstallFirmwareResponse>("InstallFirmware", &request) {
        Ok(answer) => answer,
        Err(e) => return refused(node, &e),
    };
    println!("install {} asked for: {}", answer.attempt, answer.state);
    let Some(follow) = ask.follow else {
        return ExitCode::SUCCESS;
    };
    follow_install(node, &answer.attempt, follow)
}

/// Polls GetFirmwareStatus and prints each new state of `attempt`. The node goes away while the
/// appliance reboots: unreachable polls are waited out until `follow` is over.
pub fn follow_install(node: &RemoteNode, attempt: &str, follow: Duration) -> ExitCode {
    let started = Instant::now();
    let mut last = String::new();
    while started.elapsed() < follow {
        if let Ok(status) = node
            .call::<_, GetFirmwareStatusResponse>("GetFirmwareStatus", &GetFirmwareStatusRequest {})
            && let Some(install) = status.installs.iter().find(|i| i.attempt == attempt)
        {
            let now = format!("{}: {}", install.state, install.message);
            if now != last {
                println!("[{:>5.0} s] {now}", started.elapsed().as_secs_f64());
                last = now;
            }
            match install.state.as_str() {
                "blessed" => return ExitCode::SUCCESS,
                "refused" | "failed" | "rolled_back" => return ExitCode::from(1),
                _ => {}
            }
        }
        std::thread::sleep(Duration::from_secs(2));
    }
    eprintln!(
        "bsfg firmware install: still {last:?} after {follow:?}; `bsfg firmware status` shows the rest"
    );
    ExitCode::from(EXIT_UNAVAILABLE)
}

/// `bsfg firmware approve --node … ATTEMPT`
pub fn firmware_approve(node: &RemoteNode, attempt: &str) -> ExitCode {
    let request = ApproveFirmwareInstallRequest {
        attempt: attempt.into(),
    };
    match node.call::<_, ApproveFirmwareInstallResponse>("ApproveFirmwareInstall", &request) {
        Ok(answer) => {
            println!("install {}: {}", answer.attempt, answer.state);
            ExitCode::SUCCESS
        }
        Err(e) => refused(node, &e),
    }
}
