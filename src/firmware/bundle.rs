//! A RAUC 1.8 bundle file read as a structure, before anything in it is trusted.
//!
//! Layout (RAUC `bundle.c`, `docs/reference.rst` "verity Format"):
//!
//! ```text
//! 0                                     payload_size                    file_size - 8  file_size
//! | squashfs (data) | dm-verity hash tree | CMS signature (signature_size) | u64 BE size |
//! ```
//!
//! The payload (squashfs and hash tree) is a whole number of 4 KiB blocks; the signature is
//! 1 byte to 64 KiB (RAUC's own limit). Every size read from the file is checked against the
//! file before it is used: a truncated or garbage file is a [`StructureError`], never a panic
//! and never a read beyond what the file holds.
//!
//! It owns reading the file's frame and its signature bytes; it never judges the signature (see
//! `rauc.rs`) or the payload (see `verity.rs`).

use super::{cms, verity::BLOCK_SIZE};
use std::{fs::File, os::unix::fs::FileExt, path::Path};

/// The trailer holding the signature's size.
const TRAILER_SIZE: u64 = 8;
/// RAUC refuses larger signatures (`MAX_BUNDLE_SIGNATURE_SIZE`).
pub const MAX_SIGNATURE_SIZE: u64 = 64 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum StructureError {
    #[error("cannot open {path}: {source}")]
    Open {
        path: String,
        source: std::io::Error,
    },
    #[error("{path} is not a regular file")]
    NotRegularFile { path: String },
    #[error("cannot read {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error(
        "the file is {0} bytes, too small for a bundle (a payload block, a signature and its 8-byte size)"
    )]
    TooSmall(u64),
    #[error("the signature size in the trailer is 0")]
    EmptySignature,
    #[error("the signature size in the trailer ({0} bytes) exceeds RAUC's 64 KiB limit")]
    SignatureTooLarge(u64),
    #[error(
        "the signature size in the trailer ({signature} bytes) exceeds the {available} bytes before the trailer (truncated or not a bundle)"
    )]
    SignatureBeyondFile { signature: u64, available: u64 },
    #[error("the payload before the signature is empty")]
    EmptyPayload,
    #[error(
        "the payload before the signature is {0} bytes, not a whole number of 4 KiB blocks (truncated, or not a verity bundle)"
    )]
    PayloadNotBlockAligned(u64),
    #[error("{0}")]
    Signature(#[from] cms::CmsError),
    #[error("{path} changed while it was being verified")]
    ChangedDuringVerification { path: String },
}

/// Where the parts of a bundle lie, from its trailer; all sizes in bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct BundleLayout {
    pub file_size: u64,
    /// The squashfs and its hash tree: everything before the signature.
    pub payload_size: u64,
    pub signature_size: u64,
}

impl BundleLayout {
    /// Checks the trailer's signature size against the file; trusts nothing.
    pub fn from_trailer(file_size: u64, trailer: [u8; 8]) -> Result<BundleLayout, StructureError> {
        let available = file_size
            .checked_sub(TRAILER_SIZE)
            .ok_or(StructureError::TooSmall(file_size))?;
        let signature_size = u64::from_be_bytes(trailer);
        if signature_size == 0 {
            return Err(StructureError::EmptySignature);
        }
        if signature_size > available {
            return Err(StructureError::SignatureBeyondFile {
                signature: signature_size,
                available,
            });
        }
        if signature_size > MAX_SIGNATURE_SIZE {
            return Err(StructureError::SignatureTooLarge(signature_size));
        }
        let payload_size = available - signature_size;
        if payload_size == 0 {
            return Err(StructureError::EmptyPayload);
        }
        if !payload_size.is_multiple_of(BLOCK_SIZE) {
            return Err(StructureError::PayloadNotBlockAligned(payload_size));
        }
        Ok(BundleLayout {
            file_size,
            payload_size,
            signature_size,
        })
    }
}

/// A bundle opened for verification: its file, layout and signature bytes (read once; the
/// same bytes are verified by `rauc info` and parsed here).
#[derive(Debug)]
pub struct OpenBundle {
    pub file: File,
    /// The file's metadata when it was opened.
    pub metadata: std::fs::Metadata,
    pub layout: BundleLayout,
    /// The DER CMS signature.
    pub signature: Vec<u8>,
    pub trailer: [u8; 8],
    /// The signature taken apart: manifest, certificates, signers.
    pub content: cms::SignedContent,
}

/// Opens `path` and reads its frame: trailer, signature, and the signed manifest inside it.
pub fn open(path: &Path) -> Result<OpenBundle, StructureError> {
    let name = path.display().to_string();
    let file = File::open(path).map_err(|source| StructureError::Open {
        path: name.clone(),
        source,
    })?;
    let read_error = |source| StructureError::Read {
        path: name.clone(),
        source,
    };
    let metadata = file.metadata().map_err(read_error)?;
    if !metadata.is_file() {
        return Err(StructureError::NotRegularFile { path: name });
    }
    let file_size = metadata.len();
    if file_size < BLOCK_SIZE + TRAILER_SIZE + 1 {
        return Err(StructureError::TooSmall(file_size));
    }
    let mut trailer = [0u8; 8];
    file.read_exact_at(&mut trailer, file_size - TRAILER_SIZE)
        .map_err(read_error)?;
    let layout = BundleLayout::from_trailer(file_size, trailer)?;
    let mut signature = vec![0u8; usize::try_from(layout.signature_size).unwrap_or(0)];
    file.read_exact_at(&mut signature, layout.payload_size)
        .map_err(read_error)?;
    let content = cms::parse_signed_content(&signature)?;
    Ok(OpenBundle {
        file,
        metadata,
        layout,
        signature,
        trailer,
        content,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layout(file_size: u64, signature_size: u64) -> Result<BundleLayout, StructureError> {
        BundleLayout::from_trailer(file_size, signature_size.to_be_bytes())
    }

    #[test]
    fn trailer_edge_cases() {
        assert!(matches!(layout(7, 1), Err(StructureError::TooSmall(7))));
        assert!(matches!(layout(8, 0), Err(StructureError::EmptySignature)));
        assert!(matches!(
            layout(100, 93),
            Err(StructureError::SignatureBeyondFile {
                signature: 93,
                available: 92
            })
        ));
        assert!(matches!(
            layout(100, u64::MAX),
            Err(StructureError::SignatureBeyondFile { .. })
        ));
        assert!(matches!(
            layout(200_000, 70_000),
            Err(StructureError::SignatureTooLarge(70_000))
        ));
        assert!(matches!(
            layout(108, 100),
            Err(StructureError::EmptyPayload)
        ));
        assert!(matches!(
            layout(4096 + 8 + 100, 99),
            Err(StructureError::PayloadNotBlockAligned(4097))
        ));
        let ok = layout(8192 + 8 + 1200, 1200).expect("a well-formed frame");
        assert_eq!((ok.payload_size, ok.signature_size), (8192, 1200));
        let max = layout(4096 + 8 + MAX_SIGNATURE_SIZE, MAX_SIGNATURE_SIZE).expect("64 KiB");
        assert_eq!(max.payload_size, 4096);
    }

    #[test]
    fn garbage_and_truncated_files() {
        let dir = tempfile::tempdir().expect("tempdir");
        let garbage = dir.path().join("garbage.raucb");
        std::fs::write(&garbage, vec![0xA5u8; 20_000]).expect("write");
        assert!(matches!(
            open(&garbage),
            Err(StructureError::SignatureBeyondFile { .. })
        ));
        let tiny = dir.path().join("tiny.raucb");
        std::fs::write(&tiny, b"RAUC").expect("write");
        assert!(matches!(open(&tiny), Err(StructureError::TooSmall(4))));
        // A frame whose signature is not CMS.
        let mut framed = vec![0u8; 4096];
        framed.extend_from_slice(&[0x30, 0x03, 0x02, 0x01, 0x01]);
        framed.extend_from_slice(&5u64.to_be_bytes());
        let not_cms = dir.path().join("not-cms.raucb");
        std::fs::write(&not_cms, framed).expect("write");
        assert!(matches!(open(&not_cms), Err(StructureError::Signature(_))));
        assert!(matches!(
            open(dir.path()),
            Err(StructureError::NotRegularFile { .. })
        ));
        assert!(matches!(
            open(&dir.path().join("missing")),
            Err(StructureError::Open { .. })
        ));
    }
}
