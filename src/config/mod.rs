//! Configuration: `bsfg.toml` parsed in full, every problem reported with file, key and value,
//! then one failure (the linkerd2-proxy habit). The result, [`Config`], is what the rest of the
//! node reads; it never reads the file itself.
//!
//! Limits: TOML syntax errors and unknown keys stop parsing at the first one (the TOML parser
//! does not go on); the semantic checks in `validate.rs` report every problem at once.

mod durability;
mod duration;
mod file;
mod pull_origin;
mod validate;

pub use duration::parse_duration;
pub use file::ConfigFile;

use crate::fact::Category;
use std::{
    collections::BTreeMap,
    fmt,
    net::SocketAddr,
    path::{Path, PathBuf},
    time::Duration,
};

/// A validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    pub path: PathBuf,
    pub zone: String,
    pub listen: SocketAddr,
    pub tls: TlsFiles,
    pub nats: NatsSettings,
    pub limits: Limits,
    pub categories: BTreeMap<Category, CategoryPolicy>,
    pub consumers: BTreeMap<String, ConsumerSpec>,
    pub buckets: BTreeMap<String, BucketSpec>,
    pub access: AccessPolicy,
    pub pulls: Vec<PullSpec>,
    pub replication: ReplicationSettings,
    /// `None`: this node installs no firmware (not an appliance).
    pub firmware: Option<FirmwareSettings>,
}

/// Firmware installs through the operator's door.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FirmwareSettings {
    pub bucket: String,
    pub require_approval: bool,
}

/// One validated pull (SPEC §6).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PullSpec {
    pub name: String,
    pub peer_url: String,
    pub peer_identity: String,
    pub consumer: String,
    pub category: Category,
    /// Origin zones this peer may relay; `None` accepts any (the key was left out).
    pub accept_from_zones: Option<Vec<String>>,
    pub page_size: u32,
    pub idle_wait: Duration,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplicationSettings {
    pub confirm_delay: Duration,
    pub peer_timeout: Duration,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    pub certificate: PathBuf,
    pub private_key: PathBuf,
    pub client_ca: PathBuf,
    pub peer_ca: PathBuf,
    pub crls: Vec<PathBuf>,
    pub reload_interval: Duration,
}

#[derive(Debug, Clone)]
pub struct NatsSettings {
    pub url: String,
    pub credentials_file: Option<PathBuf>,
    pub request_timeout: Duration,
}

#[derive(Debug, Clone)]
pub struct Limits {
    pub max_request_bytes: usize,
    pub max_fact_bytes: usize,
    pub max_page: u32,
    pub max_wait: Duration,
    pub max_object_chunk_bytes: u32,
    pub header_timeout: Duration,
    pub body_timeout: Duration,
    pub call_timeout: Duration,
    pub idle_timeout: Duration,
    pub max_connections: usize,
    pub max_streams_per_connection: u32,
    pub max_buffered_request_bytes: usize,
}

#[derive(Debug, Clone, PartialEq)]
pub struct CategoryPolicy {
    pub max_age: Duration,
    pub max_bytes: i64,
    pub replicas: usize,
    pub memory_storage: bool,
    pub safety_critical: bool,
    pub duplicate_window: Duration,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsumerSpec {
    pub name: String,
    pub category: Category,
    pub max_ack_pending: u32,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BucketSpec {
    pub name: String,
    pub max_bytes: i64,
    pub replicas: usize,
}

/// What each certificate identity may do (SPEC §5). Identities not listed may do nothing.
#[derive(Debug, Clone, Default)]
pub struct AccessPolicy {
    pub grants: BTreeMap<String, Grants>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Grants {
    pub append: Vec<Category>,
    pub assert_zones: Vec<String>,
    pub put_objects: Vec<String>,
    pub fetch: Vec<String>,
    pub get_objects: Vec<String>,
    pub operator: bool,
    pub operate: Vec<Operation>,
}

/// An operation of the operator's door (`bsfg.v1.OperatorService`), granted per identity in
/// `[[access]] operate`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operation {
    /// `GetStatus`: what `bsfg status` shows.
    Status,
    /// `SkipGap`: move a consumer's cursor past evicted facts (recorded).
    SkipGap,
    /// `GetFirmwareStatus`: slots, versions, boot attempts, installs.
    FirmwareStatus,
    /// `InstallFirmware`: ask for a bundle to be installed (with a change ticket).
    FirmwareInstall,
    /// `ApproveFirmwareInstall`: the second operator's approval of someone else's install.
    FirmwareApprove,
}

impl Operation {
    pub const ALL: [Operation; 5] = [
        Operation::Status,
        Operation::SkipGap,
        Operation::FirmwareStatus,
        Operation::FirmwareInstall,
        Operation::FirmwareApprove,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Operation::Status => "status",
            Operation::SkipGap => "skip_gap",
            Operation::FirmwareStatus => "firmware_status",
            Operation::FirmwareInstall => "firmware_install",
            Operation::FirmwareApprove => "firmware_approve",
        }
    }

    pub fn parse(name: &str) -> Option<Operation> {
        Self::ALL.into_iter().find(|op| op.name() == name)
    }
}

/// One problem in the file: which key, what value, what is wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigProblem {
    pub key: String,
    pub value: String,
    pub problem: String,
}

/// Every problem found in one configuration file.
#[derive(Debug, Clone, thiserror::Error)]
pub struct ConfigError {
    pub file: PathBuf,
    pub problems: Vec<ConfigProblem>,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let count = self.problems.len();
        write!(
            f,
            "{}: {count} problem{}",
            self.file.display(),
            if count == 1 { "" } else { "s" }
        )?;
        for p in &self.problems {
            write!(
                f,
                "\n  {}: {} = {}: {}",
                self.file.display(),
                p.key,
                p.value,
                p.problem
            )?;
        }
        Ok(())
    }
}

impl Config {
    /// Reads and validates `path`, reporting every problem found.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let fail = |key: &str, value: String, problem: String| ConfigError {
            file: path.to_path_buf(),
            problems: vec![ConfigProblem {
                key: key.to_string(),
                value,
                problem,
            }],
        };
        let text = std::fs::read_to_string(path).map_err(|e| {
            fail(
                "(file)",
                path.display().to_string(),
                format!("cannot read: {e}"),
            )
        })?;
        Self::parse(path, &text)
    }

    /// Validates configuration text as if read from `path`.
    pub fn parse(path: &Path, text: &str) -> Result<Config, ConfigError> {
        let file: ConfigFile = toml::from_str(text).map_err(|e| ConfigError {
            file: path.to_path_buf(),
            problems: vec![syntax_problem(text, &e)],
        })?;
        validate::validate(path, file)
    }

    pub fn category(&self, category: Category) -> &CategoryPolicy {
        // Every category is filled in by validation, with defaults where the file is silent.
        &self.categories[&category]
    }
}

fn syntax_problem(text: &str, error: &toml::de::Error) -> ConfigProblem {
    let (line, column) = error
        .span()
        .map(|span| {
            let before = &text[..span.start.min(text.len())];
            let line = before.matches('\n').count() + 1;
            let column = before.len() - before.rfind('\n').map_or(0, |i| i + 1) + 1;
            (line, column)
        })
        .unwrap_or((0, 0));
    let snippet = error
        .span()
        .and_then(|span| text.get(span))
        .unwrap_or("")
        .chars()
        .take(60)
        .collect::<String>();
    ConfigProblem {
        key: format!("line {line}, column {column}"),
        value: format!("{snippet:?}"),
        problem: error.message().trim().to_string(),
    }
}
