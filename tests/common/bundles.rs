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
        for (ca, signer, org) in [
            ("ca", "signer", "Estate"),
            ("foreign-ca", "foreign-signer", "Foreign"),
        ] {
            let key = |name: &str| {
                run(
                    "openssl",
                    &[
                        "genpkey",
                        "-algorithm",
                        "EC",
                        "-pkeyopt",
                        "ec_paramgen_curve:P-256",
                        "-out",
                        &format!("{name}.key"),
                    ],
                    path,
                );
            };
            key(ca);
            key(signer);
            run(
                "openssl",
                &[
                    "req",
                    "-new",
                    "-key",
                    &format!("{ca}.key"),
                    "-subj",
                    &format!("/O={org}/CN={org} update CA"),
                    "-out",
                    &format!("{ca}.csr"),
                ],
                path,
            );
            run(
                "openssl",
                &[
                    "x509",
                    "-req",
                    "-in",
                    &format!("{ca}.csr"),
                    "-signkey",
                    &format!("{ca}.key"),
                    "-days",
                    "30",
                    "-extfile",
                    "ext.cnf",
                    "-extensions",
                    "ca",
                    "-out",
                    &format!("{ca}.pem"),
                ],
                path,
            );
            run(
                "openssl",
                &[
                    "req",
                    "-new",
                    "-key",
                    &format!("{signer}.key"),
                    "-subj",
                    &format!("/O={org}/CN={org} release signer"),
                    "-out",
                    &format!("{signer}.csr"),
                ],
                path,
            );
            run(
                "openssl",
                &[
                    "x509",
                    "-req",
                    "-in",
                    &format!("{signer}.csr"),
                    "-CA",
                    &format!("{ca}.pem"),
                    "-CAkey",
                    &format!("{ca}.key"),
                    "-set_serial",
                    "4242",
                    "-days",
                    "30",
                    "-extfile",
                    "ext.cnf",
                    "-extensions",
                    "signer",
                    "-out",
                    &format!("{signer}.pem"),
                ],
                path,
            );
        }
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
        std::fs::write(
            content.join("manifest.raucm"),
            format!("[update]\ncompatible={compatible}\nversion={version}\n\n[bundle]\nformat={format}\n\n[image.rootfs]\nfilename=rootfs.img\n"),
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
