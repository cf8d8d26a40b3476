//! The key files RAUC speaks (GLib key-file syntax): the signed bundle manifest, the system's
//! `system.conf`, and `/etc/os-release` (shell-style `KEY=value`), read into typed values.
//!
//! It owns parsing only: whether a value is acceptable is decided in `verify.rs`. It never
//! guesses: a duplicated key, a line that is neither a group, a key nor a comment, or a missing
//! required key is an error naming the line or key.
//!
//! Limits: GLib's locale suffixes (`key[de]=`) and list values are not interpreted (RAUC's
//! manifest and system.conf keys read here use neither); value escapes `\s \n \t \r \\` are.

use std::collections::BTreeMap;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum KeyFileError {
    #[error("not UTF-8 text")]
    NotUtf8,
    #[error("line {line}: {text:?} is neither a [group], a key=value nor a comment")]
    BadLine { line: usize, text: String },
    #[error("line {line}: group [{group}] appears twice")]
    DuplicateGroup { line: usize, group: String },
    #[error("line {line}: key {key:?} outside any [group]")]
    KeyOutsideGroup { line: usize, key: String },
    #[error("line {line}: [{group}] {key} is set twice")]
    DuplicateKey {
        line: usize,
        group: String,
        key: String,
    },
    #[error("[{group}] {key} is missing")]
    Missing { group: String, key: String },
    #[error("[{group}] {key} = {value:?}: {why}")]
    BadValue {
        group: String,
        key: String,
        value: String,
        why: &'static str,
    },
}

/// A parsed key file: group → key → value, in file order of groups.
#[derive(Debug, Default, Clone)]
pub struct KeyFile {
    groups: Vec<(String, BTreeMap<String, String>)>,
}

impl KeyFile {
    pub fn parse(text: &str) -> Result<KeyFile, KeyFileError> {
        let mut file = KeyFile::default();
        for (index, raw) in text.lines().enumerate() {
            let line = index + 1;
            let trimmed = raw.trim_start();
            if trimmed.is_empty() || trimmed.starts_with('#') {
                continue;
            }
            if let Some(name) = trimmed
                .trim_end()
                .strip_prefix('[')
                .and_then(|r| r.strip_suffix(']'))
            {
                if file.groups.iter().any(|(group, _)| group == name) {
                    return Err(KeyFileError::DuplicateGroup {
                        line,
                        group: name.to_string(),
                    });
                }
                file.groups.push((name.to_string(), BTreeMap::new()));
                continue;
            }
            let Some((key, value)) = trimmed.split_once('=') else {
                return Err(KeyFileError::BadLine {
                    line,
                    text: raw.to_string(),
                });
            };
            let key = key.trim_end().to_string();
            let Some((group, keys)) = file.groups.last_mut() else {
                return Err(KeyFileError::KeyOutsideGroup { line, key });
            };
            if keys.contains_key(&key) {
                return Err(KeyFileError::DuplicateKey {
                    line,
                    group: group.clone(),
                    key,
                });
            }
            keys.insert(key, unescape(value.trim_start()));
        }
        Ok(file)
    }

    /// The value of `key` in `group`.
    pub fn get(&self, group: &str, key: &str) -> Option<&str> {
        self.groups
            .iter()
            .find(|(name, _)| name == group)
            .and_then(|(_, keys)| keys.get(key))
            .map(String::as_str)
    }

    pub fn require(&self, group: &str, key: &str) -> Result<&str, KeyFileError> {
        self.get(group, key).ok_or_else(|| KeyFileError::Missing {
            group: group.into(),
            key: key.into(),
        })
    }

    /// Groups whose name starts with `prefix`, with the rest of the name.
    pub fn groups_with_prefix<'a>(
        &'a self,
        prefix: &'a str,
    ) -> impl Iterator<Item = (&'a str, &'a BTreeMap<String, String>)> + 'a {
        self.groups
            .iter()
            .filter_map(move |(name, keys)| name.strip_prefix(prefix).map(|rest| (rest, keys)))
    }
}

/// GLib key-file value escapes.
fn unescape(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    let mut chars = value.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('s') => out.push(' '),
            Some('n') => out.push('\n'),
            Some('t') => out.push('\t'),
            Some('r') => out.push('\r'),
            Some(other) => out.push(other),
            None => out.push('\\'),
        }
    }
    out
}

/// The bundle format a manifest declares.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum BundleFormat {
    Plain,
    Verity,
    Crypt,
}

/// The verity metadata of a signed manifest (`[bundle] verity-*`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerityMetadata {
    pub root_hash: [u8; 32],
    pub salt: [u8; 32],
    /// Size of the hash tree, in bytes.
    pub hash_tree_size: u64,
}

/// One `[image.<slot class>]` of the manifest.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ManifestImage {
    pub slot_class: String,
    pub filename: String,
    pub sha256: String,
    pub size: u64,
}

/// The parts of a signed RAUC manifest the appliance acts on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Manifest {
    pub compatible: String,
    pub version: Option<String>,
    pub format: BundleFormat,
    /// Present for the verity and crypt formats.
    pub verity: Option<VerityMetadata>,
    pub images: Vec<ManifestImage>,
}

impl Manifest {
    pub fn parse_bytes(bytes: &[u8]) -> Result<Manifest, KeyFileError> {
        Manifest::parse(std::str::from_utf8(bytes).map_err(|_| KeyFileError::NotUtf8)?)
    }

    pub fn parse(text: &str) -> Result<Manifest, KeyFileError> {
        let file = KeyFile::parse(text)?;
        let format = match file.get("bundle", "format").unwrap_or("plain") {
            "plain" => BundleFormat::Plain,
            "verity" => BundleFormat::Verity,
            "crypt" => BundleFormat::Crypt,
            other => return Err(bad("bundle", "format", other, "not plain, verity or crypt")),
        };
        let verity = match format {
            BundleFormat::Plain => None,
            BundleFormat::Verity | BundleFormat::Crypt => Some(VerityMetadata {
                root_hash: hex32(&file, "verity-hash")?,
                salt: hex32(&file, "verity-salt")?,
                hash_tree_size: number(&file, "bundle", "verity-size")?,
            }),
        };
        let images = file
            .groups_with_prefix("image.")
            .map(|(slot_class, keys)| {
                let group = format!("image.{slot_class}");
                let value = |key: &str| {
                    keys.get(key).cloned().ok_or_else(|| KeyFileError::Missing {
                        group: group.clone(),
                        key: key.into(),
                    })
                };
                Ok(ManifestImage {
                    slot_class: slot_class.to_string(),
                    filename: value("filename")?,
                    sha256: value("sha256")?,
                    size: number(&file, &group, "size")?,
                })
            })
            .collect::<Result<Vec<_>, KeyFileError>>()?;
        Ok(Manifest {
            compatible: file.require("update", "compatible")?.to_string(),
            version: file.get("update", "version").map(str::to_string),
            format,
            verity,
            images,
        })
    }
}

fn bad(group: &str, key: &str, value: &str, why: &'static str) -> KeyFileError {
    KeyFileError::BadValue {
        group: group.into(),
        key: key.into(),
        value: value.into(),
        why,
    }
}

fn hex32(file: &KeyFile, key: &str) -> Result<[u8; 32], KeyFileError> {
    let value = file.require("bundle", key)?;
    let mut out = [0u8; 32];
    hex::decode_to_slice(value, &mut out)
        .map_err(|_| bad("bundle", key, value, "not 64 hexadecimal digits"))?;
    Ok(out)
}

fn number(file: &KeyFile, group: &str, key: &str) -> Result<u64, KeyFileError> {
    let value = file.require(group, key)?;
    value
        .parse::<u64>()
        .map_err(|_| bad(group, key, value, "not a byte count"))
}

/// `[system] compatible=` of a RAUC `system.conf`.
pub fn system_compatible(system_conf: &str) -> Result<String, KeyFileError> {
    Ok(KeyFile::parse(system_conf)?
        .require("system", "compatible")?
        .to_string())
}

/// The value of `key` in an os-release file (shell-style assignments; quotes and backslash
/// escapes removed, as os-release(5) describes).
pub fn os_release_value(os_release: &str, key: &str) -> Option<String> {
    os_release.lines().rev().find_map(|line| {
        let value = line.trim().strip_prefix(key)?.strip_prefix('=')?;
        Some(shell_unquote(value))
    })
}

fn shell_unquote(value: &str) -> String {
    let value = value.trim();
    for quote in ['"', '\''] {
        if let Some(inner) = value
            .strip_prefix(quote)
            .and_then(|v| v.strip_suffix(quote))
        {
            return if quote == '"' {
                inner.replace("\\\"", "\"").replace("\\\\", "\\")
            } else {
                inner.to_string()
            };
        }
    }
    value.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    const SIGNED: &str = "[update]\ncompatible=bsfg-appliance-x86_64\nversion=0.2.0\n\n[bundle]\nformat=verity\nverity-hash=b65c29038749bca09e75bc7505ca729abf7d3806e1a5e1599f2208e672aeb9c4\nverity-salt=a3255186248a1a83a01c65dd1b7cdb135ab3ddfd13bc2fc0720d17cb13f18427\nverity-size=4096\n\n[image.rootfs]\nsha256=53563da34ca1569d7cee2766a8354e79ba03f5b849c1226a930aa99196a30a83\nsize=20000\nfilename=rootfs.img\n";

    #[test]
    fn a_signed_manifest_as_rauc_writes_it() {
        let manifest = Manifest::parse(SIGNED).expect("manifest");
        assert_eq!(manifest.compatible, "bsfg-appliance-x86_64");
        assert_eq!(manifest.version.as_deref(), Some("0.2.0"));
        assert_eq!(manifest.format, BundleFormat::Verity);
        let verity = manifest.verity.expect("verity");
        assert_eq!(verity.hash_tree_size, 4096);
        assert_eq!(verity.root_hash[0], 0xb6);
        assert_eq!(manifest.images.len(), 1);
        assert_eq!(manifest.images[0].slot_class, "rootfs");
        assert_eq!(manifest.images[0].size, 20000);
    }

    #[test]
    fn bad_manifests_name_the_key() {
        let short_hash = SIGNED.replace("verity-hash=b65c", "verity-hash=");
        assert!(matches!(
            Manifest::parse(&short_hash),
            Err(KeyFileError::BadValue { key, .. }) if key == "verity-hash"
        ));
        let twice = format!("{SIGNED}\n[update]\n");
        assert!(matches!(
            Manifest::parse(&twice),
            Err(KeyFileError::DuplicateGroup { group, .. }) if group == "update"
        ));
        let dup = SIGNED.replace("version=0.2.0", "version=0.2.0\nversion=9.9.9");
        assert!(matches!(
            Manifest::parse(&dup),
            Err(KeyFileError::DuplicateKey { key, .. }) if key == "version"
        ));
        assert!(matches!(
            Manifest::parse("compatible=x\n"),
            Err(KeyFileError::KeyOutsideGroup { line: 1, .. })
        ));
        assert!(matches!(
            Manifest::parse("[update]\nversion=1\n"),
            Err(KeyFileError::Missing { key, .. }) if key == "compatible"
        ));
        assert!(matches!(
            Manifest::parse("[update]\nnonsense\n"),
            Err(KeyFileError::BadLine { line: 2, .. })
        ));
    }

    #[test]
    fn system_conf_and_os_release() {
        let conf = "[system]\ncompatible = bsfg\\sappliance\nbootloader=custom\n[keyring]\npath=/etc/rauc/keyring.pem\n";
        assert_eq!(system_compatible(conf).as_deref(), Ok("bsfg appliance"));
        assert!(system_compatible("[system]\nbootloader=noop\n").is_err());
        let os = "NAME=\"Debian GNU/Linux\"\nIMAGE_VERSION=\"0.1.0\"\nIMAGE_ID=bsfg\n";
        assert_eq!(
            os_release_value(os, "IMAGE_VERSION").as_deref(),
            Some("0.1.0")
        );
        assert_eq!(os_release_value(os, "IMAGE_ID").as_deref(), Some("bsfg"));
        assert_eq!(
            os_release_value("IMAGE_VERSION='1.2'\n", "IMAGE_VERSION").as_deref(),
            Some("1.2")
        );
        assert_eq!(os_release_value(os, "VERSION"), None);
    }
}
