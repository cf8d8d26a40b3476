//! Reads one section of a PE/COFF image: the `.osrel` section of a unified kernel image, which
//! systemd-boot uses to name, sort and version a type-2 boot entry. Only the headers and the one
//! section are read (a UKI is ~20 MiB). Every offset and size comes from the file, so each is
//! checked before use: a malformed, truncated or hostile file is an error, never a panic, and
//! never a read beyond `MAX_SECTION_BYTES`.
//!
//! Limits: section names longer than 8 bytes (the `/nnn` string-table form) are not resolved;
//! UKI section names (`.osrel`, `.cmdline`, `.linux`, ...) all fit.

use std::io::{Read, Seek, SeekFrom};

/// The largest section this reader returns (an os-release file is a few hundred bytes).
pub const MAX_SECTION_BYTES: u32 = 64 * 1024;
/// The PE format's own limit on the number of sections.
const MAX_SECTIONS: u16 = 96;
const SECTION_HEADER_BYTES: u64 = 40;

#[derive(Debug, thiserror::Error)]
pub enum PeError {
    #[error("not a PE image: {0}")]
    NotPe(&'static str),
    #[error("malformed PE image: {0}")]
    Malformed(String),
    #[error("section {name} is {size} bytes, more than the {max} this reader accepts")]
    SectionTooLarge { name: String, size: u32, max: u32 },
    #[error("cannot read the image: {0}")]
    Io(#[from] std::io::Error),
}

/// A section header's place in the file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct SectionPlace {
    offset: u32,
    size: u32,
}

fn read_at<R: Read + Seek>(image: &mut R, offset: u64, buf: &mut [u8]) -> Result<(), PeError> {
    image.seek(SeekFrom::Start(offset))?;
    image.read_exact(buf).map_err(|e| match e.kind() {
        std::io::ErrorKind::UnexpectedEof => PeError::Malformed(format!(
            "{} bytes at offset {offset} are beyond the end of the file",
            buf.len()
        )),
        _ => PeError::Io(e),
    })
}

fn u16_at(bytes: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([bytes[at], bytes[at + 1]])
}

fn u32_at(bytes: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]])
}

/// The offset of the section table and the number of sections, from the DOS and COFF headers.
fn section_table<R: Read + Seek>(image: &mut R) -> Result<(u64, u16), PeError> {
    let mut dos = [0u8; 64];
    read_at(image, 0, &mut dos).map_err(|_| PeError::NotPe("shorter than a DOS header"))?;
    if &dos[0..2] != b"MZ" {
        return Err(PeError::NotPe("no MZ signature"));
    }
    let pe_offset = u64::from(u32_at(&dos, 0x3C));
    // Signature (4) + COFF file header (20).
    let mut coff = [0u8; 24];
    read_at(image, pe_offset, &mut coff)?;
    if &coff[0..4] != b"PE\0\0" {
        return Err(PeError::NotPe("no PE signature at e_lfanew"));
    }
    let sections = u16_at(&coff, 6);
    if sections > MAX_SECTIONS {
        return Err(PeError::Malformed(format!(
            "{sections} sections (the format allows {MAX_SECTIONS})"
        )));
    }
    let optional_header = u64::from(u16_at(&coff, 20));
    Ok((pe_offset + 24 + optional_header, sections))
}

/// Where the section named `name` is in the file, if the image has one.
fn find_section<R: Read + Seek>(
    image: &mut R,
    name: &str,
) -> Result<Option<SectionPlace>, PeError> {
    let (table, count) = section_table(image)?;
    for i in 0..u64::from(count) {
        let mut header = [0u8; SECTION_HEADER_BYTES as usize];
        read_at(image, table + i * SECTION_HEADER_BYTES, &mut header)?;
        let raw_name = &header[0..8];
        let len = raw_name.iter().position(|&b| b == 0).unwrap_or(8);
        if &raw_name[..len] != name.as_bytes() {
            continue;
        }
        let virtual_size = u32_at(&header, 8);
        let raw_size = u32_at(&header, 16);
        // The raw size is padded to the file alignment; the virtual size is the content's.
        let size = if virtual_size != 0 && virtual_size <= raw_size {
            virtual_size
        } else {
            raw_size
        };
        let offset = u32_at(&header, 20);
        return Ok(Some(SectionPlace { offset, size }));
    }
    Ok(None)
}

/// The bytes of section `name` (e.g. `.osrel`), without trailing NUL padding; `None` when the
/// image has no such section.
pub fn read_section<R: Read + Seek>(image: &mut R, name: &str) -> Result<Option<Vec<u8>>, PeError> {
    let Some(place) = find_section(image, name)? else {
        return Ok(None);
    };
    if place.size > MAX_SECTION_BYTES {
        return Err(PeError::SectionTooLarge {
            name: name.to_string(),
            size: place.size,
            max: MAX_SECTION_BYTES,
        });
    }
    let mut bytes = vec![0u8; place.size as usize];
    read_at(image, u64::from(place.offset), &mut bytes)?;
    while bytes.last() == Some(&0) {
        bytes.pop();
    }
    Ok(Some(bytes))
}

#[cfg(test)]
pub mod tests {
    use super::*;
    use std::io::Cursor;

    /// A minimal PE image: DOS header, PE signature, COFF header, an empty 16-byte optional
    /// header, then one section per (name, content), contents after the headers.
    pub fn tiny_pe(sections: &[(&str, &[u8])]) -> Vec<u8> {
        let pe_offset = 0x40usize;
        let optional = 16usize;
        let table = pe_offset + 24 + optional;
        let mut data_at = table + sections.len() * 40;
        let mut image = vec![0u8; data_at];
        image[0..2].copy_from_slice(b"MZ");
        image[0x3C..0x40].copy_from_slice(&(pe_offset as u32).to_le_bytes());
        image[pe_offset..pe_offset + 4].copy_from_slice(b"PE\0\0");
        image[pe_offset + 4..pe_offset + 6].copy_from_slice(&0x8664u16.to_le_bytes());
        image[pe_offset + 6..pe_offset + 8].copy_from_slice(&(sections.len() as u16).to_le_bytes());
        image[pe_offset + 20..pe_offset + 22].copy_from_slice(&(optional as u16).to_le_bytes());
        for (i, (name, content)) in sections.iter().enumerate() {
            let h = table + i * 40;
            image[h..h + name.len()].copy_from_slice(name.as_bytes());
            let len = content.len() as u32;
            let padded = len.div_ceil(512) * 512;
            image[h + 8..h + 12].copy_from_slice(&len.to_le_bytes());
            image[h + 16..h + 20].copy_from_slice(&padded.to_le_bytes());
            image[h + 20..h + 24].copy_from_slice(&(data_at as u32).to_le_bytes());
            image.resize(data_at + padded as usize, 0);
            image[data_at..data_at + content.len()].copy_from_slice(content);
            data_at += padded as usize;
        }
        image
    }

    fn section(image: Vec<u8>, name: &str) -> Result<Option<Vec<u8>>, PeError> {
        read_section(&mut Cursor::new(image), name)
    }

    #[test]
    fn reads_the_named_section_and_only_it() {
        let image = tiny_pe(&[(".cmdline", b"ro quiet"), (".osrel", b"ID=x\n")]);
        assert_eq!(
            section(image.clone(), ".osrel").ok().flatten(),
            Some(b"ID=x\n".to_vec())
        );
        assert_eq!(
            section(image.clone(), ".cmdline").ok().flatten(),
            Some(b"ro quiet".to_vec())
        );
        assert!(matches!(section(image, ".linux"), Ok(None)));
    }

    #[test]
    fn refuses_what_is_not_a_pe_image() {
        assert!(matches!(
            section(Vec::new(), ".osrel"),
            Err(PeError::NotPe(_))
        ));
        assert!(matches!(
            section(b"#!/bin/sh\necho hello\n".to_vec(), ".osrel"),
            Err(PeError::NotPe(_))
        ));
        let mut image = tiny_pe(&[(".osrel", b"ID=x\n")]);
        image[0x40] = b'X';
        assert!(matches!(section(image, ".osrel"), Err(PeError::NotPe(_))));
    }

    #[test]
    fn malformed_offsets_and_sizes_are_errors_not_panics() {
        let good = tiny_pe(&[(".osrel", b"ID=x\n")]);
        // e_lfanew far beyond the end of the file.
        let mut image = good.clone();
        image[0x3C..0x40].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(section(image, ".osrel").is_err());
        // Too many sections.
        let mut image = good.clone();
        image[0x46..0x48].copy_from_slice(&1000u16.to_le_bytes());
        assert!(matches!(
            section(image, ".osrel"),
            Err(PeError::Malformed(_))
        ));
        // Section data beyond the end of the file.
        let mut image = good.clone();
        let header = 0x40 + 24 + 16;
        image[header + 20..header + 24].copy_from_slice(&0xFFFF_FF00u32.to_le_bytes());
        assert!(matches!(
            section(image, ".osrel"),
            Err(PeError::Malformed(_))
        ));
        // A section far larger than an os-release file.
        let mut image = good.clone();
        image[header + 8..header + 12].copy_from_slice(&0u32.to_le_bytes());
        image[header + 16..header + 20].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(matches!(
            section(image, ".osrel"),
            Err(PeError::SectionTooLarge { .. })
        ));
        // Truncated in the section table.
        assert!(section(good[..0x40 + 30].to_vec(), ".osrel").is_err());
    }
}
