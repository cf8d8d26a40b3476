//! "Verified before written": a RAUC bundle is proven in full before `rauc install` may write a
//! byte of the inactive slot. [`verify_bundle`] runs the checks in this order and stops at the
//! first that fails, naming it ([`Check`]) and why:
//!
//! 1. **structure** — the file's frame (trailer, signature size, block-aligned payload) and the
//!    CMS signature's shape, from `bundle.rs` and `cms.rs`;
//! 2. **signature** — `rauc info` verifies the CMS signature chain against the keyring, under
//!    the system's `system.conf`; its reason is passed on;
//! 3. **signer** — the one signer's certificate is in the signature; its subject is reported;
//! 4. **compatible** — the signed `compatible` equals the system's `[system] compatible=`;
//! 5. **version policy** — the signed version is strictly greater than the running firmware's
//!    `IMAGE_VERSION=` (rules in `version.rs`);
//! 6. **payload hash** — the format is `verity`, and the dm-verity tree recomputed over every
//!    payload byte has the signed root hash and equals the tree stored in the bundle
//!    (`verity.rs`). A `plain` or `crypt` bundle is refused under this check as soon as its
//!    signature shows the format: it carries no signed hash tree this check could pass.
//!
//! RAUC 1.8 alone checks signature and manifest before writing, but a verity payload only
//! block by block *while* copying it into the slot, so a tampered payload is found with the slot
//! half written. Here every byte is proven first.
//!
//! The system's facts (keyring, compatible, running version) are read before the bundle; a
//! system that cannot state them is a [`VerifyError::System`], not a refusal of the bundle.
//!
//! The file must stay the same (device, inode, size, modification and change times) from
//! opening to the last byte hashed, and again just before `rauc install` opens it
//! (`install.rs`).
//!
//! Limits: a bundle directory writable by others could still race that last instant, so bundles
//! belong in a directory only the node writes; RAUC then re-verifies signature and each block as
//! it copies. Images with a variant (`[image.<class>.<variant>]`) are not supported: their
//! names differ between the manifest and `rauc info`'s JSON, and such a bundle is refused.

pub use super::install::install_verified;
pub use super::refusal::{
    Check, InstallError, PayloadError, SignerError, SystemError, VerifyError, VersionPolicyError,
};
use super::{
    bundle::{self, StructureError},
    cms::{self, CmsError},
    install::FileIdentity,
    manifest::{self, BundleFormat, Manifest, ManifestImage},
    rauc::{self, RaucInfo},
    verity::{self, BLOCK_SIZE, TreeLayout},
    version::Version,
};
use sha2::{Digest, Sha256};
use std::{
    io::{BufReader, Read, Seek, SeekFrom},
    path::{Path, PathBuf},
};

/// Where the appliance keeps what verification needs; each path can be overridden.
#[derive(Debug, Clone)]
pub struct VerifyOptions {
    /// The update CA(s) a signer must chain to.
    pub keyring: PathBuf,
    /// RAUC's system configuration: `[system] compatible=`, and the rules `rauc info` applies.
    pub system_conf: PathBuf,
    /// The running firmware's `IMAGE_VERSION=`.
    pub os_release: PathBuf,
    /// The `rauc` binary (a name looked up in `PATH`, or a path).
    pub rauc: PathBuf,
    /// A directory for the signature copy `rauc info` reads.
    pub scratch_dir: PathBuf,
}

impl Default for VerifyOptions {
    fn default() -> Self {
        VerifyOptions {
            keyring: "/etc/rauc/keyring.pem".into(),
            system_conf: "/etc/rauc/system.conf".into(),
            os_release: "/etc/os-release".into(),
            rauc: "rauc".into(),
            scratch_dir: std::env::temp_dir(),
        }
    }
}

/// Who signed the bundle, from the certificate rauc verified the signature with.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Signer {
    pub subject: String,
    pub issuer: String,
    pub serial: String,
    /// RFC 3339.
    pub not_after: String,
}

/// The payload's dm-verity parameters, all proven.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct VerityProof {
    pub root_hash: String,
    pub salt: String,
    pub data_size: u64,
    pub hash_tree_size: u64,
}

/// A bundle that passed every check, with what was verified (for the operator and the audit
/// record).
#[derive(Debug, Clone, serde::Serialize)]
pub struct VerifiedBundle {
    pub path: PathBuf,
    /// SHA-256 of the whole file, as read during verification.
    pub sha256: String,
    pub size: u64,
    pub compatible: String,
    pub version: String,
    pub running_version: String,
    pub signer: Signer,
    pub verity: VerityProof,
    pub images: Vec<ManifestImage>,
    #[serde(skip)]
    pub identity: FileIdentity,
}

/// The system's side of the checks.
struct SystemFacts {
    compatible: String,
    running_version: String,
}

fn read_system(options: &VerifyOptions) -> Result<SystemFacts, SystemError> {
    let read = |what, path: &Path| {
        std::fs::read_to_string(path).map_err(|source| SystemError::Read {
            what,
            path: path.display().to_string(),
            source,
        })
    };
    // The keyring is rauc's to read; reading it here makes a missing one a clear system error.
    read("the keyring", &options.keyring)?;
    let conf = read("the RAUC system configuration", &options.system_conf)?;
    let compatible =
        manifest::system_compatible(&conf).map_err(|source| SystemError::Compatible {
            path: options.system_conf.display().to_string(),
            source,
        })?;
    let os_release = read("the os-release file", &options.os_release)?;
    let running_version =
        manifest::os_release_value(&os_release, "IMAGE_VERSION").ok_or_else(|| {
            SystemError::NoRunningVersion {
                path: options.os_release.display().to_string(),
            }
        })?;
    Ok(SystemFacts {
        compatible,
        running_version,
    })
}

/// What verification is doing, for a progress display.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Progress {
    /// A check starts.
    Checking(Check),
    /// Payload bytes hashed so far (reported every 16 MiB and at the end), of the total.
    Hashed { done: u64, total: u64 },
}

/// Verifies the bundle at `path`; see the module documentation for the checks and their order.
pub fn verify_bundle(path: &Path, options: &VerifyOptions) -> Result<VerifiedBundle, VerifyError> {
    verify_bundle_with_progress(path, options, &mut |_| {})
}

/// [`verify_bundle`], telling `progress` which check runs and how far the payload hash is.
pub fn verify_bundle_with_progress(
    path: &Path,
    options: &VerifyOptions,
    progress: &mut dyn FnMut(Progress),
) -> Result<VerifiedBundle, VerifyError> {
    let system = read_system(options).map_err(VerifyError::System)?;
    // 1. structure
    progress(Progress::Checking(Check::Structure));
    let opened = bundle::open(path).map_err(|e| match e {
        StructureError::Signature(cms @ (CmsError::PlainFormat | CmsError::CryptFormat)) => {
            VerifyError::PayloadHash(PayloadError::NotVerity(cms))
        }
        other => VerifyError::Structure(other),
    })?;
    let signed = Manifest::parse_bytes(&opened.content.manifest).map_err(VerifyError::Manifest)?;
    // 2. signature
    progress(Progress::Checking(Check::Signature));
    let verified = rauc::info(
        &options.rauc,
        &options.keyring,
        &options.system_conf,
        &options.scratch_dir,
        &opened.signature,
        &opened.trailer,
    )
    .map_err(VerifyError::Signature)?;
    same_manifest(&verified, &signed).map_err(VerifyError::ManifestDiffers)?;
    // 3. signer
    progress(Progress::Checking(Check::Signer));
    let signer = signer(&opened.content).map_err(VerifyError::Signer)?;
    // 4. compatible
    progress(Progress::Checking(Check::Compatible));
    if signed.compatible != system.compatible {
        return Err(VerifyError::Compatible {
            bundle: signed.compatible,
            system: system.compatible,
            system_conf: options.system_conf.display().to_string(),
        });
    }
    // 5. version policy
    progress(Progress::Checking(Check::VersionPolicy));
    let version = newer_version(signed.version.as_deref(), &system.running_version)
        .map_err(VerifyError::VersionPolicy)?;
    // 6. payload hash
    progress(Progress::Checking(Check::PayloadHash));
    let (verity, sha256) =
        prove_payload(&opened, &signed, progress).map_err(VerifyError::PayloadHash)?;
    // The file read from first to last byte is the one that was opened.
    let identity = FileIdentity::of(&opened.metadata);
    let now = opened.file.metadata().map_err(|source| {
        VerifyError::Structure(StructureError::Read {
            path: path.display().to_string(),
            source,
        })
    })?;
    if FileIdentity::of(&now) != identity {
        return Err(VerifyError::Structure(
            StructureError::ChangedDuringVerification {
                path: path.display().to_string(),
            },
        ));
    }
    Ok(VerifiedBundle {
        path: path.to_path_buf(),
        sha256,
        size: opened.layout.file_size,
        compatible: signed.compatible,
        version: version.to_string(),
        running_version: system.running_version,
        signer,
        verity,
        images: signed.images,
        identity,
    })
}

/// An image as both manifests state it: slot class, file name, sha256, size.
type ImageRow<'a> = (&'a str, Option<&'a str>, Option<&'a str>, Option<u64>);

/// What rauc verified and what was parsed here must be the same manifest.
fn same_manifest(verified: &RaucInfo, signed: &Manifest) -> Result<(), &'static str> {
    if verified.compatible.as_deref() != Some(signed.compatible.as_str()) {
        return Err("compatible");
    }
    if verified.version != signed.version {
        return Err("version");
    }
    let theirs: Vec<ImageRow<'_>> = verified
        .images
        .iter()
        .flat_map(|map| map.iter())
        .map(|(class, image)| {
            (
                class.as_str(),
                image.filename.as_deref(),
                image.checksum.as_deref(),
                image.size,
            )
        })
        .collect();
    let ours: Vec<ImageRow<'_>> = signed
        .images
        .iter()
        .map(|i| {
            (
                i.slot_class.as_str(),
                Some(i.filename.as_str()),
                Some(i.sha256.as_str()),
                Some(i.size),
            )
        })
        .collect();
    if theirs != ours {
        return Err("images");
    }
    Ok(())
}

fn signer(content: &cms::SignedContent) -> Result<Signer, SignerError> {
    let [id] = content.signers.as_slice() else {
        return Err(SignerError::NotOneSigner(content.signers.len()));
    };
    let certificate =
        cms::find_certificate(id, &content.certificates).ok_or(SignerError::CertificateMissing)?;
    let not_after = certificate
        .validity()
        .not_after
        .to_datetime()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_else(|_| certificate.validity().not_after.to_string());
    Ok(Signer {
        subject: certificate.subject().to_string(),
        issuer: certificate.issuer().to_string(),
        serial: certificate.raw_serial_as_string(),
        not_after,
    })
}

fn newer_version(bundle: Option<&str>, running: &str) -> Result<Version, VersionPolicyError> {
    let bundle = Version::parse(bundle.ok_or(VersionPolicyError::NoVersion)?)
        .map_err(VersionPolicyError::BundleVersion)?;
    let running = Version::parse(running).map_err(VersionPolicyError::RunningVersion)?;
    if bundle > running {
        return Ok(bundle);
    }
    Err(VersionPolicyError::NotNewer {
        relation: if bundle == running {
            "equal to"
        } else {
            "lower than"
        },
        bundle: bundle.to_string(),
        running: running.to_string(),
    })
}

/// Recomputes the hash tree over the payload; returns the proof and the whole file's SHA-256.
fn prove_payload(
    opened: &bundle::OpenBundle,
    signed: &Manifest,
    progress: &mut dyn FnMut(Progress),
) -> Result<(VerityProof, String), PayloadError> {
    let metadata = match (signed.format, &signed.verity) {
        (BundleFormat::Verity, Some(metadata)) => metadata,
        (format, _) => return Err(PayloadError::FormatNotVerity(format)),
    };
    let payload = opened.layout.payload_size;
    let size_error = |data_blocks, expected| PayloadError::VeritySize {
        signed: metadata.hash_tree_size,
        payload,
        data_blocks,
        expected,
    };
    let data_size = payload
        .checked_sub(metadata.hash_tree_size)
        .filter(|d| *d > 0 && d.is_multiple_of(BLOCK_SIZE))
        .ok_or_else(|| size_error(0, 0))?;
    let layout = TreeLayout::new(data_size / BLOCK_SIZE)?;
    let expected = layout.hash_blocks() * BLOCK_SIZE;
    if expected != metadata.hash_tree_size {
        return Err(size_error(layout.data_blocks(), expected));
    }
    let mut file = &opened.file;
    file.seek(SeekFrom::Start(0)).map_err(PayloadError::Read)?;
    let mut reader = BufReader::with_capacity(1 << 20, file.take(payload));
    let mut whole_file = Sha256::new();
    const REPORT_EVERY: u64 = 16 << 20;
    let mut done = 0u64;
    verity::verify(
        &mut reader,
        &layout,
        &metadata.salt,
        &metadata.root_hash,
        &mut |bytes| {
            whole_file.update(bytes);
            let before = done;
            done += bytes.len() as u64;
            if done == payload || done / REPORT_EVERY != before / REPORT_EVERY {
                progress(Progress::Hashed {
                    done,
                    total: payload,
                });
            }
        },
    )?;
    whole_file.update(&opened.signature);
    whole_file.update(opened.trailer);
    Ok((
        VerityProof {
            root_hash: hex::encode(metadata.root_hash),
            salt: hex::encode(metadata.salt),
            data_size,
            hash_tree_size: metadata.hash_tree_size,
        },
        hex::encode(whole_file.finalize()),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn version_policy_is_strictly_greater() {
        assert!(newer_version(Some("0.2.0"), "0.1.0").is_ok());
        for (bundle, running, relation) in [
            ("0.1.0", "0.1.0", "equal to"),
            ("0.1", "0.1.0+other-build", "equal to"),
            ("0.1.0-rc.1", "0.1.0", "lower than"),
            ("0.0.9", "0.1.0", "lower than"),
        ] {
            match newer_version(Some(bundle), running) {
                Err(VersionPolicyError::NotNewer { relation: r, .. }) => assert_eq!(r, relation),
                other => panic!("{bundle} over {running}: {other:?}"),
            }
        }
        assert!(matches!(
            newer_version(None, "0.1.0"),
            Err(VersionPolicyError::NoVersion)
        ));
        assert!(matches!(
            newer_version(Some("latest"), "0.1.0"),
            Err(VersionPolicyError::BundleVersion(_))
        ));
        assert!(matches!(
            newer_version(Some("0.2.0"), "unknown"),
            Err(VersionPolicyError::RunningVersion(_))
        ));
    }
}
