//! Generates the gRPC code of the client APIs (`proto/`) with tonic-prost-build.
//!
//! protoc is not installed on the build machines: the one shipped by
//! `protoc-bin-vendored` is used unless `PROTOC` names another. (It is handed to prost
//! through its `Config` rather than by setting `PROTOC`, because `env::set_var` is
//! `unsafe` in edition 2024 and this workspace forbids unsafe code.)

use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto");
    println!("cargo:rerun-if-env-changed=PROTOC");
    let protoc = match std::env::var_os("PROTOC") {
        Some(path) => PathBuf::from(path),
        None => protoc_bin_vendored::protoc_bin_path()?,
    };
    let mut config = prost_build::Config::new();
    config.protoc_executable(protoc);
    tonic_prost_build::configure()
        .build_server(true)
        .build_client(true)
        // Keys and values of rkv.v1 as `bytes::Bytes`: shared, not copied, on their way
        // to and from the state machine.
        .bytes(".rkv.v1")
        // Small per-call buffers instead of tonic's 8 KiB (see rkv_wire::codec).
        .codec_path("crate::codec::SmallBufferCodec")
        .compile_with_config(
            config,
            &[
                "proto/commonpb/common.proto",
                "proto/rkvpb/rkv.proto",
                "proto/rkv/v1/rkv.proto",
            ],
            &["proto"],
        )?;
    Ok(())
}
