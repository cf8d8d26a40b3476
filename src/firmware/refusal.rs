//! Why a bundle was not verified or installed: one error per check, each saying what failed and
//! with which value, and [`Check`], the name an operator, the audit record and the RPC see.
//! `VerifyError::check` is the one place an error is mapped to its check.

use super::{
    bundle::StructureError,
    cms::CmsError,
    manifest::{BundleFormat, KeyFileError},
    rauc::RaucError,
    verity::VerityError,
    version::VersionError,
};

/// The checks, in the order they run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Check {
    Structure,
    Signature,
    Signer,
    Compatible,
    VersionPolicy,
    PayloadHash,
}

impl Check {
    pub fn as_str(self) -> &'static str {
        match self {
            Check::Structure => "structure",
            Check::Signature => "signature",
            Check::Signer => "signer",
            Check::Compatible => "compatible",
            Check::VersionPolicy => "version-policy",
            Check::PayloadHash => "payload-hash",
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SystemError {
    #[error("cannot read {what} {path}: {source}")]
    Read {
        what: &'static str,
        path: String,
        source: std::io::Error,
    },
    #[error("{path}: {source}")]
    Compatible { path: String, source: KeyFileError },
    #[error("{path} has no IMAGE_VERSION=: the running firmware's version is unknown")]
    NoRunningVersion { path: String },
}

#[derive(Debug, thiserror::Error)]
pub enum SignerError {
    #[error("the signature has {0} signers; a bundle is signed by exactly one")]
    NotOneSigner(usize),
    #[error("the signer's certificate is not in the signature")]
    CertificateMissing,
}

#[derive(Debug, thiserror::Error)]
pub enum VersionPolicyError {
    #[error("the bundle has no version")]
    NoVersion,
    #[error("the bundle's version {0}")]
    BundleVersion(VersionError),
    #[error("the running firmware's version {0}")]
    RunningVersion(VersionError),
    #[error(
        "bundle version {bundle} is {relation} the running version {running}; only a greater version installs"
    )]
    NotNewer {
        bundle: String,
        running: String,
        relation: &'static str,
    },
}

#[derive(Debug, thiserror::Error)]
pub enum PayloadError {
    #[error("{0}")]
    NotVerity(CmsError),
    #[error(
        "the signed manifest declares format={0:?}; this appliance accepts verity bundles only"
    )]
    FormatNotVerity(BundleFormat),
    #[error(
        "the signed verity-size ({signed} bytes) does not fit the {payload}-byte payload: a tree over {data_blocks} data blocks takes {expected} bytes"
    )]
    VeritySize {
        signed: u64,
        payload: u64,
        data_blocks: u64,
        expected: u64,
    },
    #[error("{0}")]
    Verity(#[from] VerityError),
    #[error("cannot read the payload: {0}")]
    Read(std::io::Error),
}

/// Why a bundle was not verified: [`VerifyError::check`] names the check that refused it.
#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    #[error("this system cannot verify bundles: {0}")]
    System(SystemError),
    #[error("structure check failed: {0}")]
    Structure(StructureError),
    #[error("structure check failed: the signed manifest cannot be read: {0}")]
    Manifest(KeyFileError),
    #[error("signature check failed: {0}")]
    Signature(RaucError),
    #[error(
        "signature check failed: the manifest rauc verified differs from the signed one read here ({0})"
    )]
    ManifestDiffers(&'static str),
    #[error("signer check failed: {0}")]
    Signer(SignerError),
    #[error(
        "compatible check failed: the bundle is for {bundle:?}, this system ({system_conf}) is {system:?}"
    )]
    Compatible {
        bundle: String,
        system: String,
        system_conf: String,
    },
    #[error("version policy check failed: {0}")]
    VersionPolicy(VersionPolicyError),
    #[error("payload hash check failed: {0}")]
    PayloadHash(PayloadError),
}

impl VerifyError {
    /// The check that refused the bundle; `None` when the system itself is at fault (its
    /// keyring, configuration or os-release unreadable, or rauc not runnable).
    pub fn check(&self) -> Option<Check> {
        Some(match self {
            VerifyError::System(_)
            | VerifyError::Signature(RaucError::Spawn { .. } | RaucError::Scratch { .. }) => {
                return None;
            }
            VerifyError::Structure(_) | VerifyError::Manifest(_) => Check::Structure,
            VerifyError::Signature(_) | VerifyError::ManifestDiffers(_) => Check::Signature,
            VerifyError::Signer(_) => Check::Signer,
            VerifyError::Compatible { .. } => Check::Compatible,
            VerifyError::VersionPolicy(_) => Check::VersionPolicy,
            VerifyError::PayloadHash(_) => Check::PayloadHash,
        })
    }
}

#[derive(Debug, thiserror::Error)]
pub enum InstallError {
    #[error("{path} changed after it was verified; verify it again")]
    Changed { path: String },
    #[error("cannot check {path} before installing: {source}")]
    Stat {
        path: String,
        source: std::io::Error,
    },
    #[error("{0}")]
    Rauc(#[from] RaucError),
}
