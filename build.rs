//! Build-time generation, so nothing here needs a system tool:
//! - `proto/bsfg/v1/*.proto` compiled with a pure-Rust protobuf compiler (protox) into prost types
//!   and their canonical proto3 JSON mapping (pbjson), which skips unknown fields;
//! - the seccomp allow-list `hardening/seccomp/<arch>.json` compiled to BPF (seccompiler), twice:
//!   killing the process on any other syscall, and only logging it (`bsfg serve --seccomp-log`).

use std::{env, path::PathBuf};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    compile_protos()?;
    compile_seccomp()
}

/// Writes `seccomp_kill.bpf` and `seccomp_log.bpf` (8-byte `sock_filter` instructions, little
/// endian) for the target architecture; empty files when there is no policy for it.
fn compile_seccomp() -> Result<(), Box<dyn std::error::Error>> {
    let arch = env::var("CARGO_CFG_TARGET_ARCH")?;
    let out = PathBuf::from(env::var("OUT_DIR")?);
    let policy = PathBuf::from(format!("hardening/seccomp/{arch}.json"));
    println!("cargo:rerun-if-changed=hardening/seccomp");
    for (mode, action) in [("kill", "kill_process"), ("log", "log")] {
        let mut bytes = Vec::new();
        if policy.exists() {
            let mut json: serde_json::Value = serde_json::from_slice(&std::fs::read(&policy)?)?;
            json["bsfg"]["mismatch_action"] = action.into();
            let target = seccompiler::TargetArch::try_from(arch.as_str())?;
            let programs = seccompiler::compile_from_json(json.to_string().as_bytes(), target)?;
            for instruction in programs
                .get("bsfg")
                .ok_or("policy has no \"bsfg\" filter")?
            {
                bytes.extend_from_slice(&instruction.code.to_le_bytes());
                bytes.push(instruction.jt);
                bytes.push(instruction.jf);
                bytes.extend_from_slice(&instruction.k.to_le_bytes());
            }
        }
        std::fs::write(out.join(format!("seccomp_{mode}.bpf")), bytes)?;
    }
    Ok(())
}

fn compile_protos() -> Result<(), Box<dyn std::error::Error>> {
    let protos = [
        "proto/bsfg/v1/boundary.proto",
        "proto/bsfg/v1/operator.proto",
    ];
    println!("cargo:rerun-if-changed=proto");
    let descriptors = protox::compile(protos, ["proto"])?;
    let out = PathBuf::from(env::var("OUT_DIR")?);
    let descriptor_path = out.join("bsfg_descriptor.bin");
    std::fs::write(
        &descriptor_path,
        prost::Message::encode_to_vec(&descriptors),
    )?;

    prost_build::Config::new()
        .btree_map(["."])
        .bytes([
            ".bsfg.v1.PutObjectRequest.data",
            ".bsfg.v1.GetObjectResponse.data",
        ])
        .compile_fds(descriptors)?;

    pbjson_build::Builder::new()
        .register_descriptors(&std::fs::read(&descriptor_path)?)?
        .btree_map([".bsfg.v1"])
        // Mixed versions (SPEC §4): a field from a newer schema is skipped, as binary protobuf
        // does. Unknown enum *values* stay errors: a category this node does not keep must not
        // silently become the default one.
        .ignore_unknown_fields()
        .build(&[".bsfg.v1"])?;
    Ok(())
}
