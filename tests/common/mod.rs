//! Test harness: real zones on loopback. A [`Zone`] is a real nats-server with JetStream, a real
//! `bsfg` node started from the built binary, and a development PKI generated for the test; calls
//! are made by real clients (`curl`, and the Node and Python Connect clients).
//!
//! Every process is killed when its owner is dropped, and every file lives in a temporary
//! directory. Nothing listens or connects beyond 127.0.0.1.
#![allow(dead_code)]

pub mod bundles;
pub mod chain;
pub mod clients;
pub mod dns;
pub mod h2;
pub mod js;
pub mod observe;
pub mod producer;

use bsfg::cli::dev_pki::DevCa;
use std::{
    io::{BufRead, BufReader},
    net::TcpListener,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};
use time::OffsetDateTime;

pub fn manifest_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The pinned nats-server that `scripts/setup.sh` installs.
pub fn nats_server_binary() -> PathBuf {
    let path = std::env::var_os("BSFG_NATS_SERVER")
        .map(PathBuf::from)
        .unwrap_or_else(|| manifest_dir().join(".tools/bin/nats-server"));
    assert!(
        path.exists(),
        "nats-server not found at {} — run `make setup` (or `make test`) first",
        path.display()
    );
    path
}

/// The node binary under test: `BSFG_BIN` (e.g. the static musl build) or the one cargo built.
pub fn bsfg_binary() -> PathBuf {
    std::env::var_os("BSFG_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_bsfg")))
}

pub fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind an ephemeral port");
    listener.local_addr().expect("local address").port()
}

fn wait_for_port(port: u16, deadline: Duration) -> bool {
    let start = Instant::now();
    while start.elapsed() < deadline {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    false
}

/// A child process killed on drop, with its output collected.
pub struct Process {
    child: Option<Child>,
    pub output: Arc<Mutex<Vec<String>>>,
    pub name: String,
    /// Output streams not yet read to their end: after an exit, the log is complete only once
    /// this is 0.
    open_streams: Arc<std::sync::atomic::AtomicUsize>,
}

impl Process {
    pub fn spawn(name: &str, mut command: Command) -> Process {
        command
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .stdin(Stdio::null());
        let mut child = command
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {name}: {e}"));
        let output = Arc::new(Mutex::new(Vec::new()));
        let open_streams = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        for stream in [
            child
                .stdout
                .take()
                .map(|s| Box::new(s) as Box<dyn std::io::Read + Send>),
            child
                .stderr
                .take()
                .map(|s| Box::new(s) as Box<dyn std::io::Read + Send>),
        ]
        .into_iter()
        .flatten()
        {
            let output = output.clone();
            let tag = name.to_string();
            let open = open_streams.clone();
            open.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            std::thread::spawn(move || {
                for line in BufReader::new(stream).lines().map_while(Result::ok) {
                    if std::env::var_os("BSFG_TEST_ECHO").is_some() {
                        eprintln!("[{tag}] {line}");
                    }
                    output.lock().expect("log lock").push(line);
                }
                open.fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
            });
        }
        Process {
            child: Some(child),
            output,
            name: name.to_string(),
            open_streams,
        }
    }

    /// After the process exited: waits (up to 2 s) until its output is read to the end, so that
    /// `log()` holds everything it wrote.
    fn drain_output(&self) {
        let start = Instant::now();
        while self.open_streams.load(std::sync::atomic::Ordering::SeqCst) > 0
            && start.elapsed() < Duration::from_secs(2)
        {
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().map(|c| c.id()).unwrap_or(0)
    }

    pub fn log(&self) -> String {
        self.output.lock().expect("log lock").join("\n")
    }

    pub fn log_contains(&self, needle: &str) -> bool {
        self.output
            .lock()
            .expect("log lock")
            .iter()
            .any(|l| l.contains(needle))
    }

    pub fn wait_for_log(&self, needle: &str, deadline: Duration) -> bool {
        let start = Instant::now();
        while start.elapsed() < deadline {
            if self.log_contains(needle) {
                return true;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        false
    }

    /// True while the process runs.
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.as_mut().map(|c| c.try_wait()), Some(Ok(None)))
    }

    pub fn signal(&self, signal: &str) {
        let _ = Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(self.pid().to_string())
            .status();
    }

    /// SIGTERM, then wait up to `deadline` for a clean exit; returns the exit status.
    pub fn stop(&mut self, deadline: Duration) -> Option<std::process::ExitStatus> {
        self.signal("TERM");
        let start = Instant::now();
        while start.elapsed() < deadline {
            if let Some(Ok(Some(status))) = self.child.as_mut().map(|c| c.try_wait()) {
                self.child = None;
                self.drain_output();
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        self.kill();
        None
    }

    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    pub fn wait_exit(&mut self, deadline: Duration) -> Option<std::process::ExitStatus> {
        let start = Instant::now();
        while start.elapsed() < deadline {
            if let Some(Ok(Some(status))) = self.child.as_mut().map(|c| c.try_wait()) {
                self.child = None;
                self.drain_output();
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A nats-server with JetStream on a loopback port, its store in `dir`.
pub struct NatsServer {
    pub port: u16,
    dir: PathBuf,
    /// Extra lines inside the `jetstream {}` block, e.g. `sync_interval: always`.
    jetstream_extra: String,
    pub process: Process,
}

impl NatsServer {
    pub fn start(dir: &Path) -> NatsServer {
        Self::start_on(dir, free_port())
    }

    pub fn start_on(dir: &Path, port: u16) -> NatsServer {
        Self::start_with(dir, port, "")
    }

    pub fn start_with(dir: &Path, port: u16, jetstream_extra: &str) -> NatsServer {
        std::fs::create_dir_all(dir.join("jetstream")).expect("nats store dir");
        let conf = dir.join("nats-server.conf");
        std::fs::write(
            &conf,
            format!(
                "listen: 127.0.0.1:{port}\njetstream {{\n  store_dir: \"{}\"\n  {jetstream_extra}\n}}\n",
                dir.join("jetstream").display()
            ),
        )
        .expect("write nats-server.conf");
        let mut command = Command::new(nats_server_binary());
        command.arg("-c").arg(&conf);
        let process = Process::spawn("nats-server", command);
        assert!(
            wait_for_port(port, Duration::from_secs(10)),
            "nats-server did not listen on {port}"
        );
        NatsServer {
            port,
            dir: dir.to_path_buf(),
            jetstream_extra: jetstream_extra.to_string(),
            process,
        }
    }

    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// kill -9 and start again on the same port and store.
    pub fn restart(&mut self) {
        self.process.kill();
        let port = self.port;
        *self = NatsServer::start_with(&self.dir.clone(), port, &self.jetstream_extra.clone());
    }
}

/// A development PKI in a directory: one CA and certificates issued on demand.
pub struct Pki {
    pub dir: PathBuf,
    pub ca: DevCa,
    pub ca_path: PathBuf,
}

pub struct CertFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl Pki {
    pub fn new(dir: &Path, name: &str) -> Pki {
        std::fs::create_dir_all(dir).expect("pki dir");
        let ca = DevCa::create(name).expect("create CA");
        let ca_path = dir.join("ca.pem");
        std::fs::write(&ca_path, ca.pem()).expect("write ca.pem");
        Pki {
            dir: dir.to_path_buf(),
            ca,
            ca_path,
        }
    }

    /// A certificate for `name` valid from an hour ago for a year.
    pub fn issue(&self, name: &str) -> CertFiles {
        self.issue_valid(
            name,
            OffsetDateTime::now_utc() - time::Duration::hours(1),
            365,
        )
    }

    /// A certificate that expired yesterday.
    pub fn issue_expired(&self, name: &str) -> CertFiles {
        self.issue_valid(
            name,
            OffsetDateTime::now_utc() - time::Duration::days(10),
            9,
        )
    }

    pub fn issue_valid(&self, name: &str, not_before: OffsetDateTime, days: i64) -> CertFiles {
        let (cert, key) = self
            .ca
            .issue(
                name,
                &["localhost".to_string(), "*.bsfg.test".to_string()],
                not_before,
                days,
            )
            .expect("issue certificate");
        let files = CertFiles {
            cert: self
                .dir
                .join(format!("{name}-{}.pem", not_before.unix_timestamp())),
            key: self
                .dir
                .join(format!("{name}-{}.key", not_before.unix_timestamp())),
        };
        std::fs::write(&files.cert, cert).expect("write cert");
        std::fs::write(&files.key, key).expect("write key");
        files
    }
}

/// Knobs a test may turn on its zone.
#[derive(Clone)]
pub struct ZoneOptions {
    pub zone: String,
    /// Extra TOML appended to the generated config (categories, consumers, access...).
    pub extra_toml: String,
    /// `[categories.operational]` duplicate window.
    pub duplicate_window: String,
    /// `[categories.operational] max_bytes` (100 MiB unless set; the benchmarks need more).
    pub operational_max_bytes: u64,
    pub limits_toml: String,
    /// `limits.max_object_chunk_bytes` (64 KiB unless set; at most 1 MiB, the request limit).
    pub max_object_chunk_bytes: u32,
    /// How often the node checks its certificate files for changes.
    pub reload_interval: String,
    /// CRL files for `tls.crls`.
    pub crls: Vec<PathBuf>,
    /// The estate's PKI, shared by zones that talk to each other; a new one when `None`.
    pub pki: Option<Arc<Pki>>,
    /// `limits.max_page` of the node.
    pub max_page: u32,
    /// Extra environment for the node process.
    pub node_env: Vec<(String, String)>,
    /// Extra lines in nats-server's `jetstream {}` block, e.g. `sync_interval: always`.
    pub nats_jetstream: String,
    /// Consumers the peer identity `idmz-bsfg` may fetch (the template declares `to-idmz`).
    pub peer_fetch: Vec<String>,
    /// Buckets the peer identity `idmz-bsfg` may read (`batch-files` unless set).
    pub peer_get_objects: Vec<String>,
    /// The listener port; a free one when `None` (set it to point pulls at a zone not started yet).
    pub port: Option<u16>,
    /// How the node's config names its nats-server host (`localhost` tests name resolution).
    pub nats_host: String,
    /// A command (and its arguments) the node is started under, e.g. `unshare --mount ...`.
    pub node_wrapper: Vec<String>,
}

impl Default for ZoneOptions {
    fn default() -> Self {
        ZoneOptions {
            zone: "plant-a".into(),
            extra_toml: String::new(),
            duplicate_window: "2m".into(),
            limits_toml: String::new(),
            operational_max_bytes: 100 * 1024 * 1024,
            max_object_chunk_bytes: 65536,
            reload_interval: "200ms".into(),
            crls: Vec::new(),
            pki: None,
            port: None,
            peer_fetch: vec!["to-idmz".into()],
            peer_get_objects: vec!["batch-files".into()],
            nats_jetstream: String::new(),
            node_env: Vec::new(),
            max_page: 100,
            nats_host: "127.0.0.1".into(),
            node_wrapper: Vec::new(),
        }
    }
}

/// A whole zone: PKI, nats-server, bsfg node, and client certificates for `mes` (producer),
/// `idmz-bsfg` (peer), `ops` (operator) and `stranger` (valid certificate, not in the policy).
pub struct Zone {
    pub dir: tempfile::TempDir,
    pub pki: Arc<Pki>,
    pub nats: NatsServer,
    pub node: Process,
    pub port: u16,
    pub config_path: PathBuf,
    pub node_cert: CertFiles,
    pub options: ZoneOptions,
}

pub const PRODUCER: &str = "mes";
pub const PEER: &str = "idmz-bsfg";
pub const OPERATOR: &str = "ops";
pub const STRANGER: &str = "stranger";

impl Zone {
    pub fn start() -> Zone {
        Self::start_with(ZoneOptions::default())
    }

    pub fn start_with(options: ZoneOptions) -> Zone {
        let dir = tempfile::tempdir().expect("temp dir");
        let pki = options
            .pki
            .clone()
            .unwrap_or_else(|| Arc::new(Pki::new(&dir.path().join("pki"), "bsfg test CA")));
        let node_cert = pki.issue(&format!("{}-bsfg", options.zone));
        for name in [PRODUCER, PEER, OPERATOR, STRANGER] {
            let files = pki.issue(name);
            std::fs::copy(&files.cert, pki.dir.join(format!("{name}.pem"))).expect("copy cert");
            std::fs::copy(&files.key, pki.dir.join(format!("{name}.key"))).expect("copy key");
        }
        let nats = NatsServer::start_with(
            &dir.path().join("nats"),
            free_port(),
            &options.nats_jetstream,
        );
        let port = options.port.unwrap_or_else(free_port);
        let config_path = dir.path().join("bsfg.toml");
        let mut zone = Zone {
            node: Process::spawn("placeholder", {
                let mut c = Command::new("true");
                c.arg("x");
                c
            }),
            dir,
            pki,
            nats,
            port,
            config_path,
            node_cert,
            options,
        };
        zone.write_config();
        zone.node = zone.start_node();
        zone
    }

    pub fn config_text(&self) -> String {
        let o = &self.options;
        let nats = format!("nats://{}:{}", o.nats_host, self.nats.port);
        format!(
            r#"zone = "{zone}"
[listen]
address = "127.0.0.1:{port}"
[tls]
certificate = "{cert}"
private_key = "{key}"
client_ca = "{ca}"
reload_interval = "{reload}"
crls = [{crls}]
[nats]
url = "{nats}"
[limits]
max_request_bytes = 1048576
max_fact_bytes = 65536
max_page = {max_page}
max_wait = "5s"
max_object_chunk_bytes = {max_chunk}
header_timeout = "2s"
body_timeout = "2s"
{limits}
[categories.operational]
duplicate_window = "{dup}"
max_bytes = {operational_max_bytes}
[[consumers]]
name = "to-idmz"
category = "operational"
max_ack_pending = 50
[[consumers]]
name = "audit-to-idmz"
category = "audit"
[[buckets]]
name = "batch-files"
[[buckets]]
name = "document-files"
[[access]]
identity = "{PRODUCER}"
append = ["operational", "audit", "telemetry", "documents"]
assert_zones = ["{zone}"]
put_objects = ["batch-files", "document-files"]
[[access]]
identity = "{PEER}"
fetch = [{peer_fetch}]
get_objects = [{peer_get_objects}]
[[access]]
identity = "{OPERATOR}"
operator = true
{extra}
"#,
            zone = o.zone,
            port = self.port,
            cert = self.node_cert.cert.display(),
            key = self.node_cert.key.display(),
            ca = self.pki.ca_path.display(),
            nats = nats,
            dup = o.duplicate_window,
            limits = o.limits_toml,
            operational_max_bytes = o.operational_max_bytes,
            reload = o.reload_interval,
            max_page = o.max_page,
            max_chunk = o.max_object_chunk_bytes,
            peer_fetch = o
                .peer_fetch
                .iter()
                .map(|c| format!("\"{c}\""))
                .collect::<Vec<_>>()
                .join(", "),
            peer_get_objects = o
                .peer_get_objects
                .iter()
                .map(|b| format!("\"{b}\""))
                .collect::<Vec<_>>()
                .join(", "),
            crls = o
                .crls
                .iter()
                .map(|p| format!("\"{}\"", p.display()))
                .collect::<Vec<_>>()
                .join(", "),
            extra = o.extra_toml,
        )
    }

    pub fn write_config(&self) {
        std::fs::write(&self.config_path, self.config_text()).expect("write bsfg.toml");
    }

    pub fn start_node(&self) -> Process {
        let mut command = match self.options.node_wrapper.split_first() {
            Some((program, args)) => {
                let mut c = Command::new(program);
                c.args(args).arg(bsfg_binary());
                c
            }
            None => Command::new(bsfg_binary()),
        };
        command
            .arg("serve")
            .arg("--config")
            .arg(&self.config_path)
            .env("RUST_LOG", "info,async_nats=warn")
            .envs(self.options.node_env.iter().map(|(k, v)| (k, v)));
        let process = Process::spawn("bsfg", command);
        assert!(
            process.wait_for_log("bsfg node serving", Duration::from_secs(20)),
            "bsfg did not start:\n{}",
            process.log()
        );
        process
    }

    /// Issues a client certificate for `name` as `pki/<name>.pem` / `.key` (for identities a
    /// test adds to the policy through `extra_toml`).
    pub fn issue_client(&self, name: &str) {
        let files = self.pki.issue(name);
        std::fs::copy(&files.cert, self.pki.dir.join(format!("{name}.pem"))).expect("copy cert");
        std::fs::copy(&files.key, self.pki.dir.join(format!("{name}.key"))).expect("copy key");
    }

    /// kill -9 the node and start it again with the same config.
    pub fn restart_node(&mut self) {
        self.node.kill();
        self.node = self.start_node();
    }

    pub fn url(&self) -> String {
        format!("https://127.0.0.1:{}", self.port)
    }

    /// curl with `name`'s client certificate.
    pub fn curl(&self, name: &str) -> clients::Curl {
        clients::Curl {
            base: self.url(),
            ca: self.pki.ca_path.clone(),
            cert: Some(self.pki.dir.join(format!("{name}.pem"))),
            key: Some(self.pki.dir.join(format!("{name}.key"))),
            extra: Vec::new(),
        }
    }
}

/// A canonical AppendFact request in proto3 JSON.
pub fn append_json(message_id: &str, from_zone: &str, object_json: &str) -> String {
    serde_json::json!({
        "envelope": {
            "messageId": message_id,
            "fromZone": from_zone,
            "toZone": "enterprise",
            "producedAtUnixMs": "1700000000000",
        },
        "fact": {
            "subject": "batch:line-1/B-7",
            "predicate": "step_completed",
            "objectJson": object_json,
        }
    })
    .to_string()
}
