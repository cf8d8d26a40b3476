//! Step 2: drop every capability from every set. The bounding set goes first, while
//! CAP_SETPCAP may still be effective; sets that are already empty are left alone, because under
//! a systemd unit with `CapabilityBoundingSet=` and `~@privileged` even an empty `capset` may be
//! refused.

use super::SandboxError;
use caps::CapSet;

pub fn drop_all() -> Result<(), SandboxError> {
    let fail =
        |what: &str, e: caps::errors::CapsError| SandboxError::Capabilities(format!("{what}: {e}"));
    let bounding =
        caps::read(None, CapSet::Bounding).map_err(|e| fail("reading the bounding set", e))?;
    for cap in bounding {
        caps::drop(None, CapSet::Bounding, cap)
            .map_err(|e| fail(&format!("dropping {cap} from the bounding set"), e))?;
    }
    for set in [
        CapSet::Ambient,
        CapSet::Inheritable,
        CapSet::Effective,
        CapSet::Permitted,
    ] {
        let held = caps::read(None, set).map_err(|e| fail(&format!("reading {set:?}"), e))?;
        if !held.is_empty() {
            caps::clear(None, set).map_err(|e| fail(&format!("clearing {set:?}"), e))?;
        }
    }
    Ok(())
}
