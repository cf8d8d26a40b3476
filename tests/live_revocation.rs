//! Revocation and expiry take effect on connections already open (SPEC §5): a producer that keeps
//! one HTTP/2 connection is cut off within the reload interval once its certificate is revoked
//! (file change or SIGHUP) or expires; a stale CRL is still enforced and is loud (metric, log,
//! `bsfg status`); and the pull client refuses a peer whose server certificate is revoked.

mod common;

use common::observe::{eventually, metrics};

use common::{
    PRODUCER, Pki, Zone, ZoneOptions, append_json, bsfg_binary,
    h2::{H2Connection, H2Reply},
};
use std::{
    path::PathBuf,
    sync::Arc,
    time::{Duration, Instant},
};
use time::OffsetDateTime;

const APPEND: &str = "/bsfg.v1.BoundaryService/AppendFact";

/// A producer certificate with a chosen serial and validity, written next to the zone's PKI.
fn producer_cert(zone: &Zone, serial: &[u8], not_after: OffsetDateTime) -> (PathBuf, PathBuf) {
    let (cert, key) = zone
        .pki
        .ca
        .issue_until(
            PRODUCER,
            &["localhost".into()],
            OffsetDateTime::now_utc() - time::Duration::hours(1),
            not_after,
            serial,
        )
        .expect("issue");
    let cert_path = zone.dir.path().join(format!("live-{}.pem", serial[0]));
    let key_path = zone.dir.path().join(format!("live-{}.key", serial[0]));
    std::fs::write(&cert_path, cert).expect("cert");
    std::fs::write(&key_path, key).expect("key");
    (cert_path, key_path)
}

/// A zone whose config lists one CRL file, revoking nothing yet.
fn zone_with_crl(reload_interval: &str) -> (Zone, PathBuf) {
    let pki_dir = tempfile::tempdir().expect("tempdir").keep();
    let pki = Arc::new(Pki::new(&pki_dir, "bsfg test CA"));
    let crl = pki_dir.join("ca.crl.pem");
    std::fs::write(&crl, pki.ca.crl(&[]).expect("crl")).expect("write crl");
    let zone = Zone::start_with(ZoneOptions {
        pki: Some(pki),
        crls: vec![crl.clone()],
        reload_interval: reload_interval.into(),
        ..Default::default()
    });
    (zone, crl)
}

fn open(zone: &Zone, cert: &std::path::Path, key: &std::path::Path) -> H2Connection {
    H2Connection::open(zone.port, &zone.pki.ca_path, cert, key).expect("open HTTP/2")
}

/// Appends on the open connection; true when the node accepted the call.
fn served(connection: &mut H2Connection, id: &str) -> H2Reply {
    connection.call_json(APPEND, &append_json(id, "plant-a", "1"))
}

fn assert_cut_off(reply: &H2Reply, what: &str) {
    match reply {
        H2Reply::ConnectionGone(_) => {}
        H2Reply::Answered { status, body } => assert!(
            *status == 401 && body.contains("unauthenticated"),
            "{what}: the open connection must be refused, got {status} {body}"
        ),
    }
}

fn revoke_on_open_connection(reload_interval: &str, trigger: impl FnOnce(&Zone)) {
    let (zone, crl) = zone_with_crl(reload_interval);
    let serial = [0x21u8; 16];
    let not_after = OffsetDateTime::now_utc() + time::Duration::days(30);
    let (cert, key) = producer_cert(&zone, &serial, not_after);
    let mut connection = open(&zone, &cert, &key);
    for i in 0..3 {
        let reply = served(&mut connection, &format!("r-{i}"));
        assert_eq!(reply.status(), 200, "before revocation: {reply:?}");
    }
    std::fs::write(&crl, zone.pki.ca.crl(&[&serial]).expect("crl")).expect("revoke");
    trigger(&zone);
    assert!(
        zone.node
            .wait_for_log("TLS certificates reloaded", Duration::from_secs(5)),
        "{}",
        zone.node.log()
    );
    // Within the reload interval (plus scheduling slack) the next call on the SAME connection is
    // refused or finds the connection closed.
    std::thread::sleep(Duration::from_millis(300));
    let reply = served(&mut connection, "r-after");
    assert_cut_off(&reply, "revoked");
    assert!(
        connection.is_closed(),
        "the revoked peer's connection is closed"
    );
    assert!(
        metrics(&zone).contains("bsfg_tls_connections_closed_total{reason=\"revoked\"} 1"),
        "{}",
        metrics(&zone)
    );
    // Others keep being served.
    assert_eq!(
        zone.curl(PRODUCER)
            .append(&append_json("r-other", "plant-a", "2"))
            .status,
        200
    );
}

#[test]
fn a_certificate_revoked_by_a_crl_file_change_is_cut_off_on_its_open_connection() {
    revoke_on_open_connection("200ms", |_| {});
}

#[test]
fn a_certificate_revoked_then_sighup_is_cut_off_on_its_open_connection() {
    revoke_on_open_connection("1h", |zone| zone.node.signal("HUP"));
}

#[test]
fn an_open_connection_is_closed_when_its_certificate_expires() {
    let (zone, _crl) = zone_with_crl("1h");
    let serial = [0x22u8; 16];
    let not_after = OffsetDateTime::now_utc() + time::Duration::seconds(4);
    let (cert, key) = producer_cert(&zone, &serial, not_after);
    let mut connection = open(&zone, &cert, &key);
    assert_eq!(served(&mut connection, "e-1").status(), 200);
    let expiry = Instant::now()
        + Duration::from_secs_f64(
            (not_after - OffsetDateTime::now_utc())
                .as_seconds_f64()
                .max(0.0),
        );
    while Instant::now() + Duration::from_millis(300) < expiry {
        assert_eq!(served(&mut connection, "e-1").status(), 200, "still valid");
        std::thread::sleep(Duration::from_millis(500));
    }
    std::thread::sleep(expiry.saturating_duration_since(Instant::now()) + Duration::from_secs(1));
    let reply = served(&mut connection, "e-2");
    assert_cut_off(&reply, "expired");
    eventually(
        "the expired connection is closed and counted",
        Duration::from_secs(2),
        || {
            connection.is_closed()
                && metrics(&zone)
                    .contains("bsfg_tls_connections_closed_total{reason=\"expired\"} 1")
        },
    );
}

#[test]
fn a_stale_crl_is_still_enforced_and_loud() {
    let pki_dir = tempfile::tempdir().expect("tempdir").keep();
    let pki = Arc::new(Pki::new(&pki_dir, "bsfg test CA"));
    let serial = [0x23u8; 16];
    let now = OffsetDateTime::now_utc();
    let crl = pki_dir.join("stale.crl.pem");
    std::fs::write(
        &crl,
        pki.ca
            .crl_valid(
                &[&serial],
                now - time::Duration::days(3),
                now - time::Duration::days(1),
            )
            .expect("crl"),
    )
    .expect("write crl");
    let zone = Zone::start_with(ZoneOptions {
        pki: Some(pki),
        crls: vec![crl.clone()],
        ..Default::default()
    });
    let series = format!("bsfg_tls_crl_stale{{crl=\"{}\"}} 1", crl.display());
    eventually("the stale CRL is a metric", Duration::from_secs(5), || {
        metrics(&zone).contains(&series)
    });
    assert!(
        zone.node.log_contains("CRL is past its nextUpdate"),
        "{}",
        zone.node.log()
    );
    // Never fail open: the stale CRL still revokes.
    let (cert, key) = producer_cert(&zone, &serial, now + time::Duration::days(30));
    assert!(
        H2Connection::open(zone.port, &zone.pki.ca_path, &cert, &key)
            .and_then(|mut c| match served(&mut c, "s-1") {
                H2Reply::Answered { status: 200, .. } => Ok(()),
                other => Err(format!("{other:?}")),
            })
            .is_err(),
        "a certificate revoked by a stale CRL is still refused"
    );
    assert_eq!(
        zone.curl(PRODUCER)
            .append(&append_json("s-2", "plant-a", "1"))
            .status,
        200,
        "others are served"
    );
    let status = std::process::Command::new(bsfg_binary())
        .arg("status")
        .arg("--config")
        .arg(&zone.config_path)
        .output()
        .expect("bsfg status");
    let stdout = String::from_utf8_lossy(&status.stdout);
    assert!(stdout.contains("STALE"), "{stdout}");
    assert!(!status.status.success(), "status exits non-zero: {stdout}");
}

/// The IDMZ pulls from plant-a; once the IDMZ's CRL revokes plant-a's server certificate, the
/// pull refuses the peer (a clear error kind) and replicates nothing more.
#[test]
fn the_pull_client_refuses_a_revoked_server() {
    let estate = tempfile::tempdir().expect("tempdir");
    let pki = Arc::new(Pki::new(&estate.path().join("pki"), "estate CA"));
    let crl = estate.path().join("estate.crl.pem");
    std::fs::write(&crl, pki.ca.crl(&[]).expect("crl")).expect("write crl");
    let plant = Zone::start_with(ZoneOptions {
        pki: Some(pki.clone()),
        ..Default::default()
    });
    let idmz = Zone::start_with(ZoneOptions {
        zone: "idmz".into(),
        pki: Some(pki.clone()),
        crls: vec![crl.clone()],
        extra_toml: format!(
            "[[pulls]]\nname = \"from-plant\"\npeer_url = \"https://127.0.0.1:{}\"\npeer_identity = \"plant-a-bsfg\"\nconsumer = \"to-idmz\"\ncategory = \"operational\"\nidle_wait = \"1s\"\n",
            plant.port
        ),
        ..Default::default()
    });
    let replicated = |n: u32| {
        metrics(&idmz).contains(&format!(
            "bsfg_replication_facts_total{{pull=\"from-plant\"}} {n}"
        ))
    };
    assert_eq!(
        plant
            .curl(PRODUCER)
            .append(&append_json("p-1", "plant-a", "1"))
            .status,
        200
    );
    eventually("the first fact is pulled", Duration::from_secs(10), || {
        replicated(1)
    });

    let pem = std::fs::read(&plant.node_cert.cert).expect("plant cert");
    use rustls_pki_types::pem::PemObject;
    let der = rustls_pki_types::CertificateDer::pem_slice_iter(&pem)
        .next()
        .expect("a certificate")
        .expect("PEM");
    let (_, parsed) = x509_parser::parse_x509_certificate(der.as_ref()).expect("x509");
    let serial = parsed.raw_serial().to_vec();
    std::fs::write(&crl, pki.ca.crl(&[&serial]).expect("crl")).expect("revoke plant-a");
    assert_eq!(
        plant
            .curl(PRODUCER)
            .append(&append_json("p-2", "plant-a", "2"))
            .status,
        200
    );
    eventually(
        "the pull names the revoked peer",
        Duration::from_secs(10),
        || idmz.node.log_contains("peer_revoked"),
    );
    std::thread::sleep(Duration::from_secs(2));
    assert!(
        replicated(1),
        "nothing is pulled from a revoked server:\n{}",
        metrics(&idmz)
    );
    assert!(
        metrics(&idmz).contains("kind=\"peer_revoked\""),
        "{}",
        metrics(&idmz)
    );
}

/// A CA taken out of the bundle: its clients' open connections are cut off at the reload.
#[test]
fn a_ca_removed_from_the_bundle_cuts_off_its_clients_open_connections() {
    // No CRL here: a CRL of the first CA would leave the second CA's certificates unknown.
    let zone = Zone::start();
    let first_ca = std::fs::read_to_string(&zone.pki.ca_path).expect("ca");
    let second = Pki::new(&zone.dir.path().join("pki2"), "second CA");
    std::fs::write(&zone.pki.ca_path, format!("{first_ca}{}", second.ca.pem())).expect("bundle");
    assert!(
        zone.node
            .wait_for_log("TLS certificates reloaded", Duration::from_secs(5)),
        "{}",
        zone.node.log()
    );
    let files = second.issue(PRODUCER);
    // The client trusts the node's CA (the first); its own certificate is the second CA's.
    let client_ca = zone.dir.path().join("node-ca.pem");
    std::fs::write(&client_ca, &first_ca).expect("client ca");
    let mut connection =
        H2Connection::open(zone.port, &client_ca, &files.cert, &files.key).expect("open");
    assert_eq!(served(&mut connection, "ca-1").status(), 200);
    std::fs::write(&zone.pki.ca_path, &first_ca).expect("drop the second CA");
    eventually(
        "the second CA's client is cut off",
        Duration::from_secs(5),
        || {
            matches!(served(&mut connection, "ca-2"), H2Reply::ConnectionGone(_))
                || connection.is_closed()
        },
    );
    assert!(
        metrics(&zone).contains("bsfg_tls_connections_closed_total{reason=\"unknown_ca\"} 1"),
        "{}",
        metrics(&zone)
    );
}
