//! The node's own sandbox, proven on the running process (issue: static, sandboxed node):
//! no_new_privs, seccomp in filter mode, every capability set empty, a file outside the landlock
//! rules refused, a syscall outside the seccomp policy fatal — while RPCs and replication work.
//!
//! The triggers are compiled in only with the `sandbox-selftest` feature (`make test` enables it;
//! release and image builds do not). `BSFG_BIN` selects the binary, e.g. the static musl build.

mod common;

use common::{
    OPERATOR, PEER, PRODUCER, Zone, ZoneOptions, append_json,
    chain::{start_chain, start_chain_on},
    clients::offsets,
    js::wait_for_count,
};
use std::time::Duration;

fn status_field(pid: u32, field: &str) -> String {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("/proc status");
    status
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{field}:")))
        .map(|v| v.trim().to_string())
        .unwrap_or_else(|| panic!("no {field} in /proc/{pid}/status"))
}

#[test]
fn the_running_node_is_confined() {
    let zone = Zone::start_with(ZoneOptions {
        node_env: vec![("BSFG_SELFTEST_OPEN".into(), "/etc/hostname".into())],
        ..Default::default()
    });
    let pid = zone.node.pid();
    assert_eq!(status_field(pid, "NoNewPrivs"), "1");
    assert_eq!(status_field(pid, "Seccomp"), "2", "seccomp filter mode");
    for set in ["CapEff", "CapPrm", "CapBnd", "CapAmb", "CapInh"] {
        assert_eq!(status_field(pid, set), "0000000000000000", "{set}");
    }
    assert!(
        zone.node.log_contains("sandbox applied"),
        "{}",
        zone.node.log()
    );
    assert!(
        std::fs::read_to_string("/etc/hostname").is_ok(),
        "the file itself is readable to the test"
    );

    // RPCs work inside the sandbox.
    let mes = zone.curl(PRODUCER);
    assert_eq!(mes.append(&append_json("s-1", "plant-a", "1")).status, 200);
    assert_eq!(offsets(&zone.curl(PEER).fetch("to-idmz", 10)), vec![1]);
    let metrics = String::from_utf8_lossy(&zone.curl(OPERATOR).request("/metrics", &[], None).body)
        .into_owned();
    assert!(metrics.contains("bsfg_sandbox_landlock_abi"), "{metrics}");
    assert!(metrics.contains("bsfg_sandbox_seccomp_kill 1"), "{metrics}");

    // Landlock: a file outside the rules cannot be opened by the running node.
    zone.node.signal("USR1");
    assert!(
        zone.node
            .wait_for_log("selftest: open refused", Duration::from_secs(5)),
        "the node opened /etc/hostname or has no selftest trigger (build with --features sandbox-selftest):\n{}",
        zone.node.log()
    );
    assert!(
        zone.node.log_contains("Permission denied"),
        "{}",
        zone.node.log()
    );
}

#[test]
fn a_syscall_outside_the_policy_kills_the_node() {
    let mut zone = Zone::start();
    assert_eq!(
        zone.curl(PRODUCER)
            .append(&append_json("k-1", "plant-a", "1"))
            .status,
        200
    );
    zone.node.signal("USR2");
    let status = zone
        .node
        .wait_exit(Duration::from_secs(5))
        .expect("the node must die");
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(
        status.signal(),
        Some(libc::SIGSYS),
        "killed by seccomp (SIGSYS), got {status:?}:\n{}",
        zone.node.log()
    );
    assert!(!zone.node.log_contains("ptrace returned"));
}

#[test]
fn replication_works_inside_the_sandbox() {
    let chain = start_chain("");
    let mes = chain.plant.curl(PRODUCER);
    for i in 1..=20 {
        assert_eq!(
            mes.append(&append_json(&format!("r-{i}"), "plant-a", &i.to_string()))
                .status,
            200
        );
    }
    wait_for_count(
        &chain.enterprise.nats.url(),
        "facts_operational",
        20,
        Duration::from_secs(30),
        "replication",
    );
    for zone in [&chain.plant, &chain.idmz, &chain.enterprise] {
        assert_eq!(status_field(zone.node.pid(), "Seccomp"), "2");
    }
}

/// Facts cross three zones and back while every node names its peers and its nats-server by
/// host name (`localhost`, resolved through `/etc/hosts` by the libc's resolver inside the
/// sandbox), as any site with DNS or `/etc/hosts` does. Both builds run this (make test: the
/// glibc debug build, then the static musl build with `BSFG_BIN`).
#[test]
fn peers_named_by_host_name_replicate_inside_the_sandbox() {
    let chain = start_chain_on("localhost", "");
    let mes = chain.plant.curl(PRODUCER);
    for i in 1..=10 {
        assert_eq!(
            mes.append(&append_json(&format!("h-{i}"), "plant-a", &i.to_string()))
                .status,
            200
        );
    }
    wait_for_count(
        &chain.enterprise.nats.url(),
        "facts_operational",
        10,
        Duration::from_secs(30),
        "replication between peers named localhost",
    );
    for zone in [&chain.plant, &chain.idmz, &chain.enterprise] {
        assert_eq!(
            status_field(zone.node.pid(), "Seccomp"),
            "2",
            "{}",
            zone.node.log()
        );
        assert!(
            zone.node.log_contains("pull started"),
            "{}",
            zone.node.log()
        );
    }
}

/// A pull whose peer, and a node whose nats-server, are named in DNS: the node (in a mount
/// namespace whose resolv.conf names a DNS server the test runs on 127.0.0.153) resolves both
/// through that server from inside its sandbox — musl's resolver binds a UDP socket, glibc's sends
/// its queries with sendmmsg after uname. Both builds run this.
#[test]
fn peers_named_in_dns_replicate_inside_the_sandbox() {
    let dns =
        common::dns::DnsServer::start("127.0.0.153", &["plant-a.bsfg.test", "nats.bsfg.test"]);
    let estate = tempfile::tempdir().expect("tempdir");
    let pki = std::sync::Arc::new(common::Pki::new(&estate.path().join("pki"), "estate CA"));
    let plant = Zone::start_with(ZoneOptions {
        pki: Some(pki.clone()),
        ..Default::default()
    });
    let resolv_conf = plant.dir.path().join("resolv.conf");
    std::fs::write(
        &resolv_conf,
        format!("nameserver {}\noptions timeout:1 attempts:3\n", dns.address),
    )
    .expect("write resolv.conf");
    let idmz = Zone::start_with(ZoneOptions {
        zone: "idmz".into(),
        pki: Some(pki),
        nats_host: "nats.bsfg.test".into(),
        node_wrapper: common::dns::resolv_conf_wrapper(&resolv_conf),
        extra_toml: format!(
            "[[pulls]]\nname = \"from-plant\"\npeer_url = \"https://plant-a.bsfg.test:{}\"\npeer_identity = \"plant-a-bsfg\"\nconsumer = \"to-idmz\"\ncategory = \"operational\"\nidle_wait = \"2s\"\n",
            plant.port
        ),
        ..Default::default()
    });
    let mes = plant.curl(PRODUCER);
    for i in 1..=5 {
        assert_eq!(
            mes.append(&append_json(&format!("d-{i}"), "plant-a", &i.to_string()))
                .status,
            200
        );
    }
    wait_for_count(
        &idmz.nats.url(),
        "facts_operational",
        5,
        Duration::from_secs(30),
        "replication from a peer named in DNS",
    );
    assert_eq!(status_field(idmz.node.pid(), "Seccomp"), "2");
    assert!(
        dns.answered.load(std::sync::atomic::Ordering::SeqCst) >= 2,
        "the node resolved nats.bsfg.test and plant-a.bsfg.test through the test's DNS server"
    );
}

/// Makes the zone's directory readable for another user (the test runs as root; its temporary
/// directories are 0700).
fn open_up(dir: &std::path::Path) {
    use std::os::unix::fs::PermissionsExt;
    let mode = if dir.is_dir() { 0o755 } else { 0o644 };
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(mode)).expect("chmod");
    if dir.is_dir() {
        for entry in std::fs::read_dir(dir).expect("read dir").flatten() {
            open_up(&entry.path());
        }
    }
}

#[test]
fn a_failed_sandbox_step_stops_the_node_unless_the_sandbox_is_explicitly_off() {
    // Run as `nobody` with a full bounding set: dropping it needs CAP_SETPCAP, which `nobody`
    // lacks, so step 2 of the sandbox fails. The node must refuse to serve — and serve only when
    // an operator turned the sandbox off on purpose, saying so loudly.
    let zone = Zone::start();
    open_up(zone.dir.path());
    let config = zone.dir.path().join("nobody.toml");
    let port = common::free_port();
    std::fs::write(
        &config,
        zone.config_text().replace(
            &format!("address = \"127.0.0.1:{}\"", zone.port),
            &format!("address = \"127.0.0.1:{port}\""),
        ),
    )
    .expect("write config");
    open_up(&config);
    let as_nobody = |extra: &[&str]| {
        let mut command = std::process::Command::new("setpriv");
        command
            .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
            .arg(common::bsfg_binary())
            .arg("serve")
            .arg("--config")
            .arg(&config)
            .args(extra)
            .env("RUST_LOG", "info,async_nats=warn");
        command
    };

    let mut refused = common::Process::spawn("bsfg-nobody", as_nobody(&[]));
    let status = refused
        .wait_exit(Duration::from_secs(20))
        .expect("the node did not stop");
    assert_eq!(status.code(), Some(69), "{}", refused.log());
    let log = refused.log();
    assert!(
        log.contains("a sandbox step failed; refusing to serve") && log.contains("bounding set"),
        "{log}"
    );
    assert!(!log.contains("bsfg node serving"), "{log}");

    let mut insecure = common::Process::spawn(
        "bsfg-nobody-insecure",
        as_nobody(&["--insecure-no-sandbox"]),
    );
    assert!(
        insecure.wait_for_log("bsfg node serving", Duration::from_secs(20)),
        "{}",
        insecure.log()
    );
    assert!(insecure.log_contains("SANDBOX DISABLED by --insecure-no-sandbox"));
    assert_eq!(status_field(insecure.pid(), "Seccomp"), "0");
    insecure.kill();
}
