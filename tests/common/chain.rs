//! Three zones on loopback sharing one estate CA: plant-a ⇄ idmz ⇄ enterprise.
//! Upstream (plant → enterprise) facts travel in `operational`; downstream (enterprise → plant)
//! in `documents`, so no fact echoes back. Each pull accepts only the origins upstream of it.

use super::{Pki, Zone, ZoneOptions, free_port};
use std::sync::Arc;

pub struct Chain {
    pub plant: Zone,
    pub idmz: Zone,
    pub enterprise: Zone,
    _estate: tempfile::TempDir,
}

fn pull(
    host: &str,
    name: &str,
    port: u16,
    identity: &str,
    consumer: &str,
    category: &str,
    origins: &str,
) -> String {
    format!(
        "[[pulls]]\nname = \"{name}\"\npeer_url = \"https://{host}:{port}\"\npeer_identity = \"{identity}\"\nconsumer = \"{consumer}\"\ncategory = \"{category}\"\naccept_from_zones = [{origins}]\npage_size = 500\nidle_wait = \"2s\"\n"
    )
}

/// `idmz_extra` is appended to the IDMZ zone's config (extra pulls, consumers, access).
pub fn start_chain(idmz_extra: &str) -> Chain {
    start_chain_on("127.0.0.1", idmz_extra)
}

/// As [`start_chain`], with every peer URL naming its peer by `host` (e.g. `localhost`, as a site
/// with DNS or `/etc/hosts` does).
pub fn start_chain_on(host: &str, idmz_extra: &str) -> Chain {
    let estate = tempfile::tempdir().expect("tempdir");
    let pki = Arc::new(Pki::new(&estate.path().join("pki"), "estate CA"));
    let (p_plant, p_idmz, p_enterprise) = (free_port(), free_port(), free_port());
    let zone = |name: &str, port: u16, extra: String, peer_fetch: &[&str]| {
        Zone::start_with(ZoneOptions {
            zone: name.into(),
            extra_toml: extra,
            pki: Some(pki.clone()),
            port: Some(port),
            peer_fetch: peer_fetch.iter().map(|s| s.to_string()).collect(),
            nats_host: host.into(),
            ..Default::default()
        })
    };
    let plant = zone(
        "plant-a",
        p_plant,
        pull(
            host,
            "from-idmz",
            p_idmz,
            "idmz-bsfg",
            "to-plant",
            "documents",
            r#""enterprise", "idmz""#,
        ),
        &["to-idmz"],
    );
    let idmz = zone(
        "idmz",
        p_idmz,
        format!(
            r#"
[[consumers]]
name = "to-enterprise"
category = "operational"
[[consumers]]
name = "to-plant"
category = "documents"
[[access]]
identity = "enterprise-bsfg"
fetch = ["to-enterprise"]
get_objects = ["batch-files"]
[[access]]
identity = "plant-a-bsfg"
fetch = ["to-plant"]
get_objects = ["batch-files"]
{}{}{idmz_extra}"#,
            pull(
                host,
                "from-plant",
                p_plant,
                "plant-a-bsfg",
                "to-idmz",
                "operational",
                r#""plant-a""#
            ),
            pull(
                host,
                "from-enterprise",
                p_enterprise,
                "enterprise-bsfg",
                "docs-to-idmz",
                "documents",
                r#""enterprise""#
            ),
        ),
        &["to-idmz"],
    );
    let enterprise = zone(
        "enterprise",
        p_enterprise,
        format!(
            "[[consumers]]\nname = \"docs-to-idmz\"\ncategory = \"documents\"\n{}",
            pull(
                host,
                "from-idmz",
                p_idmz,
                "idmz-bsfg",
                "to-enterprise",
                "operational",
                r#""plant-a", "idmz""#
            )
        ),
        &["docs-to-idmz"],
    );
    Chain {
        plant,
        idmz,
        enterprise,
        _estate: estate,
    }
}

/// plant-a, and an idmz zone pulling from it with `pulls(plant_port)` added to its config; plant-a
/// serves `peer_fetch` to idmz and adds `plant_extra` to its own config. The estate's directory
/// (its PKI) comes back with them, to be kept alive as long as they are.
pub fn start_pair(
    peer_fetch: &[&str],
    plant_extra: &str,
    pulls: impl Fn(u16) -> String,
) -> (Zone, Zone, tempfile::TempDir) {
    let estate = tempfile::tempdir().expect("tempdir");
    let pki = Arc::new(Pki::new(&estate.path().join("pki"), "estate CA"));
    let plant_port = free_port();
    let plant = Zone::start_with(ZoneOptions {
        zone: "plant-a".into(),
        pki: Some(pki.clone()),
        port: Some(plant_port),
        peer_fetch: peer_fetch.iter().map(|c| c.to_string()).collect(),
        extra_toml: plant_extra.into(),
        ..Default::default()
    });
    let idmz = Zone::start_with(ZoneOptions {
        zone: "idmz".into(),
        pki: Some(pki),
        extra_toml: pulls(plant_port),
        ..Default::default()
    });
    (plant, idmz, estate)
}
