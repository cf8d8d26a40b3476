//! Signed RAUC bundles for tests, made by the real `rauc bundle` with keys openssl makes in a
//! temporary directory: an estate's update CA and its signer, a foreign CA and signer, and the
//! system's files (`system.conf`, `os-release`) a verifying appliance reads.

use serde_json::Value;
use std::{
    path::{Path, PathBuf},
    process::Command,
};

pub const COMPATIBLE: &str = "bsfg-appliance-test-x86_64";
pub const RUNNING: &str = "0.2.0";

pub fn run(program: &str, args: &[&str], dir: &Path) -> std::process::Output {
    let output = Command::new(program)
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {program} (run `make setup`): {e}"));
    assert!(
        output.status.success(),
        "{program} {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

/// `NAME.key` and `NAME.pem` in `dir`: self-signed, or issued by `issuer` (CA, serial), with the
/// extensions of section `extensions` of `ext.cnf`.
pub fn issue(
    dir: &Path,
    name: &str,
    subject: &str,
    issuer: Option<(&str, &str)>,
    extensions: &str,
) {
    let (key, csr, pem) = (
        format!("{name}.key"),
        format!("{name}.csr"),
        format!("{name}.pem"),
    );
    let ec = [
        "genpkey",
        "-algorithm",
        "EC",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-out",
    ];
    run("openssl", &[&ec[..], &[key.as_str()]].concat(), dir);
    run(
        "openssl",
        &["req", "-new", "-key", &key, "-subj", subject, "-out", &csr],
        dir,
    );
    let mut x509 = vec!["x509", "-req", "-in", &csr, "-days", "30", "-out", &pem];
    x509.extend(["-extfile", "ext.cnf", "-extensions", extensions]);
    let (ca, serial) = issuer.unwrap_or_default();
    let (ca_pem, ca_key) = (format!("{ca}.pem"), format!("{ca}.key"));
    match issuer {
        Some(_) => x509.extend(["-CA", &ca_pem, "-CAkey", &ca_key, "-set_serial", serial]),
        None => x509.extend(["-signkey", &key]),
    }
    run("openssl", &x509, dir);
}

/// An estate's update PKI, a foreign one, the system's files, in a temporary directory.
pub struct Appliance {
    pub dir: tempfile::TempDir,
}

impl Appliance {
    pub fn new() -> Appliance {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path();
        std::fs::write(
            path.join("ext.cnf"),
            "[ca]\nbasicConstraints=critical,CA:true\nkeyUsage=critical,keyCertSign,cRLSign\nsubjectKeyIdentifier=hash\n\
             [signer]\nbasicConstraints=critical,CA:false\nkeyUsage=critical,digitalSignature\nsubjectKeyIdentifier=hash\nauthorityKeyIdentifier=keyid\n",
        )
        .expect("write ext.cnf");
        // Self-signed CAs, then signers issued by them (serials fixed, keys EC P-256).
        issue(path, "ca", "/O=Estate/CN=Estate update CA", None, "ca");
        issue(
            path,
            "signer",
            "/O=Estate/CN=Estate release signer",
            Some(("ca", "4242")),
            "signer",
        );
        issue(
            path,
            "ca-second",
            "/O=Estate/CN=Estate second signer",
            Some(("ca", "4343")),
            "signer",
        );
        issue(
            path,
            "foreign-ca",
            "/O=Foreign/CN=Foreign update CA",
            None,
            "ca",
        );
        issue(
            path,
            "foreign-signer",
            "/O=Foreign/CN=Foreign release signer",
            Some(("foreign-ca", "4242")),
            "signer",
        );
        std::fs::write(
            path.join("system.conf"),
            format!("[system]\ncompatible={COMPATIBLE}\nbootloader=noop\n"),
        )
        .expect("write system.conf");
        std::fs::write(
            path.join("os-release"),
            format!("NAME=\"BSFG appliance\"\nIMAGE_ID=bsfg-appliance\nIMAGE_VERSION={RUNNING}\n"),
        )
        .expect("write os-release");
        Appliance { dir }
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// `rauc bundle` over a 600 KiB incompressible root image (a two-level hash tree).
    pub fn bundle(
        &self,
        name: &str,
        compatible: &str,
        version: &str,
        format: &str,
        signer: &str,
    ) -> PathBuf {
        let content = self.path(&format!("{name}.content"));
        std::fs::create_dir_all(&content).expect("content dir");
        let mut state = 0x2545_F491_4F6C_DD1Du64 ^ name.len() as u64;
        let image: Vec<u8> = (0..600 * 1024)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                state as u8
            })
            .collect();
        std::fs::write(content.join("rootfs.img"), image).expect("image");
        // A second image, as the appliance's bundles carry a UKI (and a hash tree) per slot.
        std::fs::write(content.join("uki.efi"), b"MZ not really a UKI").expect("uki");
        std::fs::write(
            content.join("manifest.raucm"),
            format!("[update]\ncompatible={compatible}\nversion={version}\n\n[bundle]\nformat={format}\n\n[image.rootfs]\nfilename=rootfs.img\n\n[image.uki]\nfilename=uki.efi\n"),
        )
        .expect("manifest");
        let out = self.path(&format!("{name}.raucb"));
        let cert = format!("{signer}.pem");
        let key = format!("{signer}.key");
        run(
            "rauc",
            &[
                "bundle",
                "--cert",
                &cert,
                "--key",
                &key,
                content.to_str().expect("utf-8"),
                out.to_str().expect("utf-8"),
            ],
            self.dir.path(),
        );
        out
    }

    pub fn good(&self, name: &str) -> PathBuf {
        self.bundle(name, COMPATIBLE, "0.3.0", "verity", "signer")
    }

    pub fn bsfg(&self, command: &str, bundle: &Path, extra: &[&str]) -> (i32, String, String) {
        let output = Command::new(super::bsfg_binary())
            .args(["firmware", command])
            .arg(bundle)
            .arg("--keyring")
            .arg(self.path("ca.pem"))
            .arg("--system-conf")
            .arg(self.path("system.conf"))
            .arg("--os-release")
            .arg(self.path("os-release"))
            .args(extra)
            .output()
            .expect("run bsfg");
        let (stdout, stderr) = (
            String::from_utf8_lossy(&output.stdout).into_owned(),
            String::from_utf8_lossy(&output.stderr).into_owned(),
        );
        assert!(!stderr.contains("panicked"), "bsfg panicked: {stderr}");
        (output.status.code().unwrap_or(-1), stdout, stderr)
    }

    /// `bsfg firmware verify --json`: the exit status and the JSON document.
    pub fn verify(&self, bundle: &Path) -> (i32, Value) {
        let (code, stdout, stderr) = self.bsfg("verify", bundle, &["--json"]);
        let json = serde_json::from_str(&stdout)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {stdout}\nstderr: {stderr}"));
        (code, json)
    }

    /// Asserts `bundle` is refused by `check`, with `reason` in the error; returns the error.
    pub fn assert_refused(&self, bundle: &Path, check: &str, reason: &str) -> String {
        let (code, json) = self.verify(bundle);
        let error = json["error"].as_str().unwrap_or_default().to_string();
        assert_eq!(
            (code, json["verified"].as_bool(), json["check"].as_str()),
            (65, Some(false), Some(check)),
            "{json}"
        );
        assert!(
            error.contains(reason),
            "{check}: {error:?} lacks {reason:?}"
        );
        error
    }

    /// `rauc info` on its own, as RAUC 1.8 would judge the bundle before installing it.
    pub fn rauc_info_accepts(&self, bundle: &Path) -> bool {
        Command::new("rauc")
            .arg(format!("--conf={}", self.path("system.conf").display()))
            .arg(format!("--keyring={}", self.path("ca.pem").display()))
            .args(["info", "--output-format=json"])
            .arg(bundle)
            .output()
            .expect("run rauc")
            .status
            .success()
    }
}
