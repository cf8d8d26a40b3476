//! The command line: `serve`, `check-config`, `status`, `skip-gap`, `dev-pki`, `firmware`,
//! `boot-backend`.

pub mod boot_backend;
pub mod dev_pki;
pub mod firmware;
pub mod remote;
pub mod skip_gap;
pub mod status;

use clap::{Parser, Subcommand};
use std::path::PathBuf;

#[derive(Debug, Parser)]
#[command(
    name = "bsfg",
    version,
    about = "Boundary store-and-forward gateway: facts cross zones only through mTLS Connect RPCs"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the node: serve the boundary RPCs over mTLS on the zone's JetStream.
    Serve {
        #[arg(long, value_name = "FILE")]
        config: PathBuf,
        /// Time calls in flight get to finish after SIGTERM.
        #[arg(long, default_value = "10", value_name = "SECONDS")]
        drain_seconds: u64,
        /// Serve without the sandbox (no_new_privs, capabilities, landlock, seccomp). Logged
        /// loudly; for diagnosis only.
        #[arg(long)]
        insecure_no_sandbox: bool,
        /// Log syscalls outside the seccomp policy (kernel audit log) instead of killing the
        /// node; for finding a missing syscall.
        #[arg(long)]
        seccomp_log: bool,
    },
    /// Check a configuration file and the certificates it names; print every problem.
    CheckConfig {
        #[arg(long, value_name = "FILE")]
        config: PathBuf,
    },
    /// Print, per pull and per consumer: peer, cursor, high watermark, lag, last error, last
    /// success. Reads the zone's nats-server; works whether or not the node is running.
    ///
    /// With `--node URL` instead of `--config`, asks a node over its operator's door
    /// (`OperatorService`, mTLS with the operator's certificate `--identity`/`--key`).
    Status {
        #[arg(
            long,
            value_name = "FILE",
            required_unless_present = "node",
            conflicts_with = "node"
        )]
        config: Option<PathBuf>,
        /// A node's listener, e.g. `https://idmz-gw.plant.example:8443`.
        #[arg(long, value_name = "URL", requires_all = ["node_identity", "identity", "ca"])]
        node: Option<String>,
        /// The node's certificate Subject CN, e.g. `idmz-bsfg`.
        #[arg(long, value_name = "CN")]
        node_identity: Option<String>,
        /// The operator's client certificate (PEM); its Subject CN must have the `status`
        /// operation in the node's `[[access]] operate`.
        #[arg(long, value_name = "FILE")]
        identity: Option<PathBuf>,
        /// The operator's private key (default: the certificate's path with `.key`).
        #[arg(long, value_name = "FILE")]
        key: Option<PathBuf>,
        /// The CA the node's certificate chains to.
        #[arg(long, value_name = "FILE")]
        ca: Option<PathBuf>,
    },
    /// Move a consumer's cursor past facts that retention evicted before anyone confirmed them
    /// (FetchFacts answers data_loss until then). Records an audit fact (who, why, which
    /// offsets) in the zone's audit category first; works while the node runs.
    SkipGap {
        #[arg(long, value_name = "FILE")]
        config: PathBuf,
        /// The durable consumer whose cursor is behind the gap.
        #[arg(long, value_name = "NAME")]
        consumer: String,
        /// Who decided (a name or badge; recorded in the audit fact).
        #[arg(long, value_name = "NAME")]
        operator: String,
        /// Why the loss is accepted, e.g. a change ticket (recorded in the audit fact).
        #[arg(long, value_name = "TEXT")]
        reason: String,
        /// Show the gap; record nothing, move nothing.
        #[arg(long)]
        dry_run: bool,
    },
    /// Write a development CA and certificates for a node and its clients (not for production).
    DevPki {
        /// Directory to write ca.pem, ca.key, <zone>-bsfg.pem/.key and <client>.pem/.key into.
        #[arg(long, value_name = "DIR")]
        out: PathBuf,
        /// A zone whose node needs a certificate (CN <zone>-bsfg); repeat for an estate of zones
        /// sharing the CA.
        #[arg(long = "zone", required = true)]
        zones: Vec<String>,
        /// Client identities to issue certificates for (repeatable).
        #[arg(long = "client", value_name = "NAME")]
        clients: Vec<String>,
        /// Validity in days.
        #[arg(long, default_value = "365")]
        days: i64,
    },
    /// Firmware: verify and install bundles, the operator's firmware door, the appliance's
    /// firmware agent, boot report and health verdict.
    Firmware {
        #[command(subcommand)]
        command: firmware::FirmwareCommand,
    },
    /// RAUC's custom boot back end over systemd-boot's boot-counted UKIs on the ESP (run by RAUC
    /// and the bundle's install hook on the appliance).
    BootBackend {
        /// The mounted EFI system partition.
        #[arg(long, value_name = "DIR", default_value = "/efi", global = true)]
        esp: PathBuf,
        #[command(subcommand)]
        action: boot_backend::BootAction,
    },
}
