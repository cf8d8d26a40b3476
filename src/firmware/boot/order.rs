//! systemd-boot's view of our type-2 entries: the file name `bsfg-<slot>[+LEFT[-DONE]].efi` (slot
//! and boot counter), the `.osrel` fields it sorts by, and its order (systemd v252): entries with
//! no tries left last; then, when both have a sort key (`IMAGE_ID`, else `ID`), by sort key, then
//! by version descending (`IMAGE_VERSION`, else `VERSION`, `VERSION_ID`, `BUILD_ID`; compared
//! like systemd's `strverscmp_improved`); then by entry id (the lower-cased file name)
//! descending. systemd-boot boots the first entry.
//!
//! Pure functions only: no file is read here.

use std::cmp::Ordering;

/// A boot counter in a file name: `+LEFT` or `+LEFT-DONE`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Counter {
    pub left: u32,
    pub done: Option<u32>,
}

/// The parts of `bsfg-<slot>[+LEFT[-DONE]].efi`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EntryName {
    pub slot: String,
    pub counter: Option<Counter>,
}

/// A slot name: what RAUC passes as the bootname (`a`, `b`), lower-case letters and digits.
pub fn valid_slot(slot: &str) -> bool {
    !slot.is_empty()
        && slot.len() <= 16
        && slot
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
}

/// Parses one of our UKI file names; `None` for any other file.
pub fn parse_entry_name(file_name: &str) -> Option<EntryName> {
    let stem = file_name.strip_prefix("bsfg-")?.strip_suffix(".efi")?;
    let (slot, counter) = match stem.split_once('+') {
        None => (stem, None),
        Some((slot, counter)) => (slot, Some(parse_counter(counter)?)),
    };
    valid_slot(slot).then(|| EntryName {
        slot: slot.to_string(),
        counter,
    })
}

fn parse_number(digits: &str) -> Option<u32> {
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

fn parse_counter(text: &str) -> Option<Counter> {
    match text.split_once('-') {
        None => Some(Counter {
            left: parse_number(text)?,
            done: None,
        }),
        Some((left, done)) => Some(Counter {
            left: parse_number(left)?,
            done: Some(parse_number(done)?),
        }),
    }
}

/// The file name for `slot` with `counter`.
pub fn entry_file_name(slot: &str, counter: Option<Counter>) -> String {
    match counter {
        None => format!("bsfg-{slot}.efi"),
        Some(Counter { left, done: None }) => format!("bsfg-{slot}+{left}.efi"),
        Some(Counter {
            left,
            done: Some(done),
        }) => format!("bsfg-{slot}+{left}-{done}.efi"),
    }
}

/// What systemd-boot takes from a UKI's `.osrel`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OsRelease {
    pub sort_key: Option<String>,
    pub version: Option<String>,
}

/// Parses os-release text (`KEY=value`, values optionally quoted, `#` comments).
pub fn parse_os_release(text: &str) -> OsRelease {
    let mut fields = std::collections::HashMap::new();
    for line in text.lines() {
        let line = line.trim();
        if line.starts_with('#') {
            continue;
        }
        let Some((key, value)) = line.split_once('=') else {
            continue;
        };
        let value = value.trim();
        let unquoted = ['"', '\'']
            .iter()
            .find_map(|q| value.strip_prefix(*q).and_then(|v| v.strip_suffix(*q)))
            .unwrap_or(value);
        if !unquoted.is_empty() {
            fields.insert(key.trim().to_string(), unquoted.to_string());
        }
    }
    let first = |keys: &[&str]| keys.iter().find_map(|k| fields.get(*k).cloned());
    OsRelease {
        sort_key: first(&["IMAGE_ID", "ID"]),
        version: first(&["IMAGE_VERSION", "VERSION", "VERSION_ID", "BUILD_ID"]),
    }
}

fn is_version_char(c: u8) -> bool {
    c.is_ascii_alphanumeric() || b"~-^.".contains(&c)
}

/// Compares two version strings the way systemd's `strverscmp_improved` does: numeric segments
/// by value, `~` (pre-release) older, `-` separates release, `^` (patched) newer, `.` segments,
/// more segments newer.
pub fn compare_versions(a: &str, b: &str) -> Ordering {
    let (mut a, mut b) = (a.as_bytes(), b.as_bytes());
    if a.is_empty() || b.is_empty() {
        return a.cmp(b);
    }
    loop {
        while a.first().is_some_and(|&c| !is_version_char(c)) {
            a = &a[1..];
        }
        while b.first().is_some_and(|&c| !is_version_char(c)) {
            b = &b[1..];
        }
        // '~' marks a pre-release: older than anything else.
        if a.first() == Some(&b'~') || b.first() == Some(&b'~') {
            let order = (a.first() != Some(&b'~')).cmp(&(b.first() != Some(&b'~')));
            if order.is_ne() {
                return order;
            }
            (a, b) = (&a[1..], &b[1..]);
        }
        if a.is_empty() || b.is_empty() {
            return a.cmp(b);
        }
        for (sep, newer) in [(b'-', false), (b'^', true), (b'.', false)] {
            if a[0] == sep || b[0] == sep {
                let order = (a[0] != sep).cmp(&(b[0] != sep));
                if order.is_ne() {
                    return if newer { order.reverse() } else { order };
                }
                (a, b) = (&a[1..], &b[1..]);
                if a.is_empty() || b.is_empty() {
                    return a.cmp(b);
                }
            }
        }
        let order;
        (order, a, b) = compare_segment(a, b);
        if order.is_ne() {
            return order;
        }
    }
}

/// Compares the leading segment (digits or letters) of `a` and `b`; returns the order and the
/// rests after the segments.
fn compare_segment<'a, 'b>(a: &'a [u8], b: &'b [u8]) -> (Ordering, &'a [u8], &'b [u8]) {
    let run = |s: &[u8], f: fn(&u8) -> bool| s.iter().take_while(|c| f(c)).count();
    if a[0].is_ascii_digit() || b[0].is_ascii_digit() {
        let (na, nb) = (run(a, u8::is_ascii_digit), run(b, u8::is_ascii_digit));
        // A numeric segment is newer than a non-numeric one.
        let order = (na != 0).cmp(&(nb != 0));
        if order.is_ne() {
            return (order, a, b);
        }
        // Leading zeros do not count (00123 = 123); then the longer number is the larger.
        let (va, vb) = (strip_zeros(&a[..na]), strip_zeros(&b[..nb]));
        let order = va.len().cmp(&vb.len()).then_with(|| va.cmp(vb));
        (order, &a[na..], &b[nb..])
    } else {
        let (la, lb) = (
            run(a, u8::is_ascii_alphabetic),
            run(b, u8::is_ascii_alphabetic),
        );
        let common = la.min(lb);
        let order = a[..common].cmp(&b[..common]).then(la.cmp(&lb));
        (order, &a[la..], &b[lb..])
    }
}

fn strip_zeros(digits: &[u8]) -> &[u8] {
    let zeros = digits.iter().take_while(|&&c| c == b'0').count();
    &digits[zeros..]
}

/// One type-2 entry as systemd-boot sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub file_name: String,
    pub name: EntryName,
    pub os: OsRelease,
}

impl Entry {
    /// True when systemd-boot has counted this entry down to zero tries.
    pub fn exhausted(&self) -> bool {
        self.name.counter.is_some_and(|c| c.left == 0)
    }
}

/// systemd-boot's order: `Less` boots first.
pub fn boot_order(a: &Entry, b: &Entry) -> Ordering {
    a.exhausted()
        .cmp(&b.exhausted())
        .then_with(|| a.os.sort_key.is_none().cmp(&b.os.sort_key.is_none()))
        .then_with(|| match (&a.os.sort_key, &b.os.sort_key) {
            (Some(ka), Some(kb)) => ka.cmp(kb).then_with(|| {
                let (va, vb) = (a.os.version.as_deref(), b.os.version.as_deref());
                compare_versions(vb.unwrap_or(""), va.unwrap_or(""))
            }),
            _ => Ordering::Equal,
        })
        .then_with(|| compare_versions(&b.file_name.to_lowercase(), &a.file_name.to_lowercase()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(file_name: &str, version: &str) -> Entry {
        Entry {
            file_name: file_name.to_string(),
            name: parse_entry_name(file_name).expect("a test entry name"),
            os: OsRelease {
                sort_key: Some("bsfg-appliance".into()),
                version: Some(version.into()),
            },
        }
    }

    #[test]
    fn entry_names_round_trip_and_strangers_are_ignored() {
        for name in [
            "bsfg-a.efi",
            "bsfg-b+3.efi",
            "bsfg-b+2-1.efi",
            "bsfg-a+0-3.efi",
        ] {
            let parsed = parse_entry_name(name).expect(name);
            assert_eq!(entry_file_name(&parsed.slot, parsed.counter), name);
        }
        for name in [
            "bsfg-.efi",
            "bsfg-a+.efi",
            "bsfg-a+x.efi",
            "bsfg-a+1-.efi",
            "bsfg-A.efi",
            "bsfg-a.efi.tmp",
            ".bsfg-a+3.efi.tmp",
            "other.efi",
            "bsfg-a+-1.efi",
        ] {
            assert_eq!(parse_entry_name(name), None, "{name}");
        }
    }

    #[test]
    fn os_release_fields_and_fallbacks() {
        let os = parse_os_release(
            "# comment\nNAME=\"BSFG\"\nID=bsfg-appliance\nVERSION_ID=0.1.0\nIMAGE_ID='img'\nIMAGE_VERSION=\"0.2.0\"\n",
        );
        assert_eq!(os.sort_key.as_deref(), Some("img"));
        assert_eq!(os.version.as_deref(), Some("0.2.0"));
        let os = parse_os_release("ID=debian\nVERSION_ID=12\n");
        assert_eq!(os.sort_key.as_deref(), Some("debian"));
        assert_eq!(os.version.as_deref(), Some("12"));
        assert_eq!(
            parse_os_release("garbage\n\0\u{fffd}"),
            OsRelease::default()
        );
    }

    #[test]
    fn versions_compare_like_systemd() {
        use Ordering::*;
        for (a, b, want) in [
            ("0.1.0", "0.2.0", Less),
            ("0.10.0", "0.9.0", Greater),
            ("1.0", "1.0.1", Less),
            ("1.0~rc1", "1.0", Less),
            ("1.0^1", "1.0", Greater),
            ("1.0-2", "1.0.1", Less),
            ("001", "1", Equal),
            ("1a", "1b", Less),
            ("abc", "abcd", Less),
            ("2", "a", Greater),
            ("", "1", Less),
            ("0.2.0", "0.2.0", Equal),
        ] {
            assert_eq!(compare_versions(a, b), want, "{a} vs {b}");
            assert_eq!(compare_versions(b, a), want.reverse(), "{b} vs {a}");
        }
    }

    #[test]
    fn newer_version_first_exhausted_last_then_id() {
        let mut entries = [entry("bsfg-a.efi", "0.1.0"), entry("bsfg-b+3.efi", "0.2.0")];
        entries.sort_by(boot_order);
        assert_eq!(entries[0].file_name, "bsfg-b+3.efi");
        // After three failed tries the new entry sorts last, the blessed one boots.
        let mut entries = [
            entry("bsfg-b+0-3.efi", "0.2.0"),
            entry("bsfg-a.efi", "0.1.0"),
        ];
        entries.sort_by(boot_order);
        assert_eq!(entries[0].file_name, "bsfg-a.efi");
        // Same version: the id decides, descending.
        let mut entries = [entry("bsfg-a.efi", "0.1.0"), entry("bsfg-b.efi", "0.1.0")];
        entries.sort_by(boot_order);
        assert_eq!(entries[0].file_name, "bsfg-b.efi");
        // An entry without a sort key goes after those with one.
        let mut bare = entry("bsfg-c.efi", "9.9");
        bare.os.sort_key = None;
        let mut entries = [bare, entry("bsfg-a.efi", "0.1.0")];
        entries.sort_by(boot_order);
        assert_eq!(entries[0].file_name, "bsfg-a.efi");
    }
}
