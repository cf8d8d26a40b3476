//! Turns a parsed [`ConfigFile`] into a [`Config`], collecting every problem instead of stopping
//! at the first. Checks names against the syntax JetStream accepts, cross-references (a consumer's
//! category, an access rule's consumers and buckets) and durations. Never touches the filesystem:
//! certificate files are checked when they are loaded (`rpc::tls`).

use super::{
    AccessPolicy, BucketSpec, CategoryPolicy, Config, ConfigError, ConfigProblem, ConsumerSpec,
    FirmwareSettings, Grants, Limits, NatsSettings, Operation, PullSpec, ReplicationSettings,
    TlsFiles, durability, file::CategorySection, file::ConfigFile, parse_duration, pull_origin,
};
use crate::fact::{Category, is_zone_name};
use std::{collections::BTreeMap, net::SocketAddr, path::Path, time::Duration};

pub(super) struct Problems(pub(super) Vec<ConfigProblem>);

impl Problems {
    pub(super) fn add(
        &mut self,
        key: impl Into<String>,
        value: impl std::fmt::Debug,
        problem: impl Into<String>,
    ) {
        self.0.push(ConfigProblem {
            key: key.into(),
            value: format!("{value:?}"),
            problem: problem.into(),
        });
    }

    pub(super) fn duration(&mut self, key: &str, text: &str) -> Duration {
        parse_duration(text).unwrap_or_else(|problem| {
            self.add(key, text, problem);
            Duration::ZERO
        })
    }
}

/// Consumer and bucket names: what JetStream accepts as a durable or bucket name.
fn is_resource_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

pub fn validate(path: &Path, file: ConfigFile) -> Result<Config, ConfigError> {
    let mut p = Problems(Vec::new());

    if !is_zone_name(&file.zone) {
        p.add(
            "zone",
            &file.zone,
            "must be 1-63 characters of a-z, 0-9 and '-', starting with a letter",
        );
    }
    let listen = file
        .listen
        .address
        .parse::<SocketAddr>()
        .unwrap_or_else(|_| {
            p.add(
                "listen.address",
                &file.listen.address,
                "must be host:port with a numeric IP, e.g. 0.0.0.0:9443",
            );
            SocketAddr::from(([0, 0, 0, 0], 0))
        });
    let tls = TlsFiles {
        certificate: file.tls.certificate.clone(),
        private_key: file.tls.private_key.clone(),
        client_ca: file.tls.client_ca.clone(),
        peer_ca: file
            .tls
            .peer_ca
            .clone()
            .unwrap_or_else(|| file.tls.client_ca.clone()),
        crls: file.tls.crls.clone(),
        reload_interval: p.duration("tls.reload_interval", &file.tls.reload_interval),
    };
    if !(file.nats.url.starts_with("nats://") || file.nats.url.starts_with("tls://")) {
        p.add(
            "nats.url",
            &file.nats.url,
            "must start with nats:// or tls://",
        );
    }
    let nats = NatsSettings {
        url: file.nats.url.clone(),
        credentials_file: file.nats.credentials_file.clone(),
        request_timeout: p.duration("nats.request_timeout", &file.nats.request_timeout),
    };
    let limits = validate_limits(&mut p, &file);
    let categories = validate_categories(&mut p, &file.categories);
    let consumers = validate_consumers(&mut p, &file);
    let buckets = validate_buckets(&mut p, &file);
    let access = validate_access(&mut p, &file, &consumers, &buckets);
    let pulls = validate_pulls(&mut p, &file);
    durability::check_pull_categories(&mut p, &categories, &pulls);
    let replication = ReplicationSettings {
        confirm_delay: p.duration("replication.confirm_delay", &file.replication.confirm_delay),
        peer_timeout: p.duration("replication.peer_timeout", &file.replication.peer_timeout),
    };

    let firmware = file.firmware.as_ref().map(|f| {
        if !buckets.contains_key(&f.bucket) {
            p.add(
                "firmware.bucket",
                &f.bucket,
                "no bucket of that name is declared in [[buckets]]",
            );
        }
        FirmwareSettings {
            bucket: f.bucket.clone(),
            require_approval: f.require_approval,
        }
    });

    if !p.0.is_empty() {
        return Err(ConfigError {
            file: path.to_path_buf(),
            problems: p.0,
        });
    }
    Ok(Config {
        path: path.to_path_buf(),
        zone: file.zone,
        listen,
        tls,
        nats,
        limits,
        categories,
        consumers,
        buckets,
        access,
        pulls,
        replication,
        firmware,
    })
}

fn validate_pulls(p: &mut Problems, file: &ConfigFile) -> Vec<PullSpec> {
    let mut out: Vec<PullSpec> = Vec::new();
    for (i, pull) in file.pulls.iter().enumerate() {
        let key = |field: &str| format!("pulls[{i}].{field}");
        if !is_resource_name(&pull.name) {
            p.add(
                key("name"),
                &pull.name,
                "must be 1-64 characters of A-Z, a-z, 0-9, '-' and '_'",
            );
        } else if out.iter().any(|o| o.name == pull.name) {
            p.add(key("name"), &pull.name, "declared twice");
        }
        let url_ok = pull.peer_url.strip_prefix("https://").is_some_and(|rest| {
            rest.trim_end_matches('/')
                .rsplit_once(':')
                .is_some_and(|(h, port)| !h.is_empty() && port.parse::<u16>().is_ok())
        });
        if !url_ok {
            p.add(key("peer_url"), &pull.peer_url, "must be https://host:port");
        }
        if pull.peer_identity.is_empty() {
            p.add(
                key("peer_identity"),
                &pull.peer_identity,
                "must be the peer certificate's common name, e.g. plant-a-bsfg",
            );
        }
        if !is_resource_name(&pull.consumer) {
            p.add(
                key("consumer"),
                &pull.consumer,
                "must be 1-64 characters of A-Z, a-z, 0-9, '-' and '_'",
            );
        }
        let category = Category::parse(&pull.category).unwrap_or_else(|| {
            p.add(
                key("category"),
                &pull.category,
                "unknown category (expected operational, audit, documents or telemetry)",
            );
            Category::Operational
        });
        if !(1..=10_000).contains(&pull.page_size) {
            p.add(
                key("page_size"),
                pull.page_size,
                "must be between 1 and 10000",
            );
        }
        out.push(PullSpec {
            name: pull.name.clone(),
            peer_url: pull.peer_url.clone(),
            peer_identity: pull.peer_identity.clone(),
            consumer: pull.consumer.clone(),
            category,
            accept_from_zones: pull_origin::accept_from_zones(p, i, &pull.accept_from_zones),
            page_size: pull.page_size,
            idle_wait: p.duration(&key("idle_wait"), &pull.idle_wait),
        });
    }
    out
}

fn validate_limits(p: &mut Problems, file: &ConfigFile) -> Limits {
    let l = &file.limits;
    if !(1024..=256 * 1024 * 1024).contains(&l.max_request_bytes) {
        p.add(
            "limits.max_request_bytes",
            l.max_request_bytes,
            "must be between 1024 and 268435456",
        );
    }
    if l.max_fact_bytes == 0 || l.max_fact_bytes > l.max_request_bytes {
        p.add(
            "limits.max_fact_bytes",
            l.max_fact_bytes,
            "must be at least 1 and at most limits.max_request_bytes",
        );
    }
    if !(1..=10_000).contains(&l.max_page) {
        p.add("limits.max_page", l.max_page, "must be between 1 and 10000");
    }
    if l.max_object_chunk_bytes < 1024 || u64::from(l.max_object_chunk_bytes) > l.max_request_bytes
    {
        p.add(
            "limits.max_object_chunk_bytes",
            l.max_object_chunk_bytes,
            "must be at least 1024 and at most limits.max_request_bytes",
        );
    }
    let idle_timeout = p.duration("limits.idle_timeout", &l.idle_timeout);
    if idle_timeout < Duration::from_secs(1) && parse_duration(&l.idle_timeout).is_ok() {
        p.add(
            "limits.idle_timeout",
            &l.idle_timeout,
            "must be at least 1s (idle connections are closed after it)",
        );
    }
    validate_resource_limits(p, l);
    Limits {
        max_connections: usize::try_from(l.max_connections).unwrap_or(usize::MAX),
        max_streams_per_connection: l.max_streams_per_connection,
        max_buffered_request_bytes: usize::try_from(l.max_buffered_request_bytes)
            .unwrap_or(usize::MAX),
        max_request_bytes: usize::try_from(l.max_request_bytes).unwrap_or(usize::MAX),
        max_fact_bytes: usize::try_from(l.max_fact_bytes).unwrap_or(usize::MAX),
        max_page: l.max_page,
        max_wait: p.duration("limits.max_wait", &l.max_wait),
        max_object_chunk_bytes: l.max_object_chunk_bytes,
        header_timeout: p.duration("limits.header_timeout", &l.header_timeout),
        body_timeout: p.duration("limits.body_timeout", &l.body_timeout),
        call_timeout: p.duration("limits.call_timeout", &l.call_timeout),
        idle_timeout,
    }
}

/// Connections, streams and the request-body budget (docs/configuration.md, "Sizing").
fn validate_resource_limits(p: &mut Problems, l: &super::file::LimitsSection) {
    if !(1..=65_536).contains(&l.max_connections) {
        p.add(
            "limits.max_connections",
            l.max_connections,
            "must be between 1 and 65536",
        );
    }
    if !(1..=1000).contains(&l.max_streams_per_connection) {
        p.add(
            "limits.max_streams_per_connection",
            l.max_streams_per_connection,
            "must be between 1 and 1000",
        );
    }
    if l.max_buffered_request_bytes < l.max_request_bytes
        || l.max_buffered_request_bytes > 16 * 1024 * 1024 * 1024
    {
        p.add(
            "limits.max_buffered_request_bytes",
            l.max_buffered_request_bytes,
            "must be at least limits.max_request_bytes (one whole request) and at most 16 GiB",
        );
    }
}

fn validate_categories(
    p: &mut Problems,
    sections: &BTreeMap<String, CategorySection>,
) -> BTreeMap<Category, CategoryPolicy> {
    for name in sections.keys() {
        if Category::parse(name).is_none() {
            p.add(
                format!("categories.{name}"),
                name,
                "unknown category (expected operational, audit, documents or telemetry)",
            );
        }
    }
    let mut out = BTreeMap::new();
    for category in Category::ALL {
        let section = sections.get(category.name()).cloned().unwrap_or_default();
        let key = |field: &str| format!("categories.{category}.{field}");
        durability::check_storage(p, category, &section);
        let memory_storage = match section.storage.as_str() {
            "file" => false,
            "memory" => true,
            other => {
                p.add(key("storage"), other, "must be \"file\" or \"memory\"");
                false
            }
        };
        if section.max_bytes == 0 || section.max_bytes < -1 {
            p.add(
                key("max_bytes"),
                section.max_bytes,
                "must be a positive number of bytes or -1 for unlimited",
            );
        }
        if section.safety_critical && section.max_bytes == -1 {
            p.add(
                key("max_bytes"),
                section.max_bytes,
                "a safety_critical category needs a byte limit to measure its fill against",
            );
        }
        if !(1..=5).contains(&section.replicas) {
            p.add(key("replicas"), section.replicas, "must be between 1 and 5");
        }
        let duplicate_window = p.duration(&key("duplicate_window"), &section.duplicate_window);
        if duplicate_window.is_zero() {
            p.add(
                key("duplicate_window"),
                &section.duplicate_window,
                "must be greater than zero",
            );
        }
        out.insert(
            category,
            CategoryPolicy {
                max_age: durability::max_age(p, category, &section),
                max_bytes: section.max_bytes,
                replicas: section.replicas,
                memory_storage,
                safety_critical: section.safety_critical,
                duplicate_window,
            },
        );
    }
    out
}

fn validate_consumers(p: &mut Problems, file: &ConfigFile) -> BTreeMap<String, ConsumerSpec> {
    let mut out = BTreeMap::new();
    for (i, c) in file.consumers.iter().enumerate() {
        if !is_resource_name(&c.name) {
            p.add(
                format!("consumers[{i}].name"),
                &c.name,
                "must be 1-64 characters of A-Z, a-z, 0-9, '-' and '_'",
            );
        }
        let Some(category) = Category::parse(&c.category) else {
            p.add(
                format!("consumers[{i}].category"),
                &c.category,
                "unknown category (expected operational, audit, documents or telemetry)",
            );
            continue;
        };
        if c.max_ack_pending == 0 {
            p.add(
                format!("consumers[{i}].max_ack_pending"),
                c.max_ack_pending,
                "must be at least 1",
            );
        }
        let spec = ConsumerSpec {
            name: c.name.clone(),
            category,
            max_ack_pending: c.max_ack_pending,
        };
        if out.insert(c.name.clone(), spec).is_some() {
            p.add(format!("consumers[{i}].name"), &c.name, "declared twice");
        }
    }
    out
}

fn validate_buckets(p: &mut Problems, file: &ConfigFile) -> BTreeMap<String, BucketSpec> {
    let mut out = BTreeMap::new();
    for (i, b) in file.buckets.iter().enumerate() {
        if !is_resource_name(&b.name) {
            p.add(
                format!("buckets[{i}].name"),
                &b.name,
                "must be 1-64 characters of A-Z, a-z, 0-9, '-' and '_'",
            );
        }
        if b.max_bytes == 0 || b.max_bytes < -1 {
            p.add(
                format!("buckets[{i}].max_bytes"),
                b.max_bytes,
                "must be a positive number of bytes or -1 for unlimited",
            );
        }
        let spec = BucketSpec {
            name: b.name.clone(),
            max_bytes: b.max_bytes,
            replicas: b.replicas,
        };
        if out.insert(b.name.clone(), spec).is_some() {
            p.add(format!("buckets[{i}].name"), &b.name, "declared twice");
        }
    }
    out
}

fn validate_access(
    p: &mut Problems,
    file: &ConfigFile,
    consumers: &BTreeMap<String, ConsumerSpec>,
    buckets: &BTreeMap<String, BucketSpec>,
) -> AccessPolicy {
    let mut grants = BTreeMap::new();
    for (i, a) in file.access.iter().enumerate() {
        let key = |field: &str| format!("access[{i}].{field}");
        if a.identity.is_empty() || a.identity.len() > 256 {
            p.add(
                key("identity"),
                &a.identity,
                "must be a certificate common name of 1-256 characters",
            );
        }
        let mut append = Vec::new();
        for (j, name) in a.append.iter().enumerate() {
            match Category::parse(name) {
                Some(c) => append.push(c),
                None => p.add(
                    format!("access[{i}].append[{j}]"),
                    name,
                    "unknown category (expected operational, audit, documents or telemetry)",
                ),
            }
        }
        for (j, zone) in a.assert_zones.iter().enumerate() {
            if !is_zone_name(zone) {
                p.add(
                    format!("access[{i}].assert_zones[{j}]"),
                    zone,
                    "not a zone name (a-z, 0-9, '-', starting with a letter)",
                );
            }
        }
        if !append.is_empty() && a.assert_zones.is_empty() {
            p.add(
                key("assert_zones"),
                &a.assert_zones,
                "an identity that may append must be allowed at least one from_zone",
            );
        }
        for (j, name) in a.fetch.iter().enumerate() {
            if !consumers.contains_key(name) {
                p.add(
                    format!("access[{i}].fetch[{j}]"),
                    name,
                    "no consumer of that name is declared in [[consumers]]",
                );
            }
        }
        for (field, list) in [
            ("put_objects", &a.put_objects),
            ("get_objects", &a.get_objects),
        ] {
            for (j, name) in list.iter().enumerate() {
                if !buckets.contains_key(name) {
                    p.add(
                        format!("access[{i}].{field}[{j}]"),
                        name,
                        "no bucket of that name is declared in [[buckets]]",
                    );
                }
            }
        }
        let mut operate = Vec::new();
        for (j, name) in a.operate.iter().enumerate() {
            match Operation::parse(name) {
                Some(op) => operate.push(op),
                None => p.add(
                    format!("access[{i}].operate[{j}]"),
                    name,
                    format!(
                        "unknown operation (expected one of: {})",
                        Operation::ALL.map(Operation::name).join(", ")
                    ),
                ),
            }
        }
        let g = Grants {
            append,
            assert_zones: a.assert_zones.clone(),
            put_objects: a.put_objects.clone(),
            fetch: a.fetch.clone(),
            get_objects: a.get_objects.clone(),
            operator: a.operator,
            operate,
        };
        if grants.insert(a.identity.clone(), g).is_some() {
            p.add(
                key("identity"),
                &a.identity,
                "listed twice; merge the two entries",
            );
        }
    }
    AccessPolicy { grants }
}
