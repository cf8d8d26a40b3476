//! Firmware versions and their order, for the version policy: a bundle installs only when its
//! version is strictly greater than the running firmware's.
//!
//! A version is `RELEASE[-PRE][+BUILD]`, Semantic Versioning's rules with any number of release
//! components:
//! - `RELEASE` is one or more dot-separated decimal numbers (no sign, no leading zero, each fits
//!   in 64 bits), compared numerically left to right; missing components count as 0, so `1.2`
//!   equals `1.2.0`.
//! - `-PRE` marks a pre-release, lower than the same release without it (`1.3.0-rc.1 < 1.3.0`).
//!   Its dot-separated identifiers (`[0-9A-Za-z-]+`) compare left to right: numeric ones
//!   numerically, others in ASCII order, a numeric one below a non-numeric one; when all shared
//!   identifiers are equal, the shorter list is lower (`1.0-rc < 1.0-rc.1`).
//! - `+BUILD` (same identifier syntax) is build information, ignored by the order: `1.2.0+a`
//!   and `1.2.0+b` are equal, so neither replaces the other.
//!
//! Anything else (empty, a `v` prefix, `1..2`, `01.2`, spaces, over 128 bytes) is not a version
//! and is refused with the reason; it never panics.

use std::{cmp::Ordering, fmt};

/// Longest version string accepted.
const MAX_LEN: usize = 128;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("{text:?} is not a version (RELEASE[-PRE][+BUILD], e.g. 1.4.2 or 1.5.0-rc.1): {why}")]
pub struct VersionError {
    pub text: String,
    pub why: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Identifier {
    Numeric(u64),
    Text(String),
}

impl Ord for Identifier {
    fn cmp(&self, other: &Self) -> Ordering {
        match (self, other) {
            (Identifier::Numeric(a), Identifier::Numeric(b)) => a.cmp(b),
            (Identifier::Numeric(_), Identifier::Text(_)) => Ordering::Less,
            (Identifier::Text(_), Identifier::Numeric(_)) => Ordering::Greater,
            (Identifier::Text(a), Identifier::Text(b)) => a.cmp(b),
        }
    }
}

impl PartialOrd for Identifier {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

/// A parsed version; `Display` gives back the text it was parsed from.
#[derive(Debug, Clone)]
pub struct Version {
    text: String,
    release: Vec<u64>,
    pre: Vec<Identifier>,
}

impl Version {
    pub fn parse(text: &str) -> Result<Version, VersionError> {
        let fail = |why| VersionError {
            text: text.to_string(),
            why,
        };
        if text.is_empty() {
            return Err(fail("empty"));
        }
        if text.len() > MAX_LEN {
            return Err(fail("longer than 128 bytes"));
        }
        let (rest, build) = match text.split_once('+') {
            Some((rest, build)) => (rest, Some(build)),
            None => (text, None),
        };
        if let Some(build) = build {
            identifiers(build, false).map_err(fail)?;
        }
        let (release, pre) = match rest.split_once('-') {
            Some((release, pre)) => (release, identifiers(pre, true).map_err(fail)?),
            None => (rest, Vec::new()),
        };
        let release = release
            .split('.')
            .map(|part| match number(part) {
                Some(Ok(n)) => Ok(n),
                Some(Err(why)) => Err(fail(why)),
                None => Err(fail("a release component is not a decimal number")),
            })
            .collect::<Result<Vec<u64>, _>>()?;
        Ok(Version {
            text: text.to_string(),
            release,
            pre,
        })
    }
}

/// `Some(Ok(n))` for a decimal number, `Some(Err(..))` for a malformed one, `None` when `part`
/// is not made of digits.
fn number(part: &str) -> Option<Result<u64, &'static str>> {
    if part.is_empty() || !part.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    if part.len() > 1 && part.starts_with('0') {
        return Some(Err("a number has a leading zero"));
    }
    Some(part.parse::<u64>().map_err(|_| "a number exceeds 64 bits"))
}

/// Dot-separated `[0-9A-Za-z-]+` identifiers; numeric ones parsed when `numeric` is set.
fn identifiers(text: &str, numeric: bool) -> Result<Vec<Identifier>, &'static str> {
    text.split('.')
        .map(|id| {
            if id.is_empty() {
                return Err("an empty pre-release or build identifier");
            }
            if !id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-') {
                return Err(
                    "a pre-release or build identifier has a character outside [0-9A-Za-z-]",
                );
            }
            match (numeric, number(id)) {
                (true, Some(n)) => n.map(Identifier::Numeric),
                _ => Ok(Identifier::Text(id.to_string())),
            }
        })
        .collect()
}

impl Ord for Version {
    fn cmp(&self, other: &Self) -> Ordering {
        let width = self.release.len().max(other.release.len());
        let component = |v: &Version, i: usize| v.release.get(i).copied().unwrap_or(0);
        (0..width)
            .map(|i| component(self, i).cmp(&component(other, i)))
            .find(|o| o.is_ne())
            .unwrap_or_else(|| match (self.pre.is_empty(), other.pre.is_empty()) {
                (true, true) => Ordering::Equal,
                (true, false) => Ordering::Greater,
                (false, true) => Ordering::Less,
                (false, false) => self.pre.cmp(&other.pre),
            })
    }
}

impl PartialOrd for Version {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl PartialEq for Version {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}

impl Eq for Version {}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(text: &str) -> Version {
        Version::parse(text).unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn ascending_order() {
        let ascending = [
            "0.1.0",
            "0.1.1",
            "0.2.0-alpha",
            "0.2.0-alpha.1",
            "0.2.0-alpha.beta",
            "0.2.0-beta",
            "0.2.0-beta.2",
            "0.2.0-beta.11",
            "0.2.0-rc.1",
            "0.2.0",
            "0.10.0",
            "1.0",
            "1.0.1",
            "2024.8",
            "2024.10.0.1",
        ];
        for pair in ascending.windows(2) {
            assert!(v(pair[0]) < v(pair[1]), "{} < {}", pair[0], pair[1]);
            assert!(v(pair[1]) > v(pair[0]), "{} > {}", pair[1], pair[0]);
        }
    }

    #[test]
    fn equal_versions_are_not_greater() {
        for (a, b) in [
            ("1.2", "1.2.0"),
            ("1.2.0+build.5", "1.2.0+build.6"),
            ("1.2.0-rc.1+x", "1.2.0-rc.1"),
            ("0.1.0", "0.1.0"),
        ] {
            assert_eq!(v(a), v(b), "{a} == {b}");
            assert!(v(a) <= v(b), "{a} is not greater than {b}");
        }
        assert_eq!(v("1.2.0+build.5").to_string(), "1.2.0+build.5");
    }

    #[test]
    fn unparsable_versions_are_errors() {
        for (text, why) in [
            ("", "empty"),
            ("v1.2", "a release component is not a decimal number"),
            ("1..2", "a release component is not a decimal number"),
            ("1.2.", "a release component is not a decimal number"),
            ("01.2", "a number has a leading zero"),
            ("1.2-rc.01", "a number has a leading zero"),
            ("1.2-", "an empty pre-release or build identifier"),
            ("1.2+", "an empty pre-release or build identifier"),
            (
                "1.2-rc_1",
                "a pre-release or build identifier has a character outside [0-9A-Za-z-]",
            ),
            ("1.2 ", "a release component is not a decimal number"),
            ("-1", "a release component is not a decimal number"),
            ("18446744073709551616", "a number exceeds 64 bits"),
        ] {
            assert_eq!(
                Version::parse(text).err().map(|e| e.why),
                Some(why),
                "{text:?}"
            );
        }
        assert!(Version::parse(&"1.".repeat(100)).is_err());
    }
}
