//! Durable means durable (SPEC §3, §6): the rules that keep a confirmed or safety-critical fact
//! from living only in RAM or expiring by age.
//!
//! - A `safety_critical` category never evicts: its `max_age` defaults to `0s` (no age limit) and
//!   any other value is refused; its storage must be `file`.
//! - A pull confirms facts to its peer once they are stored here, after which the peer may evict
//!   them: the category a pull writes into must be `file` storage.
//!
//! Limits: the rules read the configuration only; they cannot see how nats-server itself is set
//! up (its `sync_interval`, or a `store_dir` on tmpfs).

use super::{
    CategoryPolicy, PullSpec, file::CategorySection, file::default_max_age, validate::Problems,
};
use crate::fact::Category;
use std::{collections::BTreeMap, time::Duration};

/// The category's `max_age`: `0s` (never) for a safety_critical category when the file is
/// silent, `3650d` otherwise; a non-zero value on a safety_critical category is a problem.
pub(super) fn max_age(p: &mut Problems, category: Category, section: &CategorySection) -> Duration {
    let key = format!("categories.{category}.max_age");
    let Some(text) = &section.max_age else {
        return if section.safety_critical {
            Duration::ZERO
        } else {
            p.duration(&key, &default_max_age())
        };
    };
    let max_age = p.duration(&key, text);
    if section.safety_critical && !max_age.is_zero() {
        p.add(
            key,
            text,
            "a safety_critical category never evicts, so it cannot expire facts by age: \
             set max_age = \"0s\" or leave it out",
        );
    }
    max_age
}

/// A safety_critical category must be kept on disk.
pub(super) fn check_storage(p: &mut Problems, category: Category, section: &CategorySection) {
    if section.safety_critical && section.storage == "memory" {
        p.add(
            format!("categories.{category}.storage"),
            &section.storage,
            "a safety_critical category must survive a restart: use storage = \"file\"",
        );
    }
}

/// The category each pull writes into must be on disk: the pull confirms to its peer what it
/// stored here, and the peer may then evict it.
pub(super) fn check_pull_categories(
    p: &mut Problems,
    categories: &BTreeMap<Category, CategoryPolicy>,
    pulls: &[PullSpec],
) {
    for category in Category::ALL {
        if !categories.get(&category).is_some_and(|c| c.memory_storage) {
            continue;
        }
        let writers: Vec<String> = pulls
            .iter()
            .filter(|pull| pull.category == category)
            .map(|pull| format!("{:?}", pull.name))
            .collect();
        if writers.is_empty() {
            continue;
        }
        p.add(
            format!("categories.{category}.storage"),
            "memory",
            format!(
                "pull {} writes into this category and confirms its facts to the peer, which may \
                 then evict them: a confirmed fact must survive a restart, use storage = \"file\"",
                writers.join(", ")
            ),
        );
    }
}

#[cfg(test)]
mod tests {
    use crate::config::{Config, ConfigError};
    use crate::fact::Category;
    use std::{path::Path, time::Duration};

    const HEAD: &str = r#"
zone = "idmz"
[listen]
address = "127.0.0.1:9443"
[tls]
certificate = "node.pem"
private_key = "node.key"
client_ca = "ca.pem"
"#;

    const PULL: &str = r#"
[[pulls]]
name = "from-plant"
peer_url = "https://127.0.0.1:9444"
peer_identity = "plant-a-bsfg"
consumer = "to-idmz"
category = "operational"
"#;

    fn parse(extra: &str) -> Result<Config, ConfigError> {
        Config::parse(Path::new("bsfg.toml"), &format!("{HEAD}{extra}"))
    }

    fn problems(extra: &str) -> Vec<String> {
        match parse(extra) {
            Ok(_) => Vec::new(),
            Err(e) => e
                .problems
                .iter()
                .map(|p| format!("{} = {}", p.key, p.value))
                .collect(),
        }
    }

    #[test]
    fn a_safety_critical_category_never_expires_by_default() {
        let config =
            parse("[categories.audit]\nsafety_critical = true\nmax_bytes = 1000\n").expect("valid");
        assert_eq!(config.category(Category::Audit).max_age, Duration::ZERO);
        assert_eq!(
            config.category(Category::Operational).max_age,
            Duration::from_secs(3650 * 86400)
        );
        let config = parse(
            "[categories.audit]\nsafety_critical = true\nmax_bytes = 1000\nmax_age = \"0s\"\n",
        )
        .expect("an explicit 0s is fine");
        assert_eq!(config.category(Category::Audit).max_age, Duration::ZERO);
    }

    #[test]
    fn a_safety_critical_category_with_an_age_limit_or_in_memory_is_refused() {
        assert_eq!(
            problems(
                "[categories.audit]\nsafety_critical = true\nmax_bytes = 1000\nmax_age = \"30d\"\nstorage = \"memory\"\n"
            ),
            vec![
                "categories.audit.storage = \"memory\"",
                "categories.audit.max_age = \"30d\"",
            ]
        );
    }

    #[test]
    fn a_category_a_pull_writes_into_must_be_on_disk() {
        assert_eq!(
            problems(&format!(
                "[categories.operational]\nstorage = \"memory\"\n{PULL}"
            )),
            vec!["categories.operational.storage = \"memory\""]
        );
        // Memory storage where no pull writes is the operator's choice.
        assert!(
            problems(&format!(
                "[categories.telemetry]\nstorage = \"memory\"\n{PULL}"
            ))
            .is_empty()
        );
        assert!(problems("[categories.operational]\nstorage = \"memory\"\n").is_empty());
    }
}
