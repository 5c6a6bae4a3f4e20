//! Fuzzes the server side of rkv-grpc's HTTP/2 connection with whatever a client could
//! send: the input is the client's bytes (behind a valid preface and SETTINGS when its
//! first byte is even, so that the fuzzer gets past the handshake), fed to a served
//! connection over an in-memory pipe; the HPACK decoder and the SETTINGS parser also get
//! the raw input. No input may panic, and the connection must end once the input does.
//! Run with `scripts/fuzz [SECONDS]` from the repository root.
#![no_main]

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use rkv_grpc::frame::{self, PREFACE};
use rkv_grpc::{Router, ServerConfig, Shared, hpack, serve_connection};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn router() -> Arc<Router> {
    static ROUTER: OnceLock<Arc<Router>> = OnceLock::new();
    ROUTER
        .get_or_init(|| {
            Arc::new(
                Router::new(1 << 16)
                    .unary("/f.S/Echo", |request: tonic::Request<String>| async move {
                        Ok(tonic::Response::new(request.into_inner()))
                    })
                    .server_streaming("/f.S/Count", |request: tonic::Request<u64>| async move {
                        let count = request.into_inner().min(100);
                        let items = (0..count).map(Ok::<u64, tonic::Status>);
                        Ok(tonic::Response::new(futures_util::stream::iter(items)))
                    }),
            )
        })
        .clone()
}

fuzz_target!(|data: &[u8]| {
    let _ = hpack::Decoder::default().decode(data, |_, _| {});
    let _ = frame::Settings::parse(data);
    let mut input = BytesMut::with_capacity(data.len() + 64);
    match data.split_first() {
        Some((first, rest)) if first % 2 == 0 => {
            input.extend_from_slice(PREFACE);
            frame::encode_settings(&mut input, &[]);
            input.extend_from_slice(rest);
        }
        _ => input.extend_from_slice(data),
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .expect("runtime");
    runtime.block_on(async move {
        let (client, server) = tokio::io::duplex(1 << 20);
        let (_stop, stopping) = tokio::sync::watch::channel(false);
        let served = tokio::spawn(serve_connection(
            server,
            router(),
            Shared::new(ServerConfig::default()),
            stopping,
        ));
        let (mut reader, mut writer) = tokio::io::split(client);
        let drain = tokio::spawn(async move {
            let mut sink = vec![0u8; 1 << 16];
            while matches!(reader.read(&mut sink).await, Ok(n) if n > 0) {}
        });
        let _ = writer.write_all(&input).await;
        let _ = writer.shutdown().await;
        // Time is paused: a grpc-timeout in the input elapses at once, and this bound
        // costs no wall time; it only turns a connection that never ends into a crash.
        // How it ended (garbage input ends it with an error) does not matter here.
        let _ended = tokio::time::timeout(Duration::from_secs(3600), served)
            .await
            .expect("the connection ends once its input does")
            .expect("no panic");
        drop(writer);
        let _ = drain.await;
    });
});
