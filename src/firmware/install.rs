//! Hands a verified bundle to `rauc install`, and only the file that was verified: its identity
//! (device, inode, size, modification and change times) is taken when verification ends and
//! compared just before rauc runs. A bundle changed, replaced or renamed over in between is not
//! installed; it has to be verified again.
//!
//! Limits: the comparison and rauc opening the file are two steps; bundles belong in a directory
//! only the node writes. RAUC 1.8 then takes the file over (chown, lease) and checks its
//! signature and every block again as it copies.

use super::{
    rauc::{self, OutputLine},
    refusal::InstallError,
    verify::VerifiedBundle,
};
use std::{os::unix::fs::MetadataExt, path::Path, process::ExitStatus};

/// Which file was verified: compared again before `rauc install` opens it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileIdentity {
    device: u64,
    inode: u64,
    size: u64,
    ctime: (i64, i64),
    mtime: (i64, i64),
}

impl FileIdentity {
    pub(crate) fn of(metadata: &std::fs::Metadata) -> FileIdentity {
        FileIdentity {
            device: metadata.dev(),
            inode: metadata.ino(),
            size: metadata.len(),
            ctime: (metadata.ctime(), metadata.ctime_nsec()),
            mtime: (metadata.mtime(), metadata.mtime_nsec()),
        }
    }
}

/// Hands a verified bundle to `rauc install`, unless the file changed since it was verified;
/// each output line goes to `on_line`. Returns rauc's exit status.
pub fn install_verified(
    verified: &VerifiedBundle,
    rauc: &Path,
    on_line: &mut dyn FnMut(OutputLine),
) -> Result<ExitStatus, InstallError> {
    let path = verified.path.display().to_string();
    let now = std::fs::metadata(&verified.path).map_err(|source| InstallError::Stat {
        path: path.clone(),
        source,
    })?;
    if FileIdentity::of(&now) != verified.identity {
        return Err(InstallError::Changed { path });
    }
    Ok(rauc::install(rauc, &verified.path, on_line)?)
}
