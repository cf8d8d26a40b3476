//! The real appliance behind the firmware agent: the whole bundle verified by `verify`, written
//! by `rauc install` (rauc-service), rebooted with systemd.

use super::{
    agent::{Appliance, Refusal, Verified},
    host::Paths,
    rauc::OutputLine,
    verify::{self, VerifiedBundle, VerifyOptions},
};
use std::{cell::RefCell, path::Path, process::Command};

pub struct RaucAppliance {
    pub options: VerifyOptions,
    pub paths: Paths,
    /// The bundle `verify` accepted last: `install` writes only that one, unchanged.
    verified: RefCell<Option<VerifiedBundle>>,
}

impl RaucAppliance {
    pub fn new(options: VerifyOptions, paths: Paths) -> Self {
        RaucAppliance {
            options,
            paths,
            verified: RefCell::new(None),
        }
    }
}

impl Appliance for RaucAppliance {
    fn verify(&self, bundle: &Path) -> Result<Verified, Refusal> {
        match verify::verify_bundle(bundle, &self.options) {
            Ok(verified) => {
                let accepted = Verified {
                    version: verified.version.clone(),
                    signer: verified.signer.subject.clone(),
                };
                *self.verified.borrow_mut() = Some(verified);
                Ok(accepted)
            }
            Err(e) => Err(Refusal {
                check: e.check().map_or("system", |check| check.as_str()).into(),
                reason: e.to_string(),
            }),
        }
    }

    fn inactive_slot(&self) -> Result<String, String> {
        let booted = self.paths.boot()?.slot;
        match booted.as_str() {
            "a" => Ok("b".into()),
            "b" => Ok("a".into()),
            other => Err(format!("booted from an unknown slot {other:?}")),
        }
    }

    fn install(&self, bundle: &Path) -> Result<(), String> {
        let verified = self.verified.borrow_mut().take();
        let Some(verified) = verified.filter(|v| v.path == bundle) else {
            return Err(format!(
                "{} was not verified before the install",
                bundle.display()
            ));
        };
        let mut echo = |line: OutputLine| match line {
            OutputLine::Stdout(l) | OutputLine::Stderr(l) => eprintln!("rauc: {l}"),
        };
        let status = verify::install_verified(&verified, &self.options.rauc, &mut echo)
            .map_err(|e| e.to_string())?;
        if status.success() {
            Ok(())
        } else {
            Err(format!(
                "rauc install failed ({status}); the inactive slot is not bootable"
            ))
        }
    }

    fn reboot(&self) -> Result<(), String> {
        let status = Command::new("systemctl")
            .args(["reboot", "--no-block"])
            .status()
            .map_err(|e| format!("systemctl reboot: {e}"))?;
        if status.success() {
            Ok(())
        } else {
            Err(format!("systemctl reboot: {status}"))
        }
    }
}
