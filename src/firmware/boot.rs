//! The boot back end RAUC drives (`bootloader=custom`: `bsfg boot-backend get-primary`, `set-primary
//! SLOT`, `get-state SLOT`, `set-state SLOT good|bad`) over systemd-boot's type-2 entries
//! `EFI/Linux/bsfg-<slot>[+LEFT[-DONE]].efi` on the EFI system partition, plus `install-uki`
//! for the bundle's install hook.
//!
//! It owns nothing but file names: the boot order is systemd-boot's own (`order`: no tries left
//! last, then newest `IMAGE_VERSION` first), the counting is systemd-boot's (it renames `+3` to
//! `+2-1` when it starts an entry) and the blessing is systemd-bless-boot's (it drops the counter
//! after a good boot). So a new slot installed as `+3` with a higher version boots first; after
//! three failed tries it sorts last and the old, blessed slot boots by itself — no state of ours
//! has to survive a failed boot. It never writes anything but renames in `EFI/Linux/` and the one
//! UKI `install-uki` is given (written to a temporary name, synced, renamed, directory synced).
//!
//! Limits: it trusts the ESP's contents (Secure Boot, not this module, decides what may boot);
//! files in `EFI/Linux/` that are not `bsfg-*.efi` are ignored, although systemd-boot would list
//! them too.

mod order;
pub mod pe;

use order::{Counter, Entry, EntryName, OsRelease, boot_order, entry_file_name};
use std::{
    fs::{self, File},
    io::Write,
    path::{Path, PathBuf},
};

/// The tries a newly installed UKI gets (`bsfg-<slot>+3.efi`).
pub const NEW_SLOT_TRIES: u32 = 3;

#[derive(Debug, thiserror::Error)]
pub enum BootError {
    #[error("invalid slot name {0:?} (lower-case letters and digits, like RAUC's bootname a or b)")]
    InvalidSlot(String),
    #[error("no bootable bsfg-*.efi entry in {0}")]
    NoEntries(PathBuf),
    #[error("slot {slot} has no bootable UKI in {dir}")]
    NoUki { slot: String, dir: PathBuf },
    #[error("slot {slot} has {count} UKI files in {dir} ({files}); expected one")]
    Ambiguous {
        slot: String,
        count: usize,
        dir: PathBuf,
        files: String,
    },
    #[error("{file}: not a bootable UKI: {why}")]
    NotAUki { file: PathBuf, why: String },
    #[error("slot {slot} is still not first after marking the others bad (first: {first})")]
    NotPrimary { slot: String, first: String },
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> BootError + '_ {
    move |source| BootError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// The state RAUC asks about and sets: good (bootable) or bad (tried out, or missing).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SlotState {
    Good,
    Bad,
}

impl std::fmt::Display for SlotState {
    /// `good` or `bad`: the words of RAUC's custom back-end protocol.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            SlotState::Good => "good",
            SlotState::Bad => "bad",
        })
    }
}

/// One slot's UKI as the firmware status shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SlotView {
    pub name: String,
    pub version: String,
    /// `good` (blessed), `trial` (boot-counted, tries left) or `bad` (no tries left).
    pub state: &'static str,
    pub tries_left: u32,
    /// The slot systemd-boot boots next.
    pub primary: bool,
}

/// systemd-boot's entries on one ESP.
pub struct BootEntries {
    dir: PathBuf,
}

impl BootEntries {
    /// The entries in `<esp>/EFI/Linux`.
    pub fn new(esp: &Path) -> Self {
        Self {
            dir: esp.join("EFI").join("Linux"),
        }
    }

    /// Every `bsfg-*.efi` file, whether or not it is a bootable UKI.
    fn files(&self) -> Result<Vec<(String, EntryName)>, BootError> {
        let mut files = Vec::new();
        for item in fs::read_dir(&self.dir).map_err(io(&self.dir))? {
            let item = item.map_err(io(&self.dir))?;
            let Some(file_name) = item.file_name().to_str().map(str::to_string) else {
                continue;
            };
            if let Some(name) = order::parse_entry_name(&file_name) {
                files.push((file_name, name));
            }
        }
        files.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(files)
    }

    /// The entries systemd-boot would list, in the order it would boot them. A file whose
    /// `.osrel` cannot be read is not an entry (systemd-boot skips it too).
    fn ordered(&self) -> Result<Vec<Entry>, BootError> {
        let mut entries = Vec::new();
        for (file_name, name) in self.files()? {
            if let Ok(os) = read_os_release(&self.dir.join(&file_name)) {
                entries.push(Entry {
                    file_name,
                    name,
                    os,
                });
            }
        }
        entries.sort_by(boot_order);
        Ok(entries)
    }

    /// The one file of `slot`, if any; an error when there are several.
    fn slot_file(&self, slot: &str) -> Result<Option<(String, EntryName)>, BootError> {
        let mut files: Vec<_> = self
            .files()?
            .into_iter()
            .filter(|(_, n)| n.slot == slot)
            .collect();
        if files.len() > 1 {
            return Err(BootError::Ambiguous {
                slot: slot.to_string(),
                count: files.len(),
                dir: self.dir.clone(),
                files: files
                    .iter()
                    .map(|(f, _)| f.as_str())
                    .collect::<Vec<_>>()
                    .join(", "),
            });
        }
        Ok(files.pop())
    }

    fn rename(&self, from: &str, to: &str) -> Result<(), BootError> {
        if from == to {
            return Ok(());
        }
        let target = self.dir.join(to);
        fs::rename(self.dir.join(from), &target).map_err(io(&target))?;
        sync_dir(&self.dir)
    }

    /// `get-primary`: the slot systemd-boot will boot next.
    pub fn primary(&self) -> Result<String, BootError> {
        let entries = self.ordered()?;
        let first = entries
            .first()
            .ok_or_else(|| BootError::NoEntries(self.dir.clone()))?;
        log(&format!(
            "get-primary: {} (order: {})",
            first.name.slot,
            describe(&entries)
        ));
        Ok(first.name.slot.clone())
    }

    /// Every slot with a UKI, in boot order (the first is the primary), for the firmware status:
    /// version, `good` / `trial` (tries left) / `bad` (none left).
    pub fn slots(&self) -> Result<Vec<SlotView>, BootError> {
        let entries = self.ordered()?;
        Ok(entries
            .iter()
            .enumerate()
            .map(|(i, e)| SlotView {
                name: e.name.slot.clone(),
                version: e.os.version.clone().unwrap_or_default(),
                state: match e.name.counter {
                    None => "good",
                    Some(c) if c.left == 0 => "bad",
                    Some(_) => "trial",
                },
                tries_left: e.name.counter.map_or(0, |c| c.left),
                primary: i == 0,
            })
            .collect())
    }

    /// `get-state SLOT`: bad when the slot has no bootable UKI or no tries left.
    pub fn state(&self, slot: &str) -> Result<SlotState, BootError> {
        check_slot(slot)?;
        let entries = self.ordered()?;
        let state = match entries.iter().find(|e| e.name.slot == slot) {
            Some(e) if !e.exhausted() => SlotState::Good,
            _ => SlotState::Bad,
        };
        log(&format!(
            "get-state {slot}: {state} ({})",
            describe(&entries)
        ));
        Ok(state)
    }

    /// `set-state SLOT good|bad`: good drops the counter (what systemd-bless-boot does); bad
    /// sets no tries left (`+0-DONE`), so the entry boots only if nothing else can. Marking a
    /// slot without a UKI bad is a no-op (RAUC does it before the first install into a slot).
    pub fn set_state(&self, slot: &str, state: SlotState) -> Result<(), BootError> {
        check_slot(slot)?;
        let Some((file, name)) = self.slot_file(slot)? else {
            if state == SlotState::Bad {
                log(&format!("set-state {slot} bad: no UKI, nothing to mark"));
                return Ok(());
            }
            return Err(self.no_uki(slot));
        };
        let counter = match state {
            SlotState::Good => None,
            SlotState::Bad => Some(Counter {
                left: 0,
                done: Some(name.counter.and_then(|c| c.done).unwrap_or(0)),
            }),
        };
        let renamed = entry_file_name(slot, counter);
        self.rename(&file, &renamed)?;
        log(&format!("set-state {slot} {state}: {file} -> {renamed}"));
        Ok(())
    }

    /// `set-primary SLOT`: makes SLOT the entry systemd-boot boots next. A slot without tries
    /// left gets a fresh counter; entries that would still sort before it are marked bad.
    pub fn set_primary(&self, slot: &str) -> Result<(), BootError> {
        check_slot(slot)?;
        let mut entries = self.ordered()?;
        let Some(target) = entries.iter().find(|e| e.name.slot == slot).cloned() else {
            return Err(self.no_uki(slot));
        };
        let mut changes = Vec::new();
        if target.exhausted() {
            let fresh = entry_file_name(
                slot,
                Some(Counter {
                    left: NEW_SLOT_TRIES,
                    done: None,
                }),
            );
            self.rename(&target.file_name, &fresh)?;
            changes.push(format!("{} -> {fresh}", target.file_name));
            entries = self.ordered()?;
        }
        for entry in entries.iter().take_while(|e| e.name.slot != slot) {
            let bad = entry_file_name(
                &entry.name.slot,
                Some(Counter {
                    left: 0,
                    done: Some(entry.name.counter.and_then(|c| c.done).unwrap_or(0)),
                }),
            );
            self.rename(&entry.file_name, &bad)?;
            changes.push(format!("{} -> {bad}", entry.file_name));
        }
        let entries = self.ordered()?;
        match entries.first() {
            Some(first) if first.name.slot == slot => {}
            first => {
                return Err(BootError::NotPrimary {
                    slot: slot.to_string(),
                    first: first.map_or("none".into(), |e| e.file_name.clone()),
                });
            }
        }
        let changed = if changes.is_empty() {
            "already first".to_string()
        } else {
            changes.join(", ")
        };
        log(&format!(
            "set-primary {slot}: {changed} (order: {})",
            describe(&entries)
        ));
        Ok(())
    }

    /// `install-uki SLOT FILE`: FILE becomes `bsfg-SLOT+3.efi` (three tries), replacing the
    /// slot's other UKI files. Written atomically: a temporary file, fsync, rename, fsync of the
    /// directory. A FILE without an `.osrel` sort key and version is refused (systemd-boot would
    /// not boot it).
    pub fn install_uki(&self, slot: &str, file: &Path) -> Result<String, BootError> {
        check_slot(slot)?;
        let os = read_os_release(file)?;
        let version = os.version.unwrap_or_default();
        for (old, _) in self.files()?.iter().filter(|(_, n)| n.slot == slot) {
            let path = self.dir.join(old);
            fs::remove_file(&path).map_err(io(&path))?;
        }
        let name = entry_file_name(
            slot,
            Some(Counter {
                left: NEW_SLOT_TRIES,
                done: None,
            }),
        );
        let temp = self.dir.join(format!(".{name}.tmp"));
        let result = copy_synced(file, &temp)
            .and_then(|()| fs::rename(&temp, self.dir.join(&name)).map_err(io(&temp)))
            .and_then(|()| sync_dir(&self.dir));
        if result.is_err() {
            let _ = fs::remove_file(&temp);
        }
        result?;
        log(&format!(
            "install-uki {slot}: {} -> {name} (version {version})",
            file.display()
        ));
        Ok(name)
    }

    fn no_uki(&self, slot: &str) -> BootError {
        BootError::NoUki {
            slot: slot.to_string(),
            dir: self.dir.clone(),
        }
    }
}

fn check_slot(slot: &str) -> Result<(), BootError> {
    if order::valid_slot(slot) {
        Ok(())
    } else {
        Err(BootError::InvalidSlot(slot.to_string()))
    }
}

/// The `.osrel` of a UKI, with the fields systemd-boot needs to list it.
fn read_os_release(path: &Path) -> Result<OsRelease, BootError> {
    let not_a_uki = |why: String| BootError::NotAUki {
        file: path.to_path_buf(),
        why,
    };
    let mut file = File::open(path).map_err(io(path))?;
    let text = pe::read_section(&mut file, ".osrel")
        .map_err(|e| not_a_uki(e.to_string()))?
        .ok_or_else(|| not_a_uki("no .osrel section".into()))?;
    let text = String::from_utf8(text).map_err(|_| not_a_uki(".osrel is not UTF-8".into()))?;
    let os = order::parse_os_release(&text);
    if os.sort_key.is_none() || os.version.is_none() {
        return Err(not_a_uki(
            ".osrel names no IMAGE_ID/ID or no IMAGE_VERSION/VERSION_ID".into(),
        ));
    }
    Ok(os)
}

fn copy_synced(from: &Path, to: &Path) -> Result<(), BootError> {
    let mut source = File::open(from).map_err(io(from))?;
    let mut target = File::create(to).map_err(io(to))?;
    std::io::copy(&mut source, &mut target).map_err(io(to))?;
    target.flush().map_err(io(to))?;
    target.sync_all().map_err(io(to))
}

fn sync_dir(dir: &Path) -> Result<(), BootError> {
    File::open(dir).and_then(|d| d.sync_all()).map_err(io(dir))
}

fn describe(entries: &[Entry]) -> String {
    if entries.is_empty() {
        return "no entries".into();
    }
    entries
        .iter()
        .map(|e| format!("{} {}", e.file_name, e.os.version.as_deref().unwrap_or("?")))
        .collect::<Vec<_>>()
        .join(", ")
}

/// One line per operation on stderr (RAUC reads only stdout, and only from the get commands).
fn log(line: &str) {
    eprintln!("bsfg boot-backend: {line}");
}

#[cfg(test)]
mod tests;
