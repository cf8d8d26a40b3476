//! `bsfg dev-pki`: a development CA and certificates for a node and its clients, so a new user
//! needs no openssl recipe. Not for production: the CA key is written next to the certificates.

use rcgen::{
    BasicConstraints, CertificateParams, CertificateRevocationListParams, DistinguishedName,
    DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyIdMethod, KeyPair, KeyUsagePurpose,
    RevocationReason, RevokedCertParams, SanType, SerialNumber,
};
use std::{
    fs,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    path::Path,
};
use time::{Duration, OffsetDateTime};

#[derive(Debug, thiserror::Error)]
pub enum PkiError {
    #[error("cannot generate {what}: {source}")]
    Generate { what: String, source: rcgen::Error },
    #[error("cannot write {path}: {source}")]
    Write {
        path: String,
        source: std::io::Error,
    },
    #[error("{0}")]
    Input(String),
}

fn generate(what: &str) -> impl Fn(rcgen::Error) -> PkiError + '_ {
    move |source| PkiError::Generate {
        what: what.to_string(),
        source,
    }
}

fn write(dir: &Path, name: &str, contents: &str, private: bool) -> Result<(), PkiError> {
    use std::os::unix::fs::PermissionsExt;
    let path = dir.join(name);
    fs::write(&path, contents).map_err(|source| PkiError::Write {
        path: path.display().to_string(),
        source,
    })?;
    if private {
        fs::set_permissions(&path, fs::Permissions::from_mode(0o600)).map_err(|source| {
            PkiError::Write {
                path: path.display().to_string(),
                source,
            }
        })?;
    }
    Ok(())
}

/// A certificate authority loaded from or written to `dir` as `ca.pem` / `ca.key`.
pub struct DevCa {
    issuer: Issuer<'static, KeyPair>,
    pem: String,
}

impl DevCa {
    pub fn create(name: &str) -> Result<DevCa, PkiError> {
        let key = KeyPair::generate().map_err(generate("CA key"))?;
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, name);
        dn.push(DnType::OrganizationName, "bsfg development");
        params.distinguished_name = dn;
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        params.not_before = OffsetDateTime::now_utc() - Duration::hours(1);
        params.not_after = OffsetDateTime::now_utc() + Duration::days(3650);
        let cert = params
            .self_signed(&key)
            .map_err(generate("CA certificate"))?;
        let pem = cert.pem();
        let issuer = Issuer::new(params, key);
        Ok(DevCa { issuer, pem })
    }

    pub fn pem(&self) -> &str {
        &self.pem
    }

    pub fn key_pem(&self) -> String {
        self.issuer.key().serialize_pem()
    }

    /// Issues a certificate for `common_name` valid for both server and client auth, with
    /// `dns_names` and loopback as SANs, valid from `not_before` for `days`.
    pub fn issue(
        &self,
        common_name: &str,
        dns_names: &[String],
        not_before: OffsetDateTime,
        days: i64,
    ) -> Result<(String, String), PkiError> {
        let mut serial = [0u8; 16];
        ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut serial)
            .map_err(|_| PkiError::Input("no randomness for a serial number".into()))?;
        serial[0] &= 0x7f; // a positive DER integer
        self.issue_with_serial(common_name, dns_names, not_before, days, &serial)
    }

    /// As [`DevCa::issue`], with a chosen serial number (to revoke it in a CRL).
    pub fn issue_with_serial(
        &self,
        common_name: &str,
        dns_names: &[String],
        not_before: OffsetDateTime,
        days: i64,
        serial: &[u8],
    ) -> Result<(String, String), PkiError> {
        let not_after = not_before + Duration::days(days);
        self.issue_until(common_name, dns_names, not_before, not_after, serial)
    }

    /// As [`DevCa::issue_with_serial`], valid until `not_after` exactly (short-lived certificates).
    pub fn issue_until(
        &self,
        common_name: &str,
        dns_names: &[String],
        not_before: OffsetDateTime,
        not_after: OffsetDateTime,
        serial: &[u8],
    ) -> Result<(String, String), PkiError> {
        let key = KeyPair::generate().map_err(generate(common_name))?;
        let mut params =
            CertificateParams::new(dns_names.to_vec()).map_err(generate(common_name))?;
        params.serial_number = Some(SerialNumber::from_slice(serial));
        params
            .subject_alt_names
            .push(SanType::IpAddress(IpAddr::V4(Ipv4Addr::LOCALHOST)));
        params
            .subject_alt_names
            .push(SanType::IpAddress(IpAddr::V6(Ipv6Addr::LOCALHOST)));
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, common_name);
        params.distinguished_name = dn;
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        params.not_before = not_before;
        params.not_after = not_after;
        let cert = params
            .signed_by(&key, &self.issuer)
            .map_err(generate(common_name))?;
        Ok((cert.pem(), key.serialize_pem()))
    }
}

impl DevCa {
    /// A PEM CRL, valid for a day, revoking the certificates with these serial numbers.
    pub fn crl(&self, revoked_serials: &[&[u8]]) -> Result<String, PkiError> {
        let now = OffsetDateTime::now_utc();
        self.crl_valid(
            revoked_serials,
            now - Duration::minutes(5),
            now + Duration::days(1),
        )
    }

    /// As [`DevCa::crl`], issued at `this_update` and due for renewal at `next_update` (a
    /// `next_update` in the past makes a stale CRL).
    pub fn crl_valid(
        &self,
        revoked_serials: &[&[u8]],
        this_update: OffsetDateTime,
        next_update: OffsetDateTime,
    ) -> Result<String, PkiError> {
        let params = CertificateRevocationListParams {
            this_update,
            next_update,
            crl_number: SerialNumber::from(1u64),
            issuing_distribution_point: None,
            revoked_certs: revoked_serials
                .iter()
                .map(|serial| RevokedCertParams {
                    serial_number: SerialNumber::from_slice(serial),
                    revocation_time: this_update,
                    reason_code: Some(RevocationReason::KeyCompromise),
                    invalidity_date: None,
                })
                .collect(),
            key_identifier_method: KeyIdMethod::Sha256,
        };
        let crl = params.signed_by(&self.issuer).map_err(generate("CRL"))?;
        crl.pem().map_err(generate("CRL"))
    }
}

/// Writes `ca.pem`, `ca.key`, and `<name>.pem` / `<name>.key` for each zone's node
/// (`<zone>-bsfg`) and each client name into `dir`; one CA for all of them (an estate).
pub fn write_dev_pki(
    dir: &Path,
    zones: &[String],
    clients: &[String],
    days: i64,
) -> Result<Vec<String>, PkiError> {
    if zones.is_empty() {
        return Err(PkiError::Input("name at least one --zone".into()));
    }
    for zone in zones {
        if !crate::fact::is_zone_name(zone) {
            return Err(PkiError::Input(format!(
                "zone {zone:?} must be 1-63 characters of a-z, 0-9 and '-', starting with a letter"
            )));
        }
    }
    fs::create_dir_all(dir).map_err(|source| PkiError::Write {
        path: dir.display().to_string(),
        source,
    })?;
    let ca = DevCa::create(&format!("bsfg development CA ({})", zones.join(", ")))?;
    write(dir, "ca.pem", ca.pem(), false)?;
    write(dir, "ca.key", &ca.key_pem(), true)?;
    let now = OffsetDateTime::now_utc() - Duration::hours(1);
    let mut written = vec!["ca.pem".to_string(), "ca.key".to_string()];
    let mut names: Vec<(String, Vec<String>)> = zones
        .iter()
        .map(|zone| {
            let node = format!("{zone}-bsfg");
            (node.clone(), vec!["localhost".to_string(), node])
        })
        .collect();
    names.extend(clients.iter().map(|c| (c.clone(), vec![c.clone()])));
    for (name, sans) in names {
        if name.is_empty()
            || !name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.' || b == b'_')
        {
            return Err(PkiError::Input(format!(
                "certificate name {name:?} must be letters, digits, '-', '.' or '_'"
            )));
        }
        let (cert, key) = ca.issue(&name, &sans, now, days)?;
        write(dir, &format!("{name}.pem"), &cert, false)?;
        write(dir, &format!("{name}.key"), &key, true)?;
        written.push(format!("{name}.pem"));
        written.push(format!("{name}.key"));
    }
    Ok(written)
}
