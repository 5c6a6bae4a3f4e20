//! The protobuf codec of rkv's gRPC services: tonic's prost codec with small buffers.
//!
//! Exists because tonic's default codec allocates an 8 KiB buffer for every request it
//! decodes and every response it encodes. rkv's requests and replies are tens of bytes,
//! and at tens of thousands of calls a second those allocations were a visible share of
//! the leader's CPU (glibc's `malloc_consolidate` and `unlink_chunk` in its profile).
//! The buffers here start small and grow when a message needs more, as tonic's do
//! (`server/tests/rkvd.rs::values_far_larger_than_the_codec_buffers_round_trip`).

use std::marker::PhantomData;

use tonic::codec::{BufferSettings, Codec};
use tonic_prost::{ProstCodec, ProstDecoder, ProstEncoder};

/// First capacity of a call's encode or decode buffer, in bytes.
pub const BUFFER_BYTES: usize = 256;
/// Bytes a streaming call encodes before it yields to the runtime (tonic's default).
const YIELD_THRESHOLD_BYTES: usize = 32 * 1024;

/// [`ProstCodec`] with [`BUFFER_BYTES`] buffers; generated services name it through
/// `codec_path` in the build scripts.
#[derive(Debug)]
pub struct SmallBufferCodec<T, U>(PhantomData<(T, U)>);

impl<T, U> Default for SmallBufferCodec<T, U> {
    fn default() -> Self {
        SmallBufferCodec(PhantomData)
    }
}

fn settings() -> BufferSettings {
    BufferSettings::new(BUFFER_BYTES, YIELD_THRESHOLD_BYTES)
}

impl<T, U> Codec for SmallBufferCodec<T, U>
where
    T: prost::Message + Send + 'static,
    U: prost::Message + Default + Send + 'static,
{
    type Encode = T;
    type Decode = U;
    type Encoder = ProstEncoder<T>;
    type Decoder = ProstDecoder<U>;

    fn encoder(&mut self) -> Self::Encoder {
        ProstCodec::<T, U>::raw_encoder(settings())
    }

    fn decoder(&mut self) -> Self::Decoder {
        ProstCodec::<T, U>::raw_decoder(settings())
    }
}

#[cfg(test)]
mod tests {
    /// The build scripts name this codec through `codec_path`: every generated method
    /// uses it, none tonic's default with its 8 KiB buffers.
    #[test]
    fn the_generated_services_use_the_small_buffer_codec() {
        for generated in [
            include_str!(concat!(env!("OUT_DIR"), "/rkv.v1.rs")),
            include_str!(concat!(env!("OUT_DIR"), "/rkvpb.rs")),
        ] {
            assert!(generated.contains("crate::codec::SmallBufferCodec::default()"));
            assert!(!generated.contains("ProstCodec"));
        }
    }
}
