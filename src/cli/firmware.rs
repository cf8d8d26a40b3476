//! `bsfg firmware verify|install BUNDLE`: the operator's local door to `firmware::verify`. A thin
//! wrapper: the checks live in the library (the operator RPC calls the same functions); here
//! are only the arguments, the summary, `--json`, and the exit status.
//!
//! Exit status: 0 verified (for `install`: rauc's own status once it ran); 65 (EX_DATAERR) the
//! bundle was refused (or changed between verification and install); 78 (EX_CONFIG) this system cannot verify (keyring, system.conf,
//! os-release unreadable); 69 (EX_UNAVAILABLE) rauc could not be run.

use super::remote::{self, EXIT_USAGE, RemoteNode};
use crate::firmware::{
    appliance::RaucAppliance,
    commands,
    host::Paths,
    rauc::OutputLine,
    report::Health,
    verify::{self, InstallError, VerifiedBundle, VerifyError, VerifyOptions},
};
use clap::{Args, Subcommand};
use std::{path::PathBuf, process::ExitCode, time::Duration};

const EXIT_REFUSED: u8 = 65;
const EXIT_UNAVAILABLE: u8 = 69;
const EXIT_CONFIG: u8 = 78;

#[derive(Debug, Subcommand)]
pub enum FirmwareCommand {
    /// Verify a RAUC bundle in full (structure, signature, signer, compatible, version policy,
    /// payload hash) and print what was verified; writes nothing.
    Verify {
        #[command(flatten)]
        args: VerifyArgs,
        /// Print the result as JSON (one object) instead of a summary.
        #[arg(long)]
        json: bool,
    },
    /// On the box: verify a RAUC bundle in full, then have `rauc install` write it (its output
    /// streamed); a refused bundle never reaches rauc; exits with rauc's status. With `--node
    /// URL`: ask that node's firmware agent to install a bundle already in its firmware bucket
    /// (`--bucket --bundle-key --digest --ticket`) and show its progress.
    Install {
        /// The bundle file (on the box, without --node).
        #[arg(value_name = "BUNDLE", required_unless_present = "node")]
        bundle: Option<PathBuf>,
        #[command(flatten)]
        system: SystemArgs,
        #[command(flatten)]
        remote: RemoteArgs,
        /// The firmware bucket (with --node).
        #[arg(long, requires = "node")]
        bucket: Option<String>,
        /// The bundle's key in it (with --node).
        #[arg(long, value_name = "KEY", requires = "node")]
        bundle_key: Option<String>,
        /// The bundle's digest, `sha256:<hex>` (with --node).
        #[arg(long, requires = "node")]
        digest: Option<String>,
        /// The change ticket (with --node; recorded).
        #[arg(long, requires = "node")]
        ticket: Option<String>,
        /// Follow the install until blessed, rolled back, refused or failed, at most this long
        /// (0: ask and return).
        #[arg(long, default_value = "900", value_name = "SECONDS")]
        follow_seconds: u64,
    },
    /// A node's firmware: slots, versions, boot attempts, installs (`--node URL`).
    Status {
        #[command(flatten)]
        remote: RemoteArgs,
    },
    /// Approve another operator's install (`--node URL`).
    Approve {
        /// The install's attempt id.
        #[arg(value_name = "ATTEMPT")]
        attempt: String,
        #[command(flatten)]
        remote: RemoteArgs,
    },
    /// Appliance unit: record this boot (slot, version, an interrupted install, a rollback and
    /// why) as audit facts.
    BootReport {
        #[arg(long, value_name = "FILE", default_value = "/etc/bsfg/bsfg.toml")]
        config: PathBuf,
        #[command(flatten)]
        state: StateArgs,
    },
    /// Appliance unit (boot check): record its verdict; a good trial boot is blessed.
    Health {
        #[arg(long, value_name = "FILE", default_value = "/etc/bsfg/bsfg.toml")]
        config: PathBuf,
        /// `good` or `bad`.
        #[arg(value_name = "VERDICT", value_parser = ["good", "bad"])]
        verdict: String,
        /// Why (for a bad verdict).
        #[arg(long, default_value = "")]
        reason: String,
        #[command(flatten)]
        state: StateArgs,
    },
    /// Append the audit records the outbox still holds.
    FlushAudit {
        #[arg(long, value_name = "FILE", default_value = "/etc/bsfg/bsfg.toml")]
        config: PathBuf,
        #[command(flatten)]
        state: StateArgs,
    },
    /// Appliance unit: carry out approved installs (verify, write, reboot), each step recorded.
    Agent {
        #[arg(long, value_name = "FILE", default_value = "/etc/bsfg/bsfg.toml")]
        config: PathBuf,
        #[command(flatten)]
        system: SystemArgs,
        #[command(flatten)]
        state: StateArgs,
        /// The mounted EFI system partition (slots and boot counters, for the status report).
        #[arg(long, value_name = "DIR", default_value = "/efi")]
        esp: PathBuf,
        /// One pass, then exit.
        #[arg(long)]
        once: bool,
    },
}

#[derive(Debug, Args)]
pub struct VerifyArgs {
    /// The bundle file.
    #[arg(value_name = "BUNDLE")]
    pub bundle: PathBuf,
    #[command(flatten)]
    pub system: SystemArgs,
}

/// What verification reads on the appliance.
#[derive(Debug, Args)]
pub struct SystemArgs {
    /// The update CA(s) the signer must chain to (PEM).
    #[arg(long, value_name = "PEM", default_value = "/etc/rauc/keyring.pem")]
    pub keyring: PathBuf,
    /// RAUC's system configuration (`[system] compatible=`; rauc applies its rules).
    #[arg(long, value_name = "FILE", default_value = "/etc/rauc/system.conf")]
    pub system_conf: PathBuf,
    /// The running firmware's os-release (`IMAGE_VERSION=`).
    #[arg(long, value_name = "FILE", default_value = "/etc/os-release")]
    pub os_release: PathBuf,
    /// The rauc binary.
    #[arg(long, value_name = "PATH", default_value = "rauc")]
    pub rauc: PathBuf,
}

impl SystemArgs {
    fn options(&self) -> VerifyOptions {
        VerifyOptions {
            keyring: self.keyring.clone(),
            system_conf: self.system_conf.clone(),
            os_release: self.os_release.clone(),
            rauc: self.rauc.clone(),
            ..VerifyOptions::default()
        }
    }
}

/// Where the firmware commands keep their state (root-only, on the data partition).
#[derive(Debug, Args)]
pub struct StateArgs {
    /// The install state and the audit outbox.
    #[arg(long, value_name = "DIR", default_value = "/var/lib/bsfg-firmware")]
    pub state_dir: PathBuf,
}

impl StateArgs {
    fn paths(&self) -> Paths {
        Paths {
            state_dir: self.state_dir.clone(),
            ..Paths::default()
        }
    }
}

/// A node reached over its operator's door.
#[derive(Debug, Args)]
pub struct RemoteArgs {
    /// The node's listener, e.g. `https://idmz-gw:8443`.
    #[arg(long, value_name = "URL")]
    pub node: Option<String>,
    /// The node's certificate Subject CN, e.g. `idmz-bsfg`.
    #[arg(long, value_name = "CN")]
    pub node_identity: Option<String>,
    /// The operator's client certificate (PEM).
    #[arg(long, value_name = "FILE")]
    pub identity: Option<PathBuf>,
    /// The operator's private key (default: the certificate's path with `.key`).
    #[arg(long, value_name = "FILE")]
    pub key: Option<PathBuf>,
    /// The CA the node's certificate chains to.
    #[arg(long, value_name = "FILE")]
    pub ca: Option<PathBuf>,
}

impl RemoteArgs {
    fn node(&self) -> Result<RemoteNode, ExitCode> {
        match (&self.node, &self.node_identity, &self.identity, &self.ca) {
            (Some(url), Some(cn), Some(certificate), Some(ca)) => Ok(RemoteNode::new(
                url,
                cn,
                certificate,
                self.key.as_deref(),
                ca,
            )),
            _ => {
                eprintln!(
                    "bsfg firmware: give --node URL, --node-identity CN, --identity CERT and --ca FILE"
                );
                Err(ExitCode::from(EXIT_USAGE))
            }
        }
    }
}

pub fn run(command: FirmwareCommand) -> ExitCode {
    match command {
        FirmwareCommand::Verify { args, json } => {
            match verify::verify_bundle(&args.bundle, &args.system.options()) {
                Ok(verified) => {
                    if json {
                        print_json(&serde_json::json!({ "verified": true, "bundle": verified }));
                    } else {
                        print_summary(&verified);
                    }
                    ExitCode::SUCCESS
                }
                Err(e) => refused("verify", &e, json),
            }
        }
        FirmwareCommand::Install {
            bundle,
            system,
            remote,
            bucket,
            bundle_key,
            digest,
            ticket,
            follow_seconds,
        } => {
            if remote.node.is_none() {
                let Some(bundle) = bundle else {
                    eprintln!("bsfg firmware install: give BUNDLE, or --node URL");
                    return ExitCode::from(EXIT_USAGE);
                };
                return install(&bundle, &system);
            }
            let node = match remote.node() {
                Ok(node) => node,
                Err(code) => return code,
            };
            let (Some(bucket), Some(key), Some(digest), Some(ticket)) =
                (bucket, bundle_key, digest, ticket)
            else {
                eprintln!(
                    "bsfg firmware install --node: give --bucket, --bundle-key, --digest and --ticket"
                );
                return ExitCode::from(EXIT_USAGE);
            };
            remote::firmware_install(
                &node,
                &remote::InstallAsk {
                    bucket: &bucket,
                    key: &key,
                    digest: &digest,
                    ticket: &ticket,
                    follow: (follow_seconds > 0).then(|| Duration::from_secs(follow_seconds)),
                },
            )
        }
        FirmwareCommand::Status { remote } => match remote.node() {
            Ok(node) => remote::firmware_status(&node),
            Err(code) => code,
        },
        FirmwareCommand::Approve { attempt, remote } => match remote.node() {
            Ok(node) => remote::firmware_approve(&node, &attempt),
            Err(code) => code,
        },
        FirmwareCommand::BootReport { config, state } => {
            commands::boot_report(&config, &state.paths())
        }
        FirmwareCommand::Health {
            config,
            verdict,
            reason,
            state,
        } => {
            let health = if verdict == "good" {
                Health::Good
            } else {
                Health::Bad(reason)
            };
            commands::health(&config, &state.paths(), &health)
        }
        FirmwareCommand::FlushAudit { config, state } => {
            commands::flush_audit(&config, &state.paths())
        }
        FirmwareCommand::Agent {
            config,
            system,
            state,
            esp,
            once,
        } => {
            let paths = state.paths();
            let appliance = RaucAppliance::new(system.options(), paths.clone());
            commands::agent(&config, &paths, &esp, &appliance, once)
        }
    }
}

fn install(bundle: &std::path::Path, system: &SystemArgs) -> ExitCode {
    let verified = match verify::verify_bundle(bundle, &system.options()) {
        Ok(v) => v,
        Err(e) => return refused("install", &e, false),
    };
    print_summary(&verified);
    println!("installing with {} install", system.rauc.display());
    let mut echo = |line: OutputLine| match line {
        OutputLine::Stdout(l) => println!("{l}"),
        OutputLine::Stderr(l) => eprintln!("{l}"),
    };
    match verify::install_verified(&verified, &system.rauc, &mut echo) {
        Ok(status) => {
            if !status.success() {
                eprintln!("bsfg firmware install: rauc install failed ({status})");
            }
            let code = status
                .code()
                .or_else(|| {
                    use std::os::unix::process::ExitStatusExt;
                    status.signal().map(|s| 128 + s)
                })
                .unwrap_or(1);
            ExitCode::from(u8::try_from(code).unwrap_or(1))
        }
        Err(e @ InstallError::Changed { .. }) => {
            eprintln!("bsfg firmware install: REFUSED: {e}");
            ExitCode::from(EXIT_REFUSED)
        }
        Err(e) => {
            eprintln!("bsfg firmware install: {e}");
            ExitCode::from(EXIT_UNAVAILABLE)
        }
    }
}

fn refused(command: &str, error: &VerifyError, json: bool) -> ExitCode {
    let check = error.check();
    if json {
        print_json(&serde_json::json!({
            "verified": false,
            "check": check,
            "error": error.to_string(),
        }));
    }
    match check {
        Some(_) => {
            eprintln!("bsfg firmware {command}: REFUSED: {error}");
            ExitCode::from(EXIT_REFUSED)
        }
        None if matches!(error, VerifyError::System(_)) => {
            eprintln!("bsfg firmware {command}: {error}");
            ExitCode::from(EXIT_CONFIG)
        }
        None => {
            eprintln!("bsfg firmware {command}: {error}");
            ExitCode::from(EXIT_UNAVAILABLE)
        }
    }
}

fn print_json(value: &serde_json::Value) {
    match serde_json::to_string_pretty(value) {
        Ok(text) => println!("{text}"),
        Err(e) => eprintln!("bsfg firmware: cannot encode the result: {e}"),
    }
}

fn print_summary(v: &VerifiedBundle) {
    println!("verified {}", v.path.display());
    println!("  compatible   {}", v.compatible);
    println!(
        "  version      {} (running {})",
        v.version, v.running_version
    );
    println!(
        "  signer       {} (issued by {}, serial {}, valid until {})",
        v.signer.subject, v.signer.issuer, v.signer.serial, v.signer.not_after
    );
    println!(
        "  verity hash  {} (salt {}, {} data bytes, {} tree bytes, every block checked)",
        v.verity.root_hash, v.verity.salt, v.verity.data_size, v.verity.hash_tree_size
    );
    println!("  bundle       sha256 {}, {} bytes", v.sha256, v.size);
    for image in &v.images {
        println!(
            "  image        {}: {} sha256 {} ({} bytes)",
            image.slot_class, image.filename, image.sha256, image.size
        );
    }
}
