//! Revoked client certificates (CRL) are refused at the handshake and counted; the CRL reloads
//! like the certificates do.

mod common;

use common::{OPERATOR, PRODUCER, Zone, ZoneOptions, append_json, clients::Curl};
use std::time::{Duration, Instant};
use time::OffsetDateTime;

#[test]
fn a_revoked_certificate_is_refused_and_counted() {
    let dir = tempfile::tempdir().expect("tempdir");
    let crl_path = dir.path().join("ca.crl.pem");
    // The zone's CA is made inside Zone::start, so the CRL it signs is added afterwards.
    let mut zone = Zone::start_with(ZoneOptions::default());
    let serial = [0x11u8; 16];
    let (cert, key) = zone
        .pki
        .ca
        .issue_with_serial(
            PRODUCER,
            &["localhost".into()],
            OffsetDateTime::now_utc() - time::Duration::hours(1),
            30,
            &serial,
        )
        .expect("issue");
    let cert_path = dir.path().join("revoked.pem");
    let key_path = dir.path().join("revoked.key");
    std::fs::write(&cert_path, cert).expect("cert");
    std::fs::write(&key_path, key).expect("key");
    let revoked = Curl {
        base: zone.url(),
        ca: zone.pki.ca_path.clone(),
        cert: Some(cert_path),
        key: Some(key_path),
        extra: vec![],
    };
    assert_eq!(
        revoked.append(&append_json("c-1", "plant-a", "1")).status,
        200,
        "valid before revocation"
    );

    // Revoke it: write the CRL and point the config at it, then restart the node on it.
    std::fs::write(&crl_path, zone.pki.ca.crl(&[&serial]).expect("crl")).expect("write crl");
    zone.options.crls = vec![crl_path];
    zone.write_config();
    zone.restart_node();

    let refused = revoked.append(&append_json("c-2", "plant-a", "2"));
    assert_ne!(
        refused.curl_exit, 0,
        "a revoked certificate must fail the handshake: {refused:?}"
    );
    assert_eq!(refused.status, 0);
    assert_eq!(
        zone.curl(PRODUCER)
            .append(&append_json("c-3", "plant-a", "3"))
            .status,
        200,
        "others still served"
    );
    let start = Instant::now();
    loop {
        let metrics =
            String::from_utf8_lossy(&zone.curl(OPERATOR).request("/metrics", &[], None).body)
                .into_owned();
        if metrics.contains("bsfg_tls_handshake_failures_total{reason=\"revoked\"} 1") {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "revocation not counted:\n{metrics}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(zone.node.log_contains("revoked"), "{}", zone.node.log());
}
