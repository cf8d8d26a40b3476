//! What a boot says about the last firmware change, as audit steps: which slot and version
//! booted, whether an install was interrupted, whether a new slot was blessed or rolled back and
//! why. The decisions are pure functions of the boot's facts and the install state kept on the
//! data partition; `bsfg firmware boot-report` and `bsfg firmware health` do the I/O.

use super::audit::Step;
use serde::{Deserialize, Serialize};

/// An install in progress, kept on the data partition from before RAUC starts until the new
/// slot is blessed or rolled back.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PendingInstall {
    pub attempt: String,
    /// The slot being written (the inactive one).
    pub slot: String,
    pub version: String,
    /// RAUC finished writing the slot.
    pub written: bool,
    /// Why the new slot's counted boots failed, newest last (from `bsfg firmware health`).
    #[serde(default)]
    pub bad_boots: Vec<String>,
}

/// This boot, as the firmware sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Boot {
    pub boot_id: String,
    /// `a` or `b`, from the kernel command line (`bsfg.slot=`).
    pub slot: String,
    /// `IMAGE_VERSION` of the running root.
    pub version: String,
    /// A trial boot: systemd-boot is counting this entry's tries.
    pub counted: bool,
}

/// What to record at boot, and the install state to keep afterwards.
pub fn at_boot(
    boot: &Boot,
    pending: Option<&PendingInstall>,
) -> (Vec<Step>, Option<PendingInstall>) {
    let mut steps = vec![Step::Booted {
        boot_id: boot.boot_id.clone(),
        slot: boot.slot.clone(),
        version: boot.version.clone(),
        counted: boot.counted,
    }];
    let Some(pending) = pending else {
        return (steps, None);
    };
    if !pending.written {
        steps.push(Step::Interrupted {
            attempt: pending.attempt.clone(),
            slot: pending.slot.clone(),
            reason: "the install did not finish (power lost or the writer stopped); slot \
                     left unbootable, the running firmware is unchanged"
                .into(),
        });
        return (steps, None);
    }
    if pending.slot == boot.slot {
        // The new slot is up; the health check blesses it or not.
        return (steps, Some(pending.clone()));
    }
    let reason = match pending.bad_boots.last() {
        Some(last) => format!(
            "slot {} failed {} counted boot(s); last: {last}",
            pending.slot,
            pending.bad_boots.len()
        ),
        None => format!(
            "slot {} never reached its health check (it did not boot, or lost power before \
             the check); systemd-boot used up its tries",
            pending.slot
        ),
    };
    steps.push(Step::RolledBack {
        boot_id: boot.boot_id.clone(),
        from_slot: pending.slot.clone(),
        to_slot: boot.slot.clone(),
        to_version: boot.version.clone(),
        reason,
    });
    (steps, None)
}

/// The health check's verdict on this boot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Health {
    Good,
    Bad(String),
}

/// What to record for the health check's verdict, and the install state to keep. Only a counted
/// boot is blessed or failed: a blessed slot is never left because of its health.
pub fn at_health(
    boot: &Boot,
    health: &Health,
    pending: Option<&PendingInstall>,
) -> (Vec<Step>, Option<PendingInstall>) {
    if !boot.counted {
        return (Vec::new(), pending.cloned());
    }
    match health {
        Health::Good => {
            let steps = vec![Step::Blessed {
                boot_id: boot.boot_id.clone(),
                slot: boot.slot.clone(),
                version: boot.version.clone(),
            }];
            let keep = pending.filter(|p| p.slot != boot.slot).cloned();
            (steps, keep)
        }
        Health::Bad(reason) => {
            let steps = vec![Step::BadBoot {
                boot_id: boot.boot_id.clone(),
                slot: boot.slot.clone(),
                version: boot.version.clone(),
                reason: reason.clone(),
            }];
            let keep = pending.cloned().map(|mut p| {
                if p.slot == boot.slot {
                    p.bad_boots.push(reason.clone());
                }
                p
            });
            (steps, keep)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn boot(slot: &str, counted: bool) -> Boot {
        Boot {
            boot_id: "b00t".into(),
            slot: slot.into(),
            version: if slot == "b" { "0.2.0" } else { "0.1.0" }.into(),
            counted,
        }
    }

    fn pending(written: bool) -> PendingInstall {
        PendingInstall {
            attempt: "att1".into(),
            slot: "b".into(),
            version: "0.2.0".into(),
            written,
            bad_boots: Vec::new(),
        }
    }

    fn predicates(steps: &[Step]) -> Vec<&'static str> {
        steps.iter().map(Step::predicate).collect()
    }

    #[test]
    fn an_ordinary_boot_records_only_the_boot() {
        let (steps, keep) = at_boot(&boot("a", false), None);
        assert_eq!(predicates(&steps), ["firmware_booted"]);
        assert_eq!(keep, None);
    }

    #[test]
    fn a_boot_after_a_power_cut_during_the_install_records_the_interruption() {
        let (steps, keep) = at_boot(&boot("a", false), Some(&pending(false)));
        assert_eq!(
            predicates(&steps),
            ["firmware_booted", "firmware_interrupted"]
        );
        assert_eq!(keep, None);
    }

    #[test]
    fn the_new_slot_booting_keeps_the_install_until_the_health_check() {
        let (steps, keep) = at_boot(&boot("b", true), Some(&pending(true)));
        assert_eq!(predicates(&steps), ["firmware_booted"]);
        assert_eq!(keep, Some(pending(true)));
        let (steps, keep) = at_health(&boot("b", true), &Health::Good, keep.as_ref());
        assert_eq!(predicates(&steps), ["firmware_blessed"]);
        assert_eq!(keep, None);
    }

    #[test]
    fn bad_boots_of_the_new_slot_become_the_reason_of_the_rollback() {
        let (steps, keep) = at_health(
            &boot("b", true),
            &Health::Bad("bsfg.service is masked".into()),
            Some(&pending(true)),
        );
        assert_eq!(predicates(&steps), ["firmware_bad_boot"]);
        let (steps, keep) = at_boot(&boot("a", false), keep.as_ref());
        assert_eq!(
            predicates(&steps),
            ["firmware_booted", "firmware_rolled_back"]
        );
        let Step::RolledBack {
            reason,
            from_slot,
            to_slot,
            ..
        } = &steps[1]
        else {
            panic!("not a rollback: {steps:?}");
        };
        assert_eq!((from_slot.as_str(), to_slot.as_str()), ("b", "a"));
        assert!(
            reason.contains("failed 1 counted boot(s); last: bsfg.service is masked"),
            "{reason}"
        );
        assert_eq!(keep, None);
    }

    #[test]
    fn a_new_slot_that_never_reached_its_check_is_a_rollback_too() {
        let (steps, _) = at_boot(&boot("a", false), Some(&pending(true)));
        let Step::RolledBack { reason, .. } = &steps[1] else {
            panic!("not a rollback: {steps:?}");
        };
        assert!(
            reason.contains("never reached its health check"),
            "{reason}"
        );
    }

    #[test]
    fn a_blessed_slot_is_never_blessed_or_failed_again() {
        for health in [Health::Good, Health::Bad("node not serving".into())] {
            let (steps, keep) = at_health(&boot("a", false), &health, None);
            assert!(steps.is_empty());
            assert_eq!(keep, None);
        }
    }
}
