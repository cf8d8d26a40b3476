//! The configuration file format: `bsfg.toml`, parsed with serde and `deny_unknown_fields`.
//!
//! Owns the shape of the file and its defaults, nothing else: the rules that relate one key to
//! another live in `validate.rs`. Durations are written as `90s`, `2m`, `12h` or `30d`.

use serde::Deserialize;
use std::{collections::BTreeMap, path::PathBuf};

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConfigFile {
    /// This node's zone, e.g. `plant-a`. Its certificate's CN should be `<zone>-bsfg`.
    pub zone: String,
    pub listen: ListenSection,
    pub tls: TlsSection,
    #[serde(default)]
    pub nats: NatsSection,
    #[serde(default)]
    pub limits: LimitsSection,
    /// Retention per category: keys are `operational`, `audit`, `documents`, `telemetry`.
    #[serde(default)]
    pub categories: BTreeMap<String, CategorySection>,
    #[serde(default)]
    pub consumers: Vec<ConsumerSection>,
    #[serde(default)]
    pub buckets: Vec<BucketSection>,
    #[serde(default)]
    pub access: Vec<AccessSection>,
    /// Facts this node pulls from its neighbours (receiver-driven replication, SPEC §6).
    #[serde(default)]
    pub pulls: Vec<PullSection>,
    #[serde(default)]
    pub replication: ReplicationSection,
    /// Firmware installs through the operator's door (appliances only).
    #[serde(default)]
    pub firmware: Option<FirmwareSection>,
}

/// `[firmware]`: where bundles may be installed from, and whether an install needs a second
/// operator's approval.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FirmwareSection {
    /// The bucket (declared in `[[buckets]]`) bundles are installed from.
    pub bucket: String,
    /// An install waits for a second, different operator's approval.
    #[serde(default)]
    pub require_approval: bool,
}

/// One pull: facts fetched from a peer's durable consumer into a local category.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PullSection {
    /// Name of this pull, for logs, metrics and `bsfg status` (`A-Za-z0-9_-`).
    pub name: String,
    /// `https://host:port` of the peer's listener.
    pub peer_url: String,
    /// The Subject CN the peer's server certificate must carry, e.g. `plant-a-bsfg`.
    pub peer_identity: String,
    /// The durable consumer on the peer this node reads.
    pub consumer: String,
    /// The category this pull keeps: the category of the peer's consumer. Pulled facts are stored
    /// in their own category; one in another category stops the pull.
    pub category: String,
    /// Origin zones (`from_zone`) this peer may relay, e.g. `["plant-a"]`. Left out: any zone,
    /// with a warning at start (configs written before the key existed).
    #[serde(default)]
    pub accept_from_zones: Option<Vec<String>>,
    /// Facts asked for per FetchFacts call.
    #[serde(default = "default_page_size")]
    pub page_size: u32,
    /// How long one FetchFacts waits for new facts when the peer has none (long poll).
    #[serde(default = "default_idle_wait")]
    pub idle_wait: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReplicationSection {
    /// How long after its last append a page is confirmed to the peer: `0s` when nats-server
    /// runs with `sync_interval: always` (every acknowledged fact is on disk), otherwise at least
    /// nats-server's `sync_interval`.
    #[serde(default = "default_confirm_delay")]
    pub confirm_delay: String,
    /// Time allowed for one call to a peer.
    #[serde(default = "default_peer_timeout")]
    pub peer_timeout: String,
}

impl Default for ReplicationSection {
    fn default() -> Self {
        Self {
            confirm_delay: default_confirm_delay(),
            peer_timeout: default_peer_timeout(),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListenSection {
    /// `host:port` of the mTLS listener, e.g. `0.0.0.0:9443`.
    pub address: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsSection {
    /// PEM certificate chain of this node (leaf first).
    pub certificate: PathBuf,
    /// PEM private key of this node (PKCS#8, PKCS#1 or SEC1).
    pub private_key: PathBuf,
    /// PEM bundle of the CAs whose client certificates are accepted.
    pub client_ca: PathBuf,
    /// PEM or DER certificate revocation lists checked for client certificates.
    #[serde(default)]
    pub crls: Vec<PathBuf>,
    /// PEM bundle of the CAs that peers' server certificates must chain to (pulls); defaults to
    /// `client_ca`.
    #[serde(default)]
    pub peer_ca: Option<PathBuf>,
    /// How often the files above are checked for changes (SIGHUP reloads at once).
    #[serde(default = "default_reload_interval")]
    pub reload_interval: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NatsSection {
    /// The zone's own nats-server (loopback on the appliance).
    #[serde(default = "default_nats_url")]
    pub url: String,
    /// Optional NATS user and password file (`user:password` on one line).
    #[serde(default)]
    pub credentials_file: Option<PathBuf>,
    /// Time allowed for one JetStream request.
    #[serde(default = "default_nats_timeout")]
    pub request_timeout: String,
}

impl Default for NatsSection {
    fn default() -> Self {
        Self {
            url: default_nats_url(),
            credentials_file: None,
            request_timeout: default_nats_timeout(),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitsSection {
    /// Largest request body accepted, before and after decompression.
    #[serde(default = "default_max_request_bytes")]
    pub max_request_bytes: u64,
    /// Largest `object_json` accepted.
    #[serde(default = "default_max_fact_bytes")]
    pub max_fact_bytes: u64,
    /// Most facts one FetchFacts page returns.
    #[serde(default = "default_max_page")]
    pub max_page: u32,
    /// Longest FetchFacts long poll.
    #[serde(default = "default_max_wait")]
    pub max_wait: String,
    /// Largest GetObject chunk.
    #[serde(default = "default_max_chunk")]
    pub max_object_chunk_bytes: u32,
    /// Time a client has to complete the TLS handshake and send its request headers.
    #[serde(default = "default_header_timeout")]
    pub header_timeout: String,
    /// Time a client has to send its whole request body.
    #[serde(default = "default_body_timeout")]
    pub body_timeout: String,
    /// Longest time a call may run when the client sets no Connect-Timeout-Ms.
    #[serde(default = "default_call_timeout")]
    pub call_timeout: String,
    /// A connection with no call in flight for this long is closed (HTTP/1.1 and HTTP/2).
    #[serde(default = "default_idle_timeout")]
    pub idle_timeout: String,
    /// Most connections open at once (TLS handshakes included); at the limit the longest-idle
    /// connection is closed to make room, and a new one is refused only when every one is busy.
    #[serde(default = "default_max_connections")]
    pub max_connections: u32,
    /// HTTP/2 SETTINGS_MAX_CONCURRENT_STREAMS: calls in flight on one connection.
    #[serde(default = "default_max_streams_per_connection")]
    pub max_streams_per_connection: u32,
    /// Node-wide budget for request bodies being read; a call that finds it exhausted is
    /// refused with `resource_exhausted`.
    #[serde(default = "default_max_buffered_request_bytes")]
    pub max_buffered_request_bytes: u64,
}

impl Default for LimitsSection {
    fn default() -> Self {
        Self {
            max_request_bytes: default_max_request_bytes(),
            max_fact_bytes: default_max_fact_bytes(),
            max_page: default_max_page(),
            max_wait: default_max_wait(),
            max_object_chunk_bytes: default_max_chunk(),
            header_timeout: default_header_timeout(),
            body_timeout: default_body_timeout(),
            call_timeout: default_call_timeout(),
            idle_timeout: default_idle_timeout(),
            max_connections: default_max_connections(),
            max_streams_per_connection: default_max_streams_per_connection(),
            max_buffered_request_bytes: default_max_buffered_request_bytes(),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CategorySection {
    /// Oldest fact kept, e.g. `3650d`; `0s` keeps facts until `max_bytes` is reached. Left out:
    /// `3650d`, or `0s` (never) for a safety_critical category.
    #[serde(default)]
    pub max_age: Option<String>,
    /// Largest size of the category stream in bytes; -1 for unlimited (not for safety_critical).
    #[serde(default = "default_max_bytes")]
    pub max_bytes: i64,
    #[serde(default = "default_replicas")]
    pub replicas: usize,
    /// `file` or `memory`.
    #[serde(default = "default_storage")]
    pub storage: String,
    /// Never evict: the stream refuses new facts when full and AppendFact answers
    /// `resource_exhausted` from 80 % fill.
    #[serde(default)]
    pub safety_critical: bool,
    /// JetStream's own duplicate window; idempotency does not depend on it.
    #[serde(default = "default_duplicate_window")]
    pub duplicate_window: String,
}

impl Default for CategorySection {
    fn default() -> Self {
        Self {
            max_age: None,
            max_bytes: default_max_bytes(),
            replicas: default_replicas(),
            storage: default_storage(),
            safety_critical: false,
            duplicate_window: default_duplicate_window(),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConsumerSection {
    /// Durable consumer name, e.g. `enterprise-operational`.
    pub name: String,
    /// The category stream it reads.
    pub category: String,
    /// Most facts fetched and not yet confirmed; also caps a page.
    #[serde(default = "default_max_ack_pending")]
    pub max_ack_pending: u32,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BucketSection {
    /// Object Store bucket name, e.g. `batch-files`.
    pub name: String,
    /// Largest total size of the bucket in bytes; -1 for unlimited.
    #[serde(default = "default_max_bytes")]
    pub max_bytes: i64,
    #[serde(default = "default_replicas")]
    pub replicas: usize,
}

/// What one certificate identity (its Subject CN) may do.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AccessSection {
    pub identity: String,
    /// Categories it may AppendFact to.
    #[serde(default)]
    pub append: Vec<String>,
    /// `from_zone` values it may assert in AppendFact.
    #[serde(default)]
    pub assert_zones: Vec<String>,
    /// Buckets it may PutObject to.
    #[serde(default)]
    pub put_objects: Vec<String>,
    /// Consumers it may FetchFacts from and ConfirmReceipt on.
    #[serde(default)]
    pub fetch: Vec<String>,
    /// Buckets it may GetObject from.
    #[serde(default)]
    pub get_objects: Vec<String>,
    /// May read `/metrics`.
    #[serde(default)]
    pub operator: bool,
    /// Operations of the operator's door (`OperatorService`) it may call: `status`, ...
    #[serde(default)]
    pub operate: Vec<String>,
}

fn default_page_size() -> u32 {
    500
}
fn default_idle_wait() -> String {
    "10s".into()
}
fn default_confirm_delay() -> String {
    "0s".into()
}
fn default_peer_timeout() -> String {
    "30s".into()
}
fn default_reload_interval() -> String {
    "5s".into()
}
fn default_nats_url() -> String {
    "nats://127.0.0.1:4222".into()
}
fn default_nats_timeout() -> String {
    "5s".into()
}
fn default_max_request_bytes() -> u64 {
    8 * 1024 * 1024
}
fn default_max_fact_bytes() -> u64 {
    256 * 1024
}
fn default_max_page() -> u32 {
    500
}
fn default_max_wait() -> String {
    "30s".into()
}
fn default_max_chunk() -> u32 {
    1024 * 1024
}
fn default_header_timeout() -> String {
    "10s".into()
}
fn default_body_timeout() -> String {
    "30s".into()
}
fn default_call_timeout() -> String {
    "60s".into()
}
fn default_idle_timeout() -> String {
    "120s".into()
}
fn default_max_connections() -> u32 {
    512
}
fn default_max_streams_per_connection() -> u32 {
    32
}
fn default_max_buffered_request_bytes() -> u64 {
    64 * 1024 * 1024
}
pub(super) fn default_max_age() -> String {
    "3650d".into()
}
fn default_max_bytes() -> i64 {
    1024 * 1024 * 1024
}
fn default_replicas() -> usize {
    1
}
fn default_storage() -> String {
    "file".into()
}
fn default_duplicate_window() -> String {
    "2m".into()
}
fn default_max_ack_pending() -> u32 {
    1000
}
