//! Real clients driven as processes: `curl` for raw HTTP, and the Node (`@connectrpc/connect-node`)
//! and Python (`connectrpc`) Connect clients in `tests/clients/`.

use std::{
    path::PathBuf,
    process::{Command, Stdio},
};

/// What came back from one HTTP exchange.
#[derive(Debug)]
pub struct HttpReply {
    pub status: u16,
    pub headers: String,
    pub body: Vec<u8>,
    /// curl's own exit code (0 when an HTTP response arrived).
    pub curl_exit: i32,
    pub stderr: String,
}

impl HttpReply {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or(serde_json::Value::Null)
    }

    /// The Connect error code of an error body, or "" for none.
    pub fn code(&self) -> String {
        self.json()["code"].as_str().unwrap_or("").to_string()
    }

    pub fn header(&self, name: &str) -> Option<String> {
        self.headers.lines().find_map(|l| {
            let (n, v) = l.split_once(':')?;
            n.trim()
                .eq_ignore_ascii_case(name)
                .then(|| v.trim().to_string())
        })
    }
}

#[derive(Clone)]
pub struct Curl {
    pub base: String,
    pub ca: PathBuf,
    pub cert: Option<PathBuf>,
    pub key: Option<PathBuf>,
    pub extra: Vec<String>,
}

impl Curl {
    pub fn with_args(mut self, args: &[&str]) -> Self {
        self.extra.extend(args.iter().map(|s| s.to_string()));
        self
    }

    /// Runs curl against `path` with `args`, the body (if any) sent from stdin.
    pub fn request(&self, path: &str, args: &[&str], body: Option<&[u8]>) -> HttpReply {
        let dir = tempfile::tempdir().expect("temp dir");
        let headers = dir.path().join("headers");
        let out = dir.path().join("body");
        let mut command = Command::new("curl");
        command
            .arg("-sS")
            .arg("--max-time")
            .arg("20")
            .arg("--cacert")
            .arg(&self.ca)
            .arg("-D")
            .arg(&headers)
            .arg("-o")
            .arg(&out)
            .arg("-w")
            .arg("%{http_code}");
        if let (Some(cert), Some(key)) = (&self.cert, &self.key) {
            command.arg("--cert").arg(cert).arg("--key").arg(key);
        }
        command.args(&self.extra).args(args);
        if body.is_some() {
            command.arg("--data-binary").arg("@-");
        }
        command.arg(format!("{}{}", self.base, path));
        command
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = command.spawn().expect("run curl");
        if let Some(body) = body {
            use std::io::Write;
            let mut stdin = child.stdin.take().expect("curl stdin");
            stdin.write_all(body).expect("write curl stdin");
        }
        drop(child.stdin.take());
        let output = child.wait_with_output().expect("curl output");
        HttpReply {
            status: String::from_utf8_lossy(&output.stdout)
                .trim()
                .parse()
                .unwrap_or(0),
            headers: std::fs::read_to_string(&headers).unwrap_or_default(),
            body: std::fs::read(&out).unwrap_or_default(),
            curl_exit: output.status.code().unwrap_or(-1),
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        }
    }

    /// POST a JSON request to a BoundaryService or ArtifactService method.
    pub fn post_json(&self, method_path: &str, json: &str) -> HttpReply {
        self.request(
            method_path,
            &["-H", "content-type: application/json"],
            Some(json.as_bytes()),
        )
    }

    pub fn append(&self, json: &str) -> HttpReply {
        self.post_json("/bsfg.v1.BoundaryService/AppendFact", json)
    }

    pub fn fetch(&self, consumer: &str, limit: u32) -> HttpReply {
        self.post_json(
            "/bsfg.v1.BoundaryService/FetchFacts",
            &serde_json::json!({"consumerName": consumer, "limit": limit}).to_string(),
        )
    }

    pub fn confirm(&self, consumer: &str, offset: u64) -> HttpReply {
        self.post_json(
            "/bsfg.v1.BoundaryService/ConfirmReceipt",
            &serde_json::json!({"consumerName": consumer, "offset": offset.to_string()})
                .to_string(),
        )
    }
}

/// Offsets of a FetchFacts JSON reply.
pub fn offsets(reply: &HttpReply) -> Vec<u64> {
    reply.json()["facts"]
        .as_array()
        .map(|facts| {
            facts
                .iter()
                .filter_map(|f| f["offset"].as_str().and_then(|s| s.parse().ok()))
                .collect()
        })
        .unwrap_or_default()
}

/// The message ids of a FetchFacts page (JSON), in page order.
pub fn message_ids(reply: &HttpReply) -> Vec<String> {
    reply.json()["facts"]
        .as_array()
        .map(|facts| {
            facts
                .iter()
                .map(|f| {
                    f["envelope"]["messageId"]
                        .as_str()
                        .unwrap_or("")
                        .to_string()
                })
                .collect()
        })
        .unwrap_or_default()
}

/// Which Connect client program to run.
#[derive(Debug, Clone, Copy)]
pub enum ConnectClient {
    Node,
    Python,
}

pub struct ClientCall<'a> {
    pub service: &'a str,
    pub method: &'a str,
    pub codec: &'a str,
    pub http: &'a str,
    pub gzip: bool,
    pub request: String,
}

/// Runs one call with a real Connect client; returns its one JSON line:
/// `{"ok": response}` or `{"error": {"code", "message"}}`.
pub fn connect_call(
    client: ConnectClient,
    url: &str,
    ca: &PathBuf,
    cert: &PathBuf,
    key: &PathBuf,
    call: &ClientCall,
) -> serde_json::Value {
    let root = super::manifest_dir();
    let mut command = match client {
        ConnectClient::Node => {
            let script = std::env::var_os("BSFG_NODE_CLIENT")
                .map(PathBuf::from)
                .unwrap_or_else(|| root.join("tests/clients/node/call.mjs"));
            let mut c = Command::new("node");
            c.arg(script);
            c
        }
        ConnectClient::Python => {
            let python = std::env::var_os("BSFG_PY")
                .map(PathBuf::from)
                .unwrap_or_else(|| root.join(".tools/venv/bin/python"));
            let script = std::env::var_os("BSFG_PY_CLIENT")
                .map(PathBuf::from)
                .unwrap_or_else(|| root.join("tests/clients/python/call.py"));
            let mut c = Command::new(python);
            c.arg(script);
            c
        }
    };
    command
        .arg("--url")
        .arg(url)
        .arg("--ca")
        .arg(ca)
        .arg("--cert")
        .arg(cert)
        .arg("--key")
        .arg(key)
        .arg("--service")
        .arg(call.service)
        .arg("--method")
        .arg(call.method)
        .arg("--codec")
        .arg(call.codec)
        .arg("--http")
        .arg(call.http)
        .arg("--request")
        .arg(&call.request);
    if call.gzip {
        command.arg("--gzip");
    }
    let output = command
        .output()
        .unwrap_or_else(|e| panic!("cannot run the {client:?} client: {e}"));
    let stdout = String::from_utf8_lossy(&output.stdout);
    let line = stdout.lines().last().unwrap_or("");
    serde_json::from_str(line).unwrap_or_else(|_| {
        panic!(
            "{client:?} client printed no JSON (exit {:?}):\nstdout: {stdout}\nstderr: {}",
            output.status.code(),
            String::from_utf8_lossy(&output.stderr)
        )
    })
}
