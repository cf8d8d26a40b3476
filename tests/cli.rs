//! The command line: `check-config` reports every problem with file, key and value; `serve`
//! refuses a bad config or a missing identity with a clear message; `dev-pki` makes a PKI that
//! `check-config` accepts.

use std::process::Command;

fn bsfg(args: &[&str]) -> (i32, String, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_bsfg"))
        .args(args)
        .output()
        .expect("run bsfg");
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

const BAD: &str = r#"
zone = "Plant A"
[listen]
address = "localhost:9443"
[tls]
certificate = "/nonexistent/node.pem"
private_key = "/nonexistent/node.key"
client_ca = "/nonexistent/ca.pem"
reload_interval = "5 minutes"
[limits]
max_page = 0
[categories.opertional]
max_bytes = 10
[categories.audit]
safety_critical = true
max_bytes = -1
[[consumers]]
name = "to idmz"
category = "audit"
[[access]]
identity = "mes"
append = ["operational"]
fetch = ["nope"]
operate = ["reboot"]
"#;

#[test]
fn check_config_reports_every_problem_with_file_key_and_value() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("bsfg.toml");
    std::fs::write(&path, BAD).expect("write");
    let (code, _, stderr) = bsfg(&["check-config", "--config", path.to_str().expect("path")]);
    assert_eq!(code, 78, "EX_CONFIG: {stderr}");
    let file = path.display().to_string();
    for expected in [
        "zone = \"Plant A\"",
        "listen.address = \"localhost:9443\"",
        "tls.reload_interval = \"5 minutes\"",
        "limits.max_page = 0",
        "categories.opertional = \"opertional\": unknown category",
        "categories.audit.max_bytes = -1",
        "consumers[0].name = \"to idmz\"",
        "access[0].assert_zones",
        "access[0].operate[0] = \"reboot\": unknown operation (expected one of: status, skip_gap, firmware_status, firmware_install, firmware_approve)",
        "access[0].fetch[0] = \"nope\"",
    ] {
        assert!(
            stderr.contains(expected),
            "missing {expected:?} in:\n{stderr}"
        );
    }
    assert!(
        stderr.lines().filter(|l| l.contains(&file)).count() >= 9,
        "every line names the file:\n{stderr}"
    );
}

#[test]
fn unknown_keys_and_syntax_errors_name_the_line() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("bsfg.toml");
    std::fs::write(
        &path,
        "zone = \"plant-a\"\n[listen]\naddress = \"127.0.0.1:1\"\nport = 9443\n",
    )
    .expect("write");
    let (code, _, stderr) = bsfg(&["check-config", "--config", path.to_str().expect("path")]);
    assert_eq!(code, 78);
    assert!(
        stderr.contains("line 4") && stderr.contains("port"),
        "{stderr}"
    );

    let (code, _, stderr) = bsfg(&["check-config", "--config", "/nonexistent/bsfg.toml"]);
    assert_eq!(code, 78);
    assert!(
        stderr.contains("/nonexistent/bsfg.toml") && stderr.contains("cannot read"),
        "{stderr}"
    );
}

#[test]
fn dev_pki_and_a_missing_certificate() {
    let dir = tempfile::tempdir().expect("tempdir");
    let pki = dir.path().join("pki");
    let (code, stdout, stderr) = bsfg(&[
        "dev-pki",
        "--out",
        pki.to_str().expect("path"),
        "--zone",
        "plant-a",
        "--client",
        "mes",
    ]);
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.contains("plant-a-bsfg.pem"), "{stdout}");
    let config = format!(
        "zone = \"plant-a\"\n[listen]\naddress = \"127.0.0.1:0\"\n[tls]\ncertificate = \"{p}/plant-a-bsfg.pem\"\nprivate_key = \"{p}/plant-a-bsfg.key\"\nclient_ca = \"{p}/ca.pem\"\n",
        p = pki.display()
    );
    let path = dir.path().join("bsfg.toml");
    std::fs::write(&path, &config).expect("write");
    let (code, stdout, stderr) = bsfg(&["check-config", "--config", path.to_str().expect("path")]);
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.contains("ok"), "{stdout}");

    // The private key is readable only by its owner.
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(pki.join("mes.key"))
        .expect("key")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);

    // Without its identity the node refuses to serve, and says why.
    std::fs::remove_file(pki.join("plant-a-bsfg.key")).expect("remove key");
    let (code, _, stderr) = bsfg(&["check-config", "--config", path.to_str().expect("path")]);
    assert_eq!(code, 78);
    assert!(stderr.contains("plant-a-bsfg.key"), "{stderr}");
    let (code, _, stderr) = bsfg(&["serve", "--config", path.to_str().expect("path")]);
    assert_eq!(code, 78, "{stderr}");
    assert!(
        stderr.contains("plant-a-bsfg.key") && stderr.contains("refusing to serve"),
        "{stderr}"
    );
}

/// Durable means durable (issue 8, item 6): a pull confirms facts to its peer, so the category it
/// writes into must be on disk; a safety_critical category never evicts, so it has no max_age.
const NOT_DURABLE: &str = r#"
zone = "idmz"
[listen]
address = "127.0.0.1:9443"
[tls]
certificate = "/nonexistent/node.pem"
private_key = "/nonexistent/node.key"
client_ca = "/nonexistent/ca.pem"
[categories.audit]
safety_critical = true
max_bytes = 1000000
max_age = "30d"
storage = "memory"
[categories.documents]
storage = "memory"
[categories.telemetry]
storage = "memory"
[[pulls]]
name = "from-enterprise"
peer_url = "https://127.0.0.1:9444"
peer_identity = "enterprise-bsfg"
consumer = "docs-to-idmz"
category = "documents"
"#;

#[test]
fn check_config_refuses_memory_storage_where_facts_must_be_durable() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("bsfg.toml");
    std::fs::write(&path, NOT_DURABLE).expect("write");
    let (code, _, stderr) = bsfg(&["check-config", "--config", path.to_str().expect("path")]);
    assert_eq!(code, 78, "EX_CONFIG: {stderr}");
    let file = path.display().to_string();
    for expected in [
        format!("{file}: categories.audit.storage = \"memory\": a safety_critical category"),
        format!("{file}: categories.audit.max_age = \"30d\": a safety_critical category"),
        format!("{file}: categories.documents.storage = \"memory\": pull \"from-enterprise\""),
    ] {
        assert!(
            stderr.contains(&expected),
            "missing {expected:?} in:\n{stderr}"
        );
    }
    // A category no pull writes into may live in memory (e.g. telemetry a local historian reads).
    assert!(!stderr.contains("categories.telemetry"), "{stderr}");
    assert!(stderr.contains(": 3 problems"), "{stderr}");
}

#[test]
fn check_config_warns_about_a_pull_that_accepts_any_origin() {
    let dir = tempfile::tempdir().expect("tempdir");
    let pki = dir.path().join("pki");
    let (code, _, stderr) = bsfg(&[
        "dev-pki",
        "--out",
        pki.to_str().expect("path"),
        "--zone",
        "idmz",
    ]);
    assert_eq!(code, 0, "{stderr}");
    let pull = |name: &str, accept: &str| {
        format!(
            "[[pulls]]\nname = \"{name}\"\npeer_url = \"https://127.0.0.1:9444\"\npeer_identity = \"plant-a-bsfg\"\nconsumer = \"to-idmz\"\ncategory = \"operational\"\n{accept}"
        )
    };
    let config = format!(
        "zone = \"idmz\"\n[listen]\naddress = \"127.0.0.1:0\"\n[tls]\ncertificate = \"{p}/idmz-bsfg.pem\"\nprivate_key = \"{p}/idmz-bsfg.key\"\nclient_ca = \"{p}/ca.pem\"\n{}{}",
        pull("open", ""),
        pull("strict", "accept_from_zones = [\"plant-a\"]\n"),
        p = pki.display()
    );
    let path = dir.path().join("bsfg.toml");
    std::fs::write(&path, &config).expect("write");
    let (code, stdout, stderr) = bsfg(&["check-config", "--config", path.to_str().expect("path")]);
    assert_eq!(
        code, 0,
        "a missing accept_from_zones is a warning: {stderr}"
    );
    assert!(stdout.contains("ok"), "{stdout}");
    assert!(
        stderr.contains("warning: pulls[0].accept_from_zones is not set: pull \"open\""),
        "{stderr}"
    );
    assert!(!stderr.contains("pulls[1]"), "{stderr}");
}
