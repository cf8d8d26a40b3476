//! `bsfg boot-backend`: RAUC's `bootloader=custom` back end (RAUC runs it through
//! `/usr/libexec/bsfg/rauc-boot-backend`) and the bundle hook's `install-uki`. The protocol is
//! RAUC 1.8's: the get commands print their answer (a slot's bootname, or `good`/`bad`) on
//! stdout; every command exits 0 on success and 1 with the reason on stderr otherwise.

use crate::firmware::boot::{BootEntries, SlotState};
use clap::{Subcommand, ValueEnum};
use std::{
    path::{Path, PathBuf},
    process::ExitCode,
};

#[derive(Debug, Subcommand)]
pub enum BootAction {
    /// Print the slot systemd-boot boots next.
    GetPrimary,
    /// Make SLOT the slot systemd-boot boots next.
    SetPrimary { slot: String },
    /// Print `good` or `bad`: bad when SLOT has no UKI or no tries left.
    GetState { slot: String },
    /// Mark SLOT good (drop its boot counter) or bad (no tries left).
    SetState { slot: String, state: StateArg },
    /// Install FILE as SLOT's UKI with three tries (bsfg-SLOT+3.efi), replacing the old one.
    InstallUki { slot: String, file: PathBuf },
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum StateArg {
    Good,
    Bad,
}

pub fn run(esp: &Path, action: &BootAction) -> ExitCode {
    let entries = BootEntries::new(esp);
    let result = match action {
        BootAction::GetPrimary => entries.primary().map(Some),
        BootAction::SetPrimary { slot } => entries.set_primary(slot).map(|()| None),
        BootAction::GetState { slot } => entries.state(slot).map(|s| Some(s.to_string())),
        BootAction::SetState { slot, state } => {
            let state = match state {
                StateArg::Good => SlotState::Good,
                StateArg::Bad => SlotState::Bad,
            };
            entries.set_state(slot, state).map(|()| None)
        }
        BootAction::InstallUki { slot, file } => entries.install_uki(slot, file).map(|_| None),
    };
    match result {
        Ok(answer) => {
            if let Some(answer) = answer {
                println!("{answer}");
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("bsfg boot-backend: error: {e}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::cli::{Cli, Command};
    use clap::Parser;

    fn parse(args: &[&str]) -> Option<(std::path::PathBuf, super::BootAction)> {
        match Cli::try_parse_from(args).ok()?.command {
            Command::BootBackend { esp, action } => Some((esp, action)),
            _ => None,
        }
    }

    #[test]
    fn parses_rauc_s_calls_with_the_default_esp() {
        let (esp, action) =
            parse(&["bsfg", "boot-backend", "set-state", "b", "bad"]).expect("set-state");
        assert_eq!(esp, std::path::PathBuf::from("/efi"));
        assert!(
            matches!(action, super::BootAction::SetState { ref slot, state: super::StateArg::Bad } if slot == "b")
        );
        let (esp, _) = parse(&["bsfg", "boot-backend", "get-primary", "--esp", "/tmp/esp"])
            .expect("get-primary");
        assert_eq!(esp, std::path::PathBuf::from("/tmp/esp"));
        assert!(parse(&["bsfg", "boot-backend", "set-state", "b", "maybe"]).is_none());
        assert!(parse(&["bsfg", "boot-backend", "install-uki", "b"]).is_none());
    }
}
