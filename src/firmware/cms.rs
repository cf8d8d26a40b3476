//! The CMS signature at the end of a RAUC bundle, read as data: the signed manifest it carries
//! (a verity bundle's signature is not detached, its content *is* the manifest), the certificates
//! it embeds and who signed it.
//!
//! This module never decides whether a signature is valid: `rauc info` does that against the
//! keyring (see `rauc.rs`), over exactly the bytes read here. It only walks DER, bounds-checked,
//! and refuses anything it does not expect instead of guessing: BER indefinite lengths,
//! constructed OCTET STRINGs, high tag numbers, trailing bytes.
//!
//! Limits: the signer is identified by issuer and serial number or by subject key identifier, as
//! CMS allows; a signature with several signers is returned whole and judged by the caller.

use x509_parser::prelude::{FromDer, ParsedExtension, X509Certificate};

/// DER tags used here (universal class unless noted).
const TAG_INTEGER: u8 = 0x02;
const TAG_OCTET_STRING: u8 = 0x04;
const TAG_OID: u8 = 0x06;
const TAG_SEQUENCE: u8 = 0x30;
const TAG_SET: u8 = 0x31;
/// `[0]` constructed, context class: explicit content, certificates.
const TAG_CONTEXT_0_CONSTRUCTED: u8 = 0xA0;
/// `[1]` constructed, context class: CRLs.
const TAG_CONTEXT_1_CONSTRUCTED: u8 = 0xA1;
/// `[0]` primitive, context class: a SubjectKeyIdentifier signer id.
const TAG_CONTEXT_0_PRIMITIVE: u8 = 0x80;

/// id-signedData, 1.2.840.113549.1.7.2 (content bytes of the OID).
const OID_SIGNED_DATA: &[u8] = &[0x2A, 0x86, 0x48, 0x86, 0xF7, 0x0D, 0x01, 0x07, 0x02];
/// id-envelopedData, 1.2.840.113549.1.7.3: RAUC's `crypt` format.
const OID_ENVELOPED_DATA: &[u8] = &[0x2A, 0x86, 0x48, 0x86, 0xF7, 0x0D, 0x01, 0x07, 0x03];
/// id-data, 1.2.840.113549.1.7.1: the type of the signed content.
const OID_DATA: &[u8] = &[0x2A, 0x86, 0x48, 0x86, 0xF7, 0x0D, 0x01, 0x07, 0x01];

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CmsError {
    #[error("the CMS signature is not valid DER: {0}")]
    NotDer(&'static str),
    #[error("the CMS signature has {0} bytes after its end")]
    TrailingBytes(usize),
    #[error("expected {expected} in the CMS signature, found tag 0x{found:02x}")]
    UnexpectedTag { expected: &'static str, found: u8 },
    #[error(
        "the CMS signature is encrypted (RAUC 'crypt' format); this appliance accepts verity bundles only"
    )]
    CryptFormat,
    #[error("the CMS signature is of content type {0}, not signed data")]
    NotSignedData(String),
    #[error(
        "the CMS signature is detached (RAUC 'plain' format: the manifest is inside the payload, with no signed hash tree); this appliance accepts verity bundles only"
    )]
    PlainFormat,
    #[error("the signed content is of type {0}, not data (a RAUC manifest)")]
    NotData(String),
    #[error("the CMS signature names no signer")]
    NoSigner,
}

/// A DER element: its tag, its contents, and all of its bytes (header included).
#[derive(Debug, Clone, Copy)]
struct Element<'a> {
    tag: u8,
    contents: &'a [u8],
    raw: &'a [u8],
}

/// Reads one DER element from the front of `input`; returns it and what follows it.
fn read_element(input: &[u8]) -> Result<(Element<'_>, &[u8]), CmsError> {
    let (&tag, rest) = input.split_first().ok_or(CmsError::NotDer("truncated"))?;
    if tag & 0x1F == 0x1F {
        return Err(CmsError::NotDer("high tag number"));
    }
    let (&first, mut rest) = rest.split_first().ok_or(CmsError::NotDer("truncated"))?;
    let length = match first {
        0x00..=0x7F => usize::from(first),
        0x80 => return Err(CmsError::NotDer("indefinite length (BER)")),
        0x81..=0x84 => {
            let count = usize::from(first & 0x7F);
            let bytes = rest.get(..count).ok_or(CmsError::NotDer("truncated"))?;
            rest = &rest[count..];
            bytes
                .iter()
                .fold(0usize, |acc, &b| (acc << 8) | usize::from(b))
        }
        _ => return Err(CmsError::NotDer("length too large")),
    };
    let header = input.len() - rest.len();
    let contents = rest.get(..length).ok_or(CmsError::NotDer("truncated"))?;
    let element = Element {
        tag,
        contents,
        raw: &input[..header + length],
    };
    Ok((element, &rest[length..]))
}

/// Reads one element with the expected tag.
fn expect<'a>(
    input: &'a [u8],
    tag: u8,
    what: &'static str,
) -> Result<(Element<'a>, &'a [u8]), CmsError> {
    let (element, rest) = read_element(input)?;
    if element.tag != tag {
        return Err(CmsError::UnexpectedTag {
            expected: what,
            found: element.tag,
        });
    }
    Ok((element, rest))
}

/// The elements of a SEQUENCE or SET's contents, in order.
fn children(contents: &[u8]) -> Result<Vec<Element<'_>>, CmsError> {
    let mut out = Vec::new();
    let mut rest = contents;
    while !rest.is_empty() {
        let (element, next) = read_element(rest)?;
        out.push(element);
        rest = next;
    }
    Ok(out)
}

fn oid_text(contents: &[u8]) -> String {
    x509_parser::der_parser::oid::Oid::new(contents.into()).to_id_string()
}

/// How a SignerInfo names its certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SignerId {
    /// The issuer's Name (DER, header included) and the serial number's INTEGER contents.
    IssuerAndSerial { issuer: Vec<u8>, serial: Vec<u8> },
    /// The certificate's subject key identifier.
    KeyId(Vec<u8>),
}

/// What a RAUC verity bundle's CMS signature carries.
#[derive(Debug, Clone)]
pub struct SignedContent {
    /// The signed manifest (`manifest.raucm` with the verity metadata), as signed.
    pub manifest: Vec<u8>,
    /// Every certificate embedded in the signature (DER).
    pub certificates: Vec<Vec<u8>>,
    /// Who signed, one entry per SignerInfo.
    pub signers: Vec<SignerId>,
}

/// Walks the CMS ContentInfo → SignedData and takes out the manifest, certificates and signers.
pub fn parse_signed_content(der: &[u8]) -> Result<SignedContent, CmsError> {
    let (content_info, rest) = expect(der, TAG_SEQUENCE, "ContentInfo SEQUENCE")?;
    if !rest.is_empty() {
        return Err(CmsError::TrailingBytes(rest.len()));
    }
    let (content_type, rest) = expect(content_info.contents, TAG_OID, "content type OID")?;
    match content_type.contents {
        OID_SIGNED_DATA => {}
        OID_ENVELOPED_DATA => return Err(CmsError::CryptFormat),
        other => return Err(CmsError::NotSignedData(oid_text(other))),
    }
    let (explicit, _) = expect(rest, TAG_CONTEXT_0_CONSTRUCTED, "[0] content")?;
    let (signed_data, _) = expect(explicit.contents, TAG_SEQUENCE, "SignedData SEQUENCE")?;
    let fields = children(signed_data.contents)?;
    // version, digestAlgorithms, encapContentInfo, [0] certificates, [1] crls, signerInfos
    let mut fields = fields.iter().skip(2);
    let encapsulated = fields
        .next()
        .ok_or(CmsError::NotDer("no encapContentInfo"))?;
    let manifest = encapsulated_manifest(encapsulated)?;
    let mut certificates = Vec::new();
    let mut signer_infos = None;
    for field in fields {
        match field.tag {
            TAG_CONTEXT_0_CONSTRUCTED => {
                certificates = children(field.contents)?
                    .into_iter()
                    .filter(|c| c.tag == TAG_SEQUENCE) // other CertificateChoices are not X.509
                    .map(|c| c.raw.to_vec())
                    .collect();
            }
            TAG_CONTEXT_1_CONSTRUCTED => {}
            TAG_SET => signer_infos = Some(field.contents),
            found => {
                return Err(CmsError::UnexpectedTag {
                    expected: "certificates, crls or signerInfos",
                    found,
                });
            }
        }
    }
    let signers = children(signer_infos.ok_or(CmsError::NoSigner)?)?
        .iter()
        .map(signer_id)
        .collect::<Result<Vec<_>, _>>()?;
    if signers.is_empty() {
        return Err(CmsError::NoSigner);
    }
    Ok(SignedContent {
        manifest,
        certificates,
        signers,
    })
}

/// encapContentInfo: `SEQUENCE { eContentType OID, [0] EXPLICIT OCTET STRING OPTIONAL }`.
fn encapsulated_manifest(encapsulated: &Element<'_>) -> Result<Vec<u8>, CmsError> {
    if encapsulated.tag != TAG_SEQUENCE {
        return Err(CmsError::UnexpectedTag {
            expected: "encapContentInfo SEQUENCE",
            found: encapsulated.tag,
        });
    }
    let (content_type, rest) = expect(encapsulated.contents, TAG_OID, "eContentType OID")?;
    if content_type.contents != OID_DATA {
        return Err(CmsError::NotData(oid_text(content_type.contents)));
    }
    if rest.is_empty() {
        return Err(CmsError::PlainFormat);
    }
    let (explicit, _) = expect(rest, TAG_CONTEXT_0_CONSTRUCTED, "[0] eContent")?;
    let (octets, _) = expect(
        explicit.contents,
        TAG_OCTET_STRING,
        "eContent primitive OCTET STRING",
    )?;
    Ok(octets.contents.to_vec())
}

/// SignerInfo: `SEQUENCE { version, sid, ... }`.
fn signer_id(signer_info: &Element<'_>) -> Result<SignerId, CmsError> {
    if signer_info.tag != TAG_SEQUENCE {
        return Err(CmsError::UnexpectedTag {
            expected: "SignerInfo SEQUENCE",
            found: signer_info.tag,
        });
    }
    let (_version, rest) = expect(signer_info.contents, TAG_INTEGER, "SignerInfo version")?;
    let (sid, _) = read_element(rest)?;
    match sid.tag {
        TAG_SEQUENCE => {
            let (issuer, rest) = expect(sid.contents, TAG_SEQUENCE, "issuer Name")?;
            let (serial, _) = expect(rest, TAG_INTEGER, "serial number")?;
            Ok(SignerId::IssuerAndSerial {
                issuer: issuer.raw.to_vec(),
                serial: serial.contents.to_vec(),
            })
        }
        TAG_CONTEXT_0_PRIMITIVE => Ok(SignerId::KeyId(sid.contents.to_vec())),
        found => Err(CmsError::UnexpectedTag {
            expected: "signer identifier",
            found,
        }),
    }
}

/// Whether `certificate` is the one `id` names.
pub fn names(id: &SignerId, certificate: &X509Certificate<'_>) -> bool {
    match id {
        SignerId::IssuerAndSerial { issuer, serial } => {
            certificate.issuer().as_raw() == issuer.as_slice()
                && certificate.raw_serial() == serial.as_slice()
        }
        SignerId::KeyId(key_id) => certificate.extensions().iter().any(|ext| {
            matches!(ext.parsed_extension(), ParsedExtension::SubjectKeyIdentifier(k) if k.0 == key_id.as_slice())
        }),
    }
}

/// The embedded certificate `id` names, parsed.
pub fn find_certificate<'c>(
    id: &SignerId,
    certificates: &'c [Vec<u8>],
) -> Option<X509Certificate<'c>> {
    certificates
        .iter()
        .filter_map(|der| X509Certificate::from_der(der).ok().map(|(_, cert)| cert))
        .find(|cert| names(id, cert))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lengths_are_bounds_checked() {
        assert_eq!(
            read_element(&[0x30]).err(),
            Some(CmsError::NotDer("truncated"))
        );
        assert_eq!(
            read_element(&[0x30, 0x05, 0x01]).err(),
            Some(CmsError::NotDer("truncated"))
        );
        assert_eq!(
            read_element(&[0x30, 0x84, 0xFF, 0xFF, 0xFF, 0xFF, 0x00]).err(),
            Some(CmsError::NotDer("truncated"))
        );
        assert_eq!(
            read_element(&[0x30, 0x80, 0x00, 0x00]).err(),
            Some(CmsError::NotDer("indefinite length (BER)"))
        );
        assert_eq!(
            read_element(&[0x30, 0x89, 0x00]).err(),
            Some(CmsError::NotDer("length too large"))
        );
        let (element, rest) = read_element(&[0x04, 0x81, 0x01, 0xAB, 0xCD]).expect("element");
        assert_eq!(
            (element.tag, element.contents, rest),
            (0x04, &[0xAB][..], &[0xCD][..])
        );
    }

    #[test]
    fn a_detached_signature_is_the_plain_format() {
        // ContentInfo { signedData, [0] SignedData { 1, {}, { data }, {} } } with no eContent.
        let oid_data = [&[0x06, 0x09][..], OID_DATA].concat();
        let encap = [&[0x30, oid_data.len() as u8][..], &oid_data].concat();
        let signed_data_body =
            [&[0x02, 0x01, 0x01, 0x31, 0x00][..], &encap, &[0x31, 0x00]].concat();
        let signed_data = [&[0x30, signed_data_body.len() as u8][..], &signed_data_body].concat();
        let explicit = [&[0xA0, signed_data.len() as u8][..], &signed_data].concat();
        let oid = [&[0x06, 0x09][..], OID_SIGNED_DATA].concat();
        let body = [&oid[..], &explicit].concat();
        let content_info = [&[0x30, body.len() as u8][..], &body].concat();
        assert_eq!(
            parse_signed_content(&content_info).err(),
            Some(CmsError::PlainFormat)
        );
        let mut trailing = content_info.clone();
        trailing.push(0);
        assert_eq!(
            parse_signed_content(&trailing).err(),
            Some(CmsError::TrailingBytes(1))
        );
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        for input in [
            &[][..],
            &[0xFF; 64][..],
            &[0x30, 0x03, 0x06, 0x01, 0x00][..],
        ] {
            assert!(parse_signed_content(input).is_err());
        }
    }
}
