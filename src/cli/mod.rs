//! The command line: `serve`, `check-config`, `status`, `skip-gap`, `dev-pki`, `boot-backend`.

pub mod boot_backend;
pub mod dev_pki;
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
    Status {
        #[arg(long, value_name = "FILE")]
        config: PathBuf,
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
