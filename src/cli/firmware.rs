//! `bsfg firmware verify|install BUNDLE`: the operator's local door to `firmware::verify`. A thin
//! wrapper: the checks live in the library (the operator RPC calls the same functions); here
//! are only the arguments, the summary, `--json`, and the exit status.
//!
//! Exit status: 0 verified (for `install`: rauc's own status once it ran); 65 (EX_DATAERR) the
//! bundle was refused (or changed between verification and install); 78 (EX_CONFIG) this system cannot verify (keyring, system.conf,
//! os-release unreadable); 69 (EX_UNAVAILABLE) rauc could not be run.

use crate::firmware::{
    rauc::OutputLine,
    verify::{self, InstallError, VerifiedBundle, VerifyError, VerifyOptions},
};
use clap::{Args, Subcommand};
use std::{path::PathBuf, process::ExitCode};

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
    /// Verify a RAUC bundle in full, then have `rauc install` write it (its output streamed);
    /// a refused bundle never reaches rauc. Exits with rauc's status.
    Install {
        #[command(flatten)]
        args: VerifyArgs,
    },
}

#[derive(Debug, Args)]
pub struct VerifyArgs {
    /// The bundle file.
    #[arg(value_name = "BUNDLE")]
    pub bundle: PathBuf,
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

impl VerifyArgs {
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

pub fn run(command: FirmwareCommand) -> ExitCode {
    match command {
        FirmwareCommand::Verify { args, json } => {
            match verify::verify_bundle(&args.bundle, &args.options()) {
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
        FirmwareCommand::Install { args } => install(&args),
    }
}

fn install(args: &VerifyArgs) -> ExitCode {
    let verified = match verify::verify_bundle(&args.bundle, &args.options()) {
        Ok(v) => v,
        Err(e) => return refused("install", &e, false),
    };
    print_summary(&verified);
    println!("installing with {} install", args.rauc.display());
    let mut echo = |line: OutputLine| match line {
        OutputLine::Stdout(l) => println!("{l}"),
        OutputLine::Stderr(l) => eprintln!("{l}"),
    };
    match verify::install_verified(&verified, &args.rauc, &mut echo) {
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
