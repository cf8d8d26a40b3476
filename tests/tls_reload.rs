//! Certificates and the CA bundle reload without a restart and without dropping the listener:
//! on file change and on SIGHUP. A broken file keeps the previous configuration in force.

mod common;

use common::{PRODUCER, Pki, Zone, ZoneOptions, append_json, clients::Curl};
use std::time::{Duration, Instant};

fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(10) {
        if check() {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("timed out waiting until {what}");
}

fn client_of(zone: &Zone, pki: &Pki, name: &str, ca: &std::path::Path) -> Curl {
    let files = pki.issue(name);
    Curl {
        base: zone.url(),
        ca: ca.to_path_buf(),
        cert: Some(files.cert),
        key: Some(files.key),
        extra: Vec::new(),
    }
}

#[test]
fn ca_bundle_and_node_certificate_reload_on_file_change() {
    let zone = Zone::start();
    let pid = zone.node.pid();
    let second = Pki::new(&zone.dir.path().join("pki2"), "second CA");
    let newcomer = client_of(&zone, &second, PRODUCER, &zone.pki.ca_path);
    let refused = newcomer.append(&append_json("n-1", "plant-a", "1"));
    assert_ne!(refused.curl_exit, 0, "not trusted yet: {refused:?}");

    // Trust both CAs: clients of the second CA are accepted, the first CA's still are.
    let bundle = format!(
        "{}{}",
        std::fs::read_to_string(&zone.pki.ca_path).expect("ca"),
        second.ca.pem()
    );
    std::fs::write(&zone.pki.ca_path, bundle).expect("write bundle");
    eventually("a client of the second CA is accepted", || {
        newcomer.append(&append_json("n-1", "plant-a", "1")).status == 200
    });
    assert_eq!(
        zone.curl(PRODUCER)
            .append(&append_json("n-2", "plant-a", "2"))
            .status,
        200
    );

    // Replace the node's own certificate with one from the second CA: a client that trusts only
    // the second CA can now verify the server.
    let node = second.issue("plant-a-bsfg");
    std::fs::copy(&node.key, &zone.node_cert.key).expect("key");
    std::fs::copy(&node.cert, &zone.node_cert.cert).expect("cert");
    let strict = Curl {
        ca: second.ca_path.clone(),
        ..newcomer.clone()
    };
    eventually("the new server certificate is served", || {
        strict.append(&append_json("n-3", "plant-a", "3")).status == 200
    });

    assert_eq!(zone.node.pid(), pid, "same process");
    assert!(
        zone.node.log_contains("TLS certificates reloaded"),
        "{}",
        zone.node.log()
    );
}

#[test]
fn sighup_reloads_and_a_broken_file_keeps_the_old_certificates() {
    let zone = Zone::start_with(ZoneOptions {
        reload_interval: "1h".into(),
        ..Default::default()
    });
    let second = Pki::new(&zone.dir.path().join("pki2"), "second CA");
    let newcomer = client_of(&zone, &second, PRODUCER, &zone.pki.ca_path);
    let bundle = format!(
        "{}{}",
        std::fs::read_to_string(&zone.pki.ca_path).expect("ca"),
        second.ca.pem()
    );
    std::fs::write(&zone.pki.ca_path, bundle).expect("write bundle");
    std::thread::sleep(Duration::from_millis(500));
    assert_ne!(
        newcomer.append(&append_json("h-1", "plant-a", "1")).status,
        200,
        "no reload without SIGHUP yet"
    );
    zone.node.signal("HUP");
    eventually("SIGHUP reloaded the bundle", || {
        newcomer.append(&append_json("h-1", "plant-a", "1")).status == 200
    });

    // Clients keep their own copy of the CA: the node's file is about to be broken.
    let client_ca = zone.dir.path().join("client-ca.pem");
    std::fs::copy(&zone.pki.ca_path, &client_ca).expect("copy ca");
    let newcomer = Curl {
        ca: client_ca.clone(),
        ..newcomer
    };
    let veteran = Curl {
        ca: client_ca,
        ..zone.curl(PRODUCER)
    };
    std::fs::write(&zone.pki.ca_path, "not a certificate").expect("break the bundle");
    zone.node.signal("HUP");
    eventually("the failed reload is logged", || {
        zone.node.log_contains("TLS reload failed")
    });
    assert_eq!(
        newcomer.append(&append_json("h-2", "plant-a", "2")).status,
        200,
        "old configuration still serves"
    );
    assert_eq!(
        veteran.append(&append_json("h-3", "plant-a", "3")).status,
        200
    );
}
