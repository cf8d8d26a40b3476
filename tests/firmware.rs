//! `bsfg firmware verify|install` against the real `rauc` 1.8 (no mock): bundles are built by
//! `rauc bundle` from a small fake root image, signed with keys openssl makes in each test's
//! temporary directory (an update CA and its signer, and a foreign CA and signer), and every
//! refusal is asserted by the check that names it. The dm-verity tree is compared with
//! `veritysetup format --no-superblock`.
//!
//! Needs `rauc`, `mksquashfs` and `veritysetup` (`scripts/setup.sh` installs them).

mod common;

use common::bundles::{Appliance, COMPATIBLE, RUNNING, run};
use sha2::{Digest, Sha256};
use std::path::Path;

fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

fn flip_byte(from: &Path, to: &Path, offset: u64) {
    let mut bytes = std::fs::read(from).expect("read bundle");
    bytes[offset as usize] ^= 0x01;
    std::fs::write(to, bytes).expect("write bundle");
}

#[test]
fn a_good_bundle_is_verified_and_reported() {
    let appliance = Appliance::new();
    let bundle = appliance.good("good");
    let (code, json) = appliance.verify(&bundle);
    assert_eq!(
        (code, json["verified"].as_bool()),
        (0, Some(true)),
        "{json}"
    );
    let verified = &json["bundle"];
    assert_eq!(verified["compatible"], COMPATIBLE);
    assert_eq!(
        (
            verified["version"].as_str(),
            verified["running_version"].as_str()
        ),
        (Some("0.3.0"), Some(RUNNING))
    );
    assert_eq!(
        verified["signer"]["subject"],
        "O=Estate, CN=Estate release signer"
    );
    assert_eq!(
        verified["signer"]["issuer"],
        "O=Estate, CN=Estate update CA"
    );
    let bytes = std::fs::read(&bundle).expect("bundle");
    assert_eq!(
        verified["sha256"].as_str(),
        Some(sha256_hex(&bytes).as_str())
    );
    let image = std::fs::read(appliance.path("good.content/rootfs.img")).expect("image");
    assert_eq!(verified["images"][0]["slot_class"], "rootfs");
    assert_eq!(verified["images"][1]["slot_class"], "uki");
    assert_eq!(
        verified["images"][1]["sha256"].as_str(),
        Some(sha256_hex(b"MZ not really a UKI").as_str())
    );
    assert_eq!(
        verified["images"][0]["sha256"].as_str(),
        Some(sha256_hex(&image).as_str())
    );
    // The root hash verify reports is veritysetup's over the same data and salt.
    let data_size = verified["verity"]["data_size"].as_u64().expect("data_size");
    std::fs::write(appliance.path("data.img"), &bytes[..data_size as usize]).expect("data");
    let salt = format!(
        "--salt={}",
        verified["verity"]["salt"].as_str().expect("salt")
    );
    let out = run(
        "veritysetup",
        &["format", "--no-superblock", &salt, "data.img", "hash.img"],
        appliance.dir.path(),
    );
    let root = verified["verity"]["root_hash"].as_str().expect("root");
    assert!(
        String::from_utf8_lossy(&out.stdout).contains(&format!("Root hash:      \t{root}")),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    // The human summary names the same facts.
    let (code, summary, _) = appliance.bsfg("verify", &bundle, &[]);
    assert_eq!(code, 0);
    for expected in [
        COMPATIBLE,
        "0.3.0 (running 0.2.0)",
        "CN=Estate release signer",
        root,
        "rootfs: rootfs.img",
        "uki: uki.efi",
    ] {
        assert!(summary.contains(expected), "{expected:?} not in {summary}");
    }
}

#[test]
fn one_flipped_payload_byte_is_refused_by_the_payload_hash_though_rauc_info_accepts_it() {
    let appliance = Appliance::new();
    let good = appliance.good("good");
    let flipped = appliance.path("flipped.raucb");
    flip_byte(&good, &flipped, 300 * 1024);
    assert!(
        appliance.rauc_info_accepts(&flipped),
        "rauc info alone accepts the tampered bundle"
    );
    appliance.assert_refused(
        &flipped,
        "payload-hash",
        "does not match the signed verity hash",
    );
    // A byte of the stored hash tree (right after the data): the data is intact, the tree RAUC
    // would use while copying is not.
    let (_, json) = appliance.verify(&good);
    let tree_offset = json["bundle"]["verity"]["data_size"]
        .as_u64()
        .expect("data_size");
    let tree = appliance.path("tree.raucb");
    flip_byte(&good, &tree, tree_offset + 5);
    assert!(appliance.rauc_info_accepts(&tree));
    appliance.assert_refused(
        &tree,
        "payload-hash",
        "hash tree stored in the bundle differs",
    );
}

#[test]
fn a_foreign_signer_a_tampered_manifest_or_two_signers_are_refused_by_the_signature_check() {
    let appliance = Appliance::new();
    let foreign = appliance.bundle("foreign", COMPATIBLE, "0.3.0", "verity", "foreign-signer");
    appliance.assert_refused(
        &foreign,
        "signature",
        "unable to get local issuer certificate",
    );
    // The signed manifest changed in place (same length): the signature no longer matches.
    let good = appliance.good("good");
    let mut bytes = std::fs::read(&good).expect("bundle");
    let at = bytes
        .windows(13)
        .position(|w| w == b"version=0.3.0")
        .expect("manifest in the CMS");
    bytes[at + 8] = b'9';
    let tampered = appliance.path("tampered.raucb");
    std::fs::write(&tampered, bytes).expect("write");
    appliance.assert_refused(&tampered, "signature", "signature verification failed");
    // A second estate signer added to a good signature: rauc refuses several signers.
    let good_bytes = std::fs::read(&good).expect("bundle");
    let (payload, signature) = split_signature(&good_bytes);
    std::fs::write(appliance.path("sig.der"), signature).expect("write");
    run(
        "openssl",
        &[
            "cms",
            "-resign",
            "-binary",
            "-inform",
            "DER",
            "-in",
            "sig.der",
            "-signer",
            "ca-second.pem",
            "-inkey",
            "ca-second.key",
            "-outform",
            "DER",
            "-out",
            "sig2.der",
        ],
        appliance.dir.path(),
    );
    let twice = appliance.path("twice.raucb");
    let resigned = std::fs::read(appliance.path("sig2.der")).expect("sig2");
    std::fs::write(
        &twice,
        [payload, &resigned, &(resigned.len() as u64).to_be_bytes()].concat(),
    )
    .expect("write");
    appliance.assert_refused(&twice, "signature", "Unsupported number of signers: 2");
}

/// A bundle's bytes before its signature, and the signature.
fn split_signature(bundle: &[u8]) -> (&[u8], &[u8]) {
    let trailer: [u8; 8] = bundle[bundle.len() - 8..].try_into().expect("trailer");
    let size = u64::from_be_bytes(trailer) as usize;
    let start = bundle.len() - 8 - size;
    (&bundle[..start], &bundle[start..bundle.len() - 8])
}

#[test]
fn a_bundle_for_another_product_is_refused_by_the_compatible_check() {
    let appliance = Appliance::new();
    let other = appliance.bundle("other", "other-product-x86_64", "0.3.0", "verity", "signer");
    appliance.assert_refused(
        &other,
        "compatible",
        &format!(
            "the bundle is for \"other-product-x86_64\", this system ({}) is \"{COMPATIBLE}\"",
            appliance.path("system.conf").display()
        ),
    );
}

#[test]
fn equal_lower_and_unparsable_versions_are_refused_by_the_version_policy() {
    let appliance = Appliance::new();
    for (name, version, reason) in [
        ("equal", RUNNING, "is equal to the running version 0.2.0"),
        (
            "build",
            "0.2.0+rebuild.2",
            "is equal to the running version 0.2.0",
        ),
        ("lower", "0.1.9", "is lower than the running version 0.2.0"),
        (
            "pre",
            "0.2.0-rc.1",
            "is lower than the running version 0.2.0",
        ),
        ("unparsable", "latest", "\"latest\" is not a version"),
    ] {
        let bundle = appliance.bundle(name, COMPATIBLE, version, "verity", "signer");
        appliance.assert_refused(&bundle, "version-policy", reason);
    }
}

#[test]
fn a_plain_format_bundle_is_refused() {
    let appliance = Appliance::new();
    let plain = appliance.bundle("plain", COMPATIBLE, "0.3.0", "plain", "signer");
    assert!(
        appliance.rauc_info_accepts(&plain),
        "rauc itself accepts plain bundles"
    );
    appliance.assert_refused(&plain, "payload-hash", "accepts verity bundles only");
}

#[test]
fn truncated_and_garbage_files_are_structure_errors() {
    let appliance = Appliance::new();
    let good = std::fs::read(appliance.good("good")).expect("bundle");
    let write = |name: &str, bytes: &[u8]| {
        let path = appliance.path(name);
        std::fs::write(&path, bytes).expect("write");
        path
    };
    let cases = [
        (
            write("cut-trailer.raucb", &good[..good.len() - 3]),
            "exceeds",
        ),
        (write("cut-half.raucb", &good[..good.len() / 2]), "exceeds"),
        (
            write(
                "cut-signature.raucb",
                &[&good[..good.len() - 200], &good[good.len() - 8..]].concat(),
            ),
            "not a whole number of 4 KiB blocks",
        ),
        (write("empty.raucb", b""), "too small"),
        (write("garbage.raucb", &vec![0xA5; 64 * 1024]), "exceeds"),
        (
            write(
                "zero-size.raucb",
                &[vec![0; 8192], 0u64.to_be_bytes().to_vec()].concat(),
            ),
            "signature size in the trailer is 0",
        ),
        (
            write(
                "not-cms.raucb",
                &[
                    vec![0; 4096],
                    vec![0x30, 0x03, 0x02, 0x01, 0x01],
                    5u64.to_be_bytes().to_vec(),
                ]
                .concat(),
            ),
            "CMS signature",
        ),
    ];
    for (path, reason) in cases {
        appliance.assert_refused(&path, "structure", reason);
    }
    appliance.assert_refused(appliance.dir.path(), "structure", "not a regular file");
}

#[test]
fn install_runs_rauc_only_for_a_verified_bundle_and_exits_with_its_status() {
    let appliance = Appliance::new();
    let good = appliance.good("good");
    let flipped = appliance.path("flipped.raucb");
    flip_byte(&good, &flipped, 4096);
    let (code, stdout, stderr) = appliance.bsfg("install", &flipped, &[]);
    assert_eq!(code, 65, "{stderr}");
    assert!(
        stderr.contains("REFUSED: payload hash check failed"),
        "{stderr}"
    );
    assert!(
        !stdout.contains("installing with") && !stderr.contains("D-Bus"),
        "rauc ran: {stdout}{stderr}"
    );
    // The good bundle reaches the real `rauc install`; with no rauc-service on this host, rauc
    // fails on D-Bus, and that failure (its output and exit status 2) is what install reports.
    let (code, stdout, stderr) = appliance.bsfg("install", &good, &[]);
    assert!(
        stdout.contains("verified ") && stdout.contains("installing with rauc install"),
        "{stdout}"
    );
    assert!(stderr.contains("D-Bus error while installing"), "{stderr}");
    assert_eq!(code, 2, "rauc's exit status: {stdout}{stderr}");
}

#[test]
fn the_verity_tree_matches_veritysetup_over_three_levels() {
    // 128 * 128 + 5 data blocks need three levels.
    let dir = tempfile::tempdir().expect("tempdir");
    let blocks = 128 * 128 + 5u64;
    let data: Vec<u8> = (0..blocks * 4096)
        .map(|i| (i / 4096 % 251) as u8 ^ (i % 7) as u8)
        .collect();
    std::fs::write(dir.path().join("data.img"), &data).expect("data");
    let salt = "5a".repeat(32);
    let out = run(
        "veritysetup",
        &[
            "format",
            "--no-superblock",
            &format!("--salt={salt}"),
            "data.img",
            "hash.img",
        ],
        dir.path(),
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    let root = stdout
        .lines()
        .find_map(|l| l.strip_prefix("Root hash:"))
        .map(str::trim)
        .expect("root hash")
        .to_string();
    let tree = std::fs::read(dir.path().join("hash.img")).expect("hash");
    let layout = bsfg::firmware::verity::TreeLayout::new(blocks).expect("layout");
    assert_eq!(layout.levels().len(), 3);
    assert_eq!(layout.hash_blocks() * 4096, tree.len() as u64);
    let mut salt_bytes = [0u8; 32];
    hex::decode_to_slice(&salt, &mut salt_bytes).expect("salt");
    let mut root_bytes = [0u8; 32];
    hex::decode_to_slice(&root, &mut root_bytes).expect("root");
    let payload = [data, tree].concat();
    bsfg::firmware::verity::verify(
        &mut &payload[..],
        &layout,
        &salt_bytes,
        &root_bytes,
        &mut |_| {},
    )
    .expect("veritysetup's tree and root verify");
    let mut wrong_root = root_bytes;
    wrong_root[0] ^= 1;
    assert!(
        bsfg::firmware::verity::verify(
            &mut &payload[..],
            &layout,
            &salt_bytes,
            &wrong_root,
            &mut |_| {}
        )
        .is_err()
    );
}

#[test]
fn the_library_entry_point_reports_each_check_in_order_and_the_hash_progress() {
    use bsfg::firmware::verify::{Check, Progress, VerifyOptions, verify_bundle_with_progress};
    let appliance = Appliance::new();
    let bundle = appliance.good("good");
    let options = VerifyOptions {
        keyring: appliance.path("ca.pem"),
        system_conf: appliance.path("system.conf"),
        os_release: appliance.path("os-release"),
        ..VerifyOptions::default()
    };
    let mut seen = Vec::new();
    let verified = verify_bundle_with_progress(&bundle, &options, &mut |p| seen.push(p))
        .expect("a good bundle verifies");
    let checks: Vec<Check> = seen
        .iter()
        .filter_map(|p| match p {
            Progress::Checking(check) => Some(*check),
            Progress::Hashed { .. } => None,
        })
        .collect();
    use Check::*;
    assert_eq!(
        checks,
        [
            Structure,
            Signature,
            Signer,
            Compatible,
            VersionPolicy,
            PayloadHash
        ]
    );
    let payload = verified.verity.data_size + verified.verity.hash_tree_size;
    assert_eq!(
        seen.last(),
        Some(&Progress::Hashed {
            done: payload,
            total: payload
        })
    );
    // A refusal names its check as data, for the audit record.
    let flipped = appliance.path("flipped.raucb");
    flip_byte(&bundle, &flipped, 4096);
    let refusal = bsfg::firmware::verify::verify_bundle(&flipped, &options).expect_err("refused");
    assert_eq!(refusal.check(), Some(PayloadHash));
}
