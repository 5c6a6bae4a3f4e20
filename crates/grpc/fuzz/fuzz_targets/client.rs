//! Fuzzes the client side of rkv-grpc's HTTP/2 connection with whatever a server could
//! answer: the input is the server's bytes (behind a valid SETTINGS frame when its first
//! byte is even, so that the fuzzer gets past the handshake), fed to a client connection
//! with a few calls to send, over an in-memory pipe. No input may panic, and the
//! connection must end once the input does. Run with `scripts/fuzz [SECONDS]`.
#![no_main]

use std::time::Duration;

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use rkv_grpc::frame;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fuzz_target!(|data: &[u8]| {
    let mut input = BytesMut::with_capacity(data.len() + 16);
    match data.split_first() {
        Some((first, rest)) if first % 2 == 0 => {
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
        let driven = tokio::spawn(rkv_grpc::fuzz_connection(client, 3));
        let (mut reader, mut writer) = tokio::io::split(server);
        let drain = tokio::spawn(async move {
            let mut sink = vec![0u8; 1 << 16];
            while matches!(reader.read(&mut sink).await, Ok(n) if n > 0) {}
        });
        let _ = writer.write_all(&input).await;
        let _ = writer.shutdown().await;
        // Time is paused: the connection's pings time out at once, and this bound costs
        // no wall time; it only turns a connection that never ends into a crash.
        tokio::time::timeout(Duration::from_secs(3600), driven)
            .await
            .expect("the connection ends once its input does")
            .expect("no panic");
        drop(writer);
        let _ = drain.await;
    });
});
