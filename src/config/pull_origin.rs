//! `pulls[].accept_from_zones`: which origin zones a peer may relay (SPEC §6 step 3). The IDMZ
//! pulling from plant-a accepts only `plant-a`, so a compromised plant cannot forge facts from
//! another zone. Left out, a pull accepts any origin (configs written before the key existed keep
//! working) and the node warns at start; an empty list would stop every fact and is refused.

use super::validate::Problems;
use crate::fact::is_zone_name;

pub(super) fn accept_from_zones(
    p: &mut Problems,
    index: usize,
    zones: &Option<Vec<String>>,
) -> Option<Vec<String>> {
    let zones = zones.as_ref()?;
    let key = format!("pulls[{index}].accept_from_zones");
    if zones.is_empty() {
        p.add(
            &key,
            zones,
            "must name at least one zone (leave the key out to accept facts from any zone)",
        );
    }
    for (j, zone) in zones.iter().enumerate() {
        if !is_zone_name(zone) {
            p.add(
                format!("{key}[{j}]"),
                zone,
                "not a zone name (a-z, 0-9, '-', starting with a letter)",
            );
        }
    }
    Some(zones.clone())
}

#[cfg(test)]
mod tests {
    use crate::config::Config;
    use std::path::Path;

    fn parse(accept: &str) -> Result<Config, crate::config::ConfigError> {
        Config::parse(
            Path::new("bsfg.toml"),
            &format!(
                r#"zone = "idmz"
[listen]
address = "127.0.0.1:9443"
[tls]
certificate = "n.pem"
private_key = "n.key"
client_ca = "ca.pem"
[[pulls]]
name = "from-plant"
peer_url = "https://127.0.0.1:9444"
peer_identity = "plant-a-bsfg"
consumer = "to-idmz"
category = "operational"
{accept}
"#
            ),
        )
    }

    #[test]
    fn accept_from_zones_is_optional_and_checked() {
        let config = parse("accept_from_zones = [\"plant-a\"]").expect("valid");
        assert_eq!(
            config.pulls[0].accept_from_zones,
            Some(vec!["plant-a".to_string()])
        );
        assert_eq!(parse("").expect("valid").pulls[0].accept_from_zones, None);
        let problems = |accept: &str| match parse(accept) {
            Ok(_) => Vec::new(),
            Err(e) => e.problems.into_iter().map(|p| p.key).collect(),
        };
        assert_eq!(
            problems("accept_from_zones = []"),
            vec!["pulls[0].accept_from_zones"]
        );
        assert_eq!(
            problems("accept_from_zones = [\"Plant A\"]"),
            vec!["pulls[0].accept_from_zones[0]"]
        );
    }
}
