//! The two things the appliance asks of the `rauc` 1.8 binary: verify a bundle's CMS signature
//! against the keyring (`rauc info`), and install a bundle already verified here
//! (`rauc install`, which hands the work to `rauc-service` over D-Bus).
//!
//! `rauc info` is given a *signature copy*: a private file holding one zero block, the very
//! signature bytes `bundle.rs` read, and the trailer. A verity bundle's signature is not
//! detached (its content is the manifest), so rauc verifies it without the payload, and the
//! bytes it judges are exactly the bytes parsed here: swapping the bundle file while rauc runs
//! changes nothing. `--conf` makes rauc apply the system's own rules (`bundle-formats`, keyring
//! `check-purpose`, …); `--keyring` names the trust anchors. `G_MESSAGES_DEBUG` is removed so
//! nothing but the JSON document reaches stdout; rauc's log goes to stderr, and its last
//! non-log line is its reason for a refusal.
//!
//! It never decides policy (compatible, version, payload): `verify.rs` does.
//!
//! Limits: `rauc info` is waited for without a deadline (it reads at most 64 KiB and the
//! keyring); `rauc install`'s outcome is its exit status, its progress its output lines.

use serde::Deserialize;
use std::{
    collections::BTreeMap,
    io::{BufRead, BufReader, Write},
    os::unix::fs::{DirBuilderExt, OpenOptionsExt},
    path::{Path, PathBuf},
    process::{Command, ExitStatus, Stdio},
    sync::mpsc,
};

#[derive(Debug, thiserror::Error)]
pub enum RaucError {
    #[error("cannot run {binary}: {source}")]
    Spawn {
        binary: String,
        source: std::io::Error,
    },
    #[error("cannot write the signature copy for rauc in {dir}: {source}")]
    Scratch { dir: String, source: std::io::Error },
    #[error("rauc info refused it ({status}): {reason}")]
    Refused { status: String, reason: String },
    #[error("rauc info printed no JSON manifest ({error}): {stdout:?}")]
    BadOutput { error: String, stdout: String },
}

/// `rauc info --output-format=json`, as RAUC 1.8's `info_formatter_json` writes it.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
pub struct RaucInfo {
    pub compatible: Option<String>,
    pub version: Option<String>,
    #[serde(default)]
    pub images: Vec<BTreeMap<String, RaucImage>>,
}

/// One image of `rauc info`'s JSON, under its slot class.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
pub struct RaucImage {
    pub filename: Option<String>,
    pub checksum: Option<String>,
    pub size: Option<u64>,
}

/// Runs `rauc info` on a copy of the signature and returns the manifest rauc verified.
pub fn info(
    rauc: &Path,
    keyring: &Path,
    system_conf: &Path,
    scratch: &Path,
    signature: &[u8],
    trailer: &[u8; 8],
) -> Result<RaucInfo, RaucError> {
    let copy = SignatureCopy::write(scratch, signature, trailer)?;
    let output = Command::new(rauc)
        .arg(arg("--conf=", system_conf))
        .arg(arg("--keyring=", keyring))
        .arg("--output-format=json")
        .arg("info")
        .arg(&copy.file)
        .env_remove("G_MESSAGES_DEBUG")
        .stdin(Stdio::null())
        .output()
        .map_err(|source| RaucError::Spawn {
            binary: rauc.display().to_string(),
            source,
        })?;
    drop(copy);
    let stdout = String::from_utf8_lossy(&output.stdout);
    if !output.status.success() {
        return Err(RaucError::Refused {
            status: output.status.to_string(),
            reason: reason(&String::from_utf8_lossy(&output.stderr)),
        });
    }
    serde_json::from_str(stdout.trim()).map_err(|e| RaucError::BadOutput {
        error: e.to_string(),
        stdout: stdout.chars().take(300).collect(),
    })
}

fn arg(flag: &str, path: &Path) -> std::ffi::OsString {
    let mut out = std::ffi::OsString::from(flag);
    out.push(path.as_os_str());
    out
}

/// rauc's reason: its stderr without GLib's log lines (`rauc-Message: …`), or the last line.
fn reason(stderr: &str) -> String {
    let lines: Vec<&str> = stderr
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect();
    let plain: Vec<&str> = lines
        .iter()
        .copied()
        .filter(|l| !l.starts_with("rauc-"))
        .collect();
    match (plain.is_empty(), lines.last()) {
        (false, _) => plain.join("; "),
        (true, Some(last)) => (*last).to_string(),
        (true, None) => "no reason given".into(),
    }
}

/// A private directory with `signature.raucb` (one zero block, the signature, the trailer),
/// removed on drop.
struct SignatureCopy {
    dir: PathBuf,
    file: PathBuf,
}

impl SignatureCopy {
    fn write(scratch: &Path, signature: &[u8], trailer: &[u8; 8]) -> Result<Self, RaucError> {
        let fail = |source| RaucError::Scratch {
            dir: scratch.display().to_string(),
            source,
        };
        static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        let serial = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let dir = scratch.join(format!(
            "bsfg-signature-{}-{serial}-{nanos}",
            std::process::id()
        ));
        std::fs::DirBuilder::new()
            .mode(0o700)
            .create(&dir)
            .map_err(fail)?;
        let copy = SignatureCopy {
            file: dir.join("signature.raucb"),
            dir,
        };
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&copy.file)
            .map_err(fail)?;
        file.write_all(&[0u8; 4096]).map_err(fail)?;
        file.write_all(signature).map_err(fail)?;
        file.write_all(trailer).map_err(fail)?;
        Ok(copy)
    }
}

impl Drop for SignatureCopy {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A line `rauc install` wrote, and where.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OutputLine {
    Stdout(String),
    Stderr(String),
}

/// Runs `rauc install BUNDLE`, passing each output line to `on_line` as it comes; returns
/// rauc's exit status.
pub fn install(
    rauc: &Path,
    bundle: &Path,
    on_line: &mut dyn FnMut(OutputLine),
) -> Result<ExitStatus, RaucError> {
    let spawn_error = |source| RaucError::Spawn {
        binary: rauc.display().to_string(),
        source,
    };
    let mut child = Command::new(rauc)
        .arg("install")
        .arg(bundle)
        .env_remove("G_MESSAGES_DEBUG")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(spawn_error)?;
    let (sender, lines) = mpsc::channel();
    let readers = [
        child
            .stdout
            .take()
            .map(|s| forward(s, sender.clone(), OutputLine::Stdout)),
        child
            .stderr
            .take()
            .map(|s| forward(s, sender.clone(), OutputLine::Stderr)),
    ];
    drop(sender);
    for line in lines {
        on_line(line);
    }
    for reader in readers.into_iter().flatten() {
        let _ = reader.join();
    }
    child.wait().map_err(spawn_error)
}

fn forward(
    stream: impl std::io::Read + Send + 'static,
    sender: mpsc::Sender<OutputLine>,
    wrap: fn(String) -> OutputLine,
) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        for line in BufReader::new(stream).lines().map_while(Result::ok) {
            if sender.send(wrap(line)).is_err() {
                break;
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rauc_json_is_read_with_serde() {
        let json = r#"{"compatible":"bsfg-appliance-x86_64","version":"0.2.0","description":null,"build":null,"hooks":[],"images":[{"rootfs":{"variant":null,"filename":"rootfs.img","checksum":"53563da34ca1569d7cee2766a8354e79ba03f5b849c1226a930aa99196a30a83","size":20000,"hooks":[],"adaptive":[]}}]}"#;
        let info: RaucInfo = serde_json::from_str(json).expect("rauc 1.8 json");
        assert_eq!(info.compatible.as_deref(), Some("bsfg-appliance-x86_64"));
        assert_eq!(info.images[0]["rootfs"].size, Some(20000));
    }

    #[test]
    fn the_reason_is_rauc_s_own_line() {
        let stderr = "rauc-Message: 10:21:47.359: Reading bundle: /tmp/x\nrauc-Message: 10:21:47.361: Verifying bundle signature... \nsignature verification failed: Verify error: unable to get local issuer certificate\n";
        assert_eq!(
            reason(stderr),
            "signature verification failed: Verify error: unable to get local issuer certificate"
        );
        assert_eq!(
            reason("rauc-Message: only a log line\n"),
            "rauc-Message: only a log line"
        );
        assert_eq!(reason(""), "no reason given");
    }
}
