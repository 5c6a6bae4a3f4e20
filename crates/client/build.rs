//! Generates the gRPC code of the part of etcd's v3 API that `rkvctl -target etcd`
//! drives (`proto/etcdserverpb/kv.proto`: KV Put and Range) with tonic-prost-build.
//!
//! Why not the `etcd-client` crate: it is compatible with tonic 0.14, but its build
//! script runs protoc from the machine, and protoc is not installed on the build
//! machines. As in `crates/wire`, the protoc shipped by `protoc-bin-vendored` is used
//! unless `PROTOC` names another (handed to prost through its `Config`, because
//! `env::set_var` is `unsafe` in edition 2024 and this workspace forbids unsafe code).

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
        .build_client(true)
        // The server side serves a stand-in etcd in this crate's unit tests.
        .build_server(true)
        // Keys and values as `bytes::Bytes`: a client's value is shared, not copied, by
        // every request it sends.
        .bytes(".etcdserverpb")
        // Small per-call buffers instead of tonic's 8 KiB (see rkv_wire::codec).
        .codec_path("rkv_wire::codec::SmallBufferCodec")
        .compile_with_config(config, &["proto/etcdserverpb/kv.proto"], &["proto"])?;
    Ok(())
}
