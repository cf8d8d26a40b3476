//! The back end's commands against a temporary ESP holding tiny PE files with an `.osrel`.

use super::{BootEntries, BootError, SlotState, pe::tests::tiny_pe};
use std::{fs, path::Path};

struct Esp {
    _dir: tempfile::TempDir,
    entries: BootEntries,
    linux: std::path::PathBuf,
}

fn esp() -> Esp {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let linux = dir.path().join("EFI/Linux");
    fs::create_dir_all(&linux).expect("EFI/Linux");
    Esp {
        entries: BootEntries::new(dir.path()),
        linux,
        _dir: dir,
    }
}

fn uki(version: &str) -> Vec<u8> {
    let osrel = format!("ID=bsfg-appliance\nIMAGE_ID=bsfg-appliance\nIMAGE_VERSION={version}\n");
    tiny_pe(&[(".osrel", osrel.as_bytes()), (".cmdline", b"ro")])
}

impl Esp {
    fn put(&self, name: &str, version: &str) {
        fs::write(self.linux.join(name), uki(version)).expect("write a UKI");
    }
    fn names(&self) -> Vec<String> {
        let mut names: Vec<String> = fs::read_dir(&self.linux)
            .expect("read EFI/Linux")
            .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }
}

fn file_with(dir: &Path, bytes: &[u8]) -> std::path::PathBuf {
    let path = dir.join("new.efi");
    fs::write(&path, bytes).expect("write the new UKI");
    path
}

#[test]
fn primary_is_the_newest_until_its_tries_are_used_up() {
    let esp = esp();
    esp.put("bsfg-a.efi", "0.1.0");
    assert_eq!(esp.entries.primary().ok().as_deref(), Some("a"));
    esp.put("bsfg-b+3.efi", "0.2.0");
    assert_eq!(esp.entries.primary().ok().as_deref(), Some("b"));
    fs::rename(
        esp.linux.join("bsfg-b+3.efi"),
        esp.linux.join("bsfg-b+0-3.efi"),
    )
    .expect("count");
    assert_eq!(esp.entries.primary().ok().as_deref(), Some("a"));
    assert_eq!(esp.entries.state("b").ok(), Some(SlotState::Bad));
    assert_eq!(esp.entries.state("a").ok(), Some(SlotState::Good));
}

#[test]
fn no_entries_is_an_error_for_get_primary() {
    let esp = esp();
    assert!(matches!(
        esp.entries.primary(),
        Err(BootError::NoEntries(_))
    ));
    fs::write(esp.linux.join("bsfg-a.efi"), b"not a PE file").expect("write");
    assert!(matches!(
        esp.entries.primary(),
        Err(BootError::NoEntries(_))
    ));
    assert_eq!(esp.entries.state("a").ok(), Some(SlotState::Bad));
}

#[test]
fn state_of_a_missing_or_tried_out_slot_is_bad() {
    let esp = esp();
    esp.put("bsfg-a+2-1.efi", "0.1.0");
    assert_eq!(esp.entries.state("a").ok(), Some(SlotState::Good));
    assert_eq!(esp.entries.state("b").ok(), Some(SlotState::Bad));
    assert!(matches!(
        esp.entries.state("B"),
        Err(BootError::InvalidSlot(_))
    ));
    assert!(matches!(
        esp.entries.state("../a"),
        Err(BootError::InvalidSlot(_))
    ));
}

#[test]
fn set_state_renames_like_systemd_bless_boot() {
    let esp = esp();
    esp.put("bsfg-b+2-1.efi", "0.2.0");
    esp.entries.set_state("b", SlotState::Good).expect("good");
    assert_eq!(esp.names(), ["bsfg-b.efi"]);
    esp.entries.set_state("b", SlotState::Bad).expect("bad");
    assert_eq!(esp.names(), ["bsfg-b+0-0.efi"]);
    esp.entries
        .set_state("b", SlotState::Good)
        .expect("good again");
    assert_eq!(esp.names(), ["bsfg-b.efi"]);
    fs::rename(
        esp.linux.join("bsfg-b.efi"),
        esp.linux.join("bsfg-b+1-2.efi"),
    )
    .expect("count");
    esp.entries
        .set_state("b", SlotState::Bad)
        .expect("bad keeps done");
    assert_eq!(esp.names(), ["bsfg-b+0-2.efi"]);
    // Bad on a slot with no UKI: nothing to do (RAUC's first install into a slot).
    esp.entries.set_state("a", SlotState::Bad).expect("no-op");
    assert!(matches!(
        esp.entries.set_state("a", SlotState::Good),
        Err(BootError::NoUki { .. })
    ));
    // Two files for one slot: refused, nothing renamed.
    esp.put("bsfg-b+3.efi", "0.3.0");
    assert!(matches!(
        esp.entries.set_state("b", SlotState::Good),
        Err(BootError::Ambiguous { count: 2, .. })
    ));
    assert_eq!(esp.names(), ["bsfg-b+0-2.efi", "bsfg-b+3.efi"]);
}

#[test]
fn set_primary_marks_what_sorts_before_it_bad() {
    let esp = esp();
    esp.put("bsfg-a.efi", "0.1.0");
    esp.put("bsfg-b+3.efi", "0.2.0");
    esp.entries.set_primary("b").expect("b is already first");
    assert_eq!(esp.names(), ["bsfg-a.efi", "bsfg-b+3.efi"]);
    esp.entries.set_primary("a").expect("a before b");
    assert_eq!(esp.names(), ["bsfg-a.efi", "bsfg-b+0-0.efi"]);
    assert_eq!(esp.entries.primary().ok().as_deref(), Some("a"));
    // A tried-out slot made primary gets fresh tries (and, being newer, needs nothing else).
    esp.entries.set_primary("b").expect("b again");
    assert_eq!(esp.names(), ["bsfg-a.efi", "bsfg-b+3.efi"]);
    // An older slot made primary: the newer one is marked bad.
    esp.put("bsfg-c.efi", "0.0.9");
    esp.entries.set_primary("c").expect("c first");
    assert_eq!(
        esp.names(),
        ["bsfg-a+0-0.efi", "bsfg-b+0-0.efi", "bsfg-c.efi"]
    );
    assert!(matches!(
        esp.entries.set_primary("d"),
        Err(BootError::NoUki { .. })
    ));
}

#[test]
fn install_uki_replaces_the_slot_with_three_tries() {
    let esp = esp();
    let src = tempfile::tempdir().expect("tempdir");
    esp.put("bsfg-a.efi", "0.1.0");
    esp.put("bsfg-b+0-3.efi", "0.2.0");
    let new = file_with(src.path(), &uki("0.3.0"));
    let name = esp.entries.install_uki("b", &new).expect("install");
    assert_eq!(name, "bsfg-b+3.efi");
    assert_eq!(esp.names(), ["bsfg-a.efi", "bsfg-b+3.efi"]);
    assert_eq!(fs::read(esp.linux.join(&name)).ok(), Some(uki("0.3.0")));
    assert_eq!(esp.entries.primary().ok().as_deref(), Some("b"));
}

#[test]
fn install_uki_refuses_a_file_systemd_boot_would_not_boot() {
    let esp = esp();
    let src = tempfile::tempdir().expect("tempdir");
    esp.put("bsfg-b.efi", "0.1.0");
    for bytes in [
        b"plain text".to_vec(),
        tiny_pe(&[(".cmdline", b"ro")]),
        tiny_pe(&[(".osrel", b"NAME=x\n")]),
        tiny_pe(&[(".osrel", b"ID=x\n")]),
    ] {
        let new = file_with(src.path(), &bytes);
        assert!(matches!(
            esp.entries.install_uki("b", &new),
            Err(BootError::NotAUki { .. })
        ));
    }
    // Nothing of the slot was touched.
    assert_eq!(esp.names(), ["bsfg-b.efi"]);
    let missing = src.path().join("missing.efi");
    assert!(matches!(
        esp.entries.install_uki("b", &missing),
        Err(BootError::Io { .. })
    ));
    assert!(matches!(
        esp.entries.install_uki("b/../a", &missing),
        Err(BootError::InvalidSlot(_))
    ));
}

#[test]
fn slots_for_the_firmware_status_show_trial_tries_and_the_primary() {
    let esp = esp();
    esp.put("bsfg-a.efi", "0.1.0");
    esp.put("bsfg-b+2-1.efi", "0.2.0");
    let slots = esp.entries.slots().expect("slots");
    let seen: Vec<(&str, &str, &str, u32, bool)> = slots
        .iter()
        .map(|s| {
            (
                s.name.as_str(),
                s.version.as_str(),
                s.state,
                s.tries_left,
                s.primary,
            )
        })
        .collect();
    assert_eq!(
        seen,
        [
            ("b", "0.2.0", "trial", 2, true),
            ("a", "0.1.0", "good", 0, false)
        ]
    );
    fs::rename(
        esp.linux.join("bsfg-b+2-1.efi"),
        esp.linux.join("bsfg-b+0-3.efi"),
    )
    .expect("count");
    let slots = esp.entries.slots().expect("slots");
    assert_eq!((slots[0].name.as_str(), slots[0].primary), ("a", true));
    assert_eq!((slots[1].name.as_str(), slots[1].state), ("b", "bad"));
}
