//! The running appliance as the firmware commands see it: the booted slot and version, the boot
//! id, whether systemd-boot is counting this boot, and the install state and audit outbox on the
//! data partition. Every path can be moved (tests, other layouts).

use super::report::{Boot, PendingInstall};
use std::{
    fs,
    io::Write,
    path::{Path, PathBuf},
};

/// systemd-boot's vendor GUID for its EFI variables (the Boot Loader Interface).
const LOADER_GUID: &str = "4a67b082-0a4c-41cf-b6c7-440b29bb8c4f";

/// Where the firmware commands look.
#[derive(Debug, Clone)]
pub struct Paths {
    pub cmdline: PathBuf,
    pub os_release: PathBuf,
    pub boot_id: PathBuf,
    pub efivars: PathBuf,
    /// Root-owned, on the data partition: `install.json`, `outbox/` and `conclusions/`.
    pub state_dir: PathBuf,
}

impl Default for Paths {
    fn default() -> Self {
        Self {
            cmdline: "/proc/cmdline".into(),
            os_release: "/etc/os-release".into(),
            boot_id: "/proc/sys/kernel/random/boot_id".into(),
            efivars: "/sys/firmware/efi/efivars".into(),
            state_dir: "/var/lib/bsfg-firmware".into(),
        }
    }
}

impl Paths {
    pub fn outbox(&self) -> PathBuf {
        self.state_dir.join("outbox")
    }

    /// Installs' outcomes not yet written into their records (`conclusion`).
    pub fn conclusions(&self) -> PathBuf {
        self.state_dir.join("conclusions")
    }

    fn pending_file(&self) -> PathBuf {
        self.state_dir.join("install.json")
    }

    /// This boot: slot from `bsfg.slot=`, version from `IMAGE_VERSION=`, counted when
    /// systemd-boot set `LoaderBootCountPath` (it does only for an entry with tries left).
    pub fn boot(&self) -> Result<Boot, String> {
        let cmdline = read(&self.cmdline)?;
        let slot = cmdline
            .split_whitespace()
            .find_map(|arg| arg.strip_prefix("bsfg.slot="))
            .ok_or_else(|| {
                format!(
                    "{}: no bsfg.slot= (not booted as an appliance slot)",
                    self.cmdline.display()
                )
            })?
            .to_string();
        let version = image_version(&read(&self.os_release)?)
            .ok_or_else(|| format!("{}: no IMAGE_VERSION=", self.os_release.display()))?;
        let boot_id = read(&self.boot_id)?.trim().to_string();
        let counted = self
            .efivars
            .join(format!("LoaderBootCountPath-{LOADER_GUID}"))
            .exists();
        Ok(Boot {
            boot_id,
            slot,
            version,
            counted,
        })
    }

    /// The install in progress, if any.
    pub fn pending(&self) -> Result<Option<PendingInstall>, String> {
        let path = self.pending_file();
        match fs::read(&path) {
            Ok(body) => serde_json::from_slice(&body)
                .map(Some)
                .map_err(|e| format!("{}: not an install state ({e})", path.display())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(format!("reading {}: {e}", path.display())),
        }
    }

    /// Keeps (or, with `None`, removes) the install state, synced before returning.
    pub fn set_pending(&self, pending: Option<&PendingInstall>) -> Result<(), String> {
        let path = self.pending_file();
        let Some(pending) = pending else {
            return match fs::remove_file(&path) {
                Ok(()) => sync_dir(&self.state_dir),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
                Err(e) => Err(format!("removing {}: {e}", path.display())),
            };
        };
        let body = serde_json::to_vec_pretty(pending)
            .map_err(|e| format!("encoding the install state: {e}"))?;
        write_durably(&path, &path.with_extension("json.tmp"), &body)
    }
}

/// `IMAGE_VERSION` of an os-release file (quotes removed).
pub fn image_version(os_release: &str) -> Option<String> {
    os_release.lines().find_map(|line| {
        let value = line.trim().strip_prefix("IMAGE_VERSION=")?;
        let value = value.trim_matches(|c| c == '"' || c == '\'');
        (!value.is_empty()).then(|| value.to_string())
    })
}

fn read(path: &Path) -> Result<String, String> {
    fs::read_to_string(path).map_err(|e| format!("reading {}: {e}", path.display()))
}

/// Writes `body` to `path` so that a power cut leaves the old file or the new one, whole: into
/// `temp` (same directory, created with its parents), synced, renamed, the directory synced.
pub(super) fn write_durably(path: &Path, temp: &Path, body: &[u8]) -> Result<(), String> {
    let dir = path.parent().unwrap_or(Path::new("."));
    fs::create_dir_all(dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
    fs::File::create(temp)
        .and_then(|mut file| {
            file.write_all(body)?;
            file.sync_all()
        })
        .map_err(|e| format!("writing {}: {e}", temp.display()))?;
    fs::rename(temp, path).map_err(|e| format!("renaming {}: {e}", temp.display()))?;
    sync_dir(dir)
}

fn sync_dir(dir: &Path) -> Result<(), String> {
    fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| format!("syncing {}: {e}", dir.display()))
}

/// An appliance in `dir` for tests: booted with `cmdline`, os-release of 0.2.0, counted or not.
#[cfg(test)]
pub(crate) fn test_host(dir: &Path, cmdline: &str, counted: bool) -> Paths {
    let paths = Paths {
        cmdline: dir.join("cmdline"),
        os_release: dir.join("os-release"),
        boot_id: dir.join("boot_id"),
        efivars: dir.join("efivars"),
        state_dir: dir.join("state"),
    };
    fs::write(&paths.cmdline, cmdline).expect("write");
    fs::write(
        &paths.os_release,
        "ID=debian\nIMAGE_ID=bsfg-appliance\nIMAGE_VERSION=\"0.2.0\"\n",
    )
    .expect("write");
    fs::write(&paths.boot_id, "5f0c2d7e-1b9a-4c3e-9d2f-0a1b2c3d4e5f\n").expect("write");
    fs::create_dir_all(&paths.efivars).expect("mkdir");
    if counted {
        fs::write(
            paths
                .efivars
                .join(format!("LoaderBootCountPath-{LOADER_GUID}")),
            b"x",
        )
        .expect("write");
    }
    paths
}

#[cfg(test)]
mod tests {
    use super::*;
    use test_host as host;

    #[test]
    fn the_boot_is_read_from_the_command_line_os_release_and_efi_variables() {
        let dir = tempfile::tempdir().expect("temp dir");
        let paths = host(
            dir.path(),
            "bsfg.slot=b bsfg.roothash=ab ro rauc.slot=b\n",
            true,
        );
        let boot = paths.boot().expect("boot");
        assert_eq!(
            (boot.slot.as_str(), boot.version.as_str(), boot.counted),
            ("b", "0.2.0", true)
        );
        assert_eq!(boot.boot_id, "5f0c2d7e-1b9a-4c3e-9d2f-0a1b2c3d4e5f");
    }

    #[test]
    fn a_host_that_is_not_an_appliance_slot_says_so() {
        let dir = tempfile::tempdir().expect("temp dir");
        let paths = host(dir.path(), "root=/dev/sda1 ro\n", false);
        let error = paths.boot().expect_err("no slot");
        assert!(error.contains("no bsfg.slot="), "{error}");
    }

    #[test]
    fn the_install_state_is_kept_and_removed() {
        let dir = tempfile::tempdir().expect("temp dir");
        let paths = host(dir.path(), "bsfg.slot=a\n", false);
        assert_eq!(paths.pending(), Ok(None));
        let pending = PendingInstall {
            attempt: "att".into(),
            slot: "b".into(),
            version: "0.2.0".into(),
            written: false,
            bad_boots: vec![],
        };
        paths.set_pending(Some(&pending)).expect("keep");
        assert_eq!(paths.pending(), Ok(Some(pending)));
        paths.set_pending(None).expect("remove");
        assert_eq!(paths.pending(), Ok(None));
        fs::write(paths.state_dir.join("install.json"), b"[").expect("write");
        let error = paths.pending().expect_err("broken");
        assert!(
            error.contains("install.json: not an install state"),
            "{error}"
        );
    }
}
