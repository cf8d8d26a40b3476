//! Compiles `proto/bsfg/v1/*.proto` with a pure-Rust protobuf compiler (protox), so the build
//! never needs a system `protoc`, then generates prost types and their canonical proto3 JSON
//! mapping (pbjson).

use std::{env, path::PathBuf};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protos = ["proto/bsfg/v1/boundary.proto"];
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
        .build(&[".bsfg.v1"])?;
    Ok(())
}
