//! The peer decoder against hostile input: it never panics, never allocates from an
//! unchecked length, and everything it accepts re-encodes to the same bytes.

mod common;

use bytes::{BufMut, BytesMut};
use common::Rng;
use proptest::prelude::*;
use rkv_wire::peer::{Frame, FrameCodec, encode_frame};

/// Decodes frames until the codec needs more bytes or fails; returns what it decoded.
fn drain(codec: &mut FrameCodec, src: &mut BytesMut) -> Vec<Frame> {
    let mut frames = Vec::new();
    while let Ok(Some(frame)) = codec.decode(src) {
        frames.push(frame);
    }
    frames
}

/// A valid header around an arbitrary body, so that the body parser itself is exercised
/// rather than only the checksum.
fn with_header(body: &[u8]) -> BytesMut {
    let mut src = BytesMut::new();
    src.put_u32_le(body.len() as u32);
    src.put_u32_le(crc32c::crc32c(body));
    src.put_slice(body);
    src
}

/// Anything that decodes as MESSAGES re-encodes to exactly the same body (canonical
/// encoding), so nothing the decoder accepts is ambiguous.
fn check_canonical(body: &[u8]) {
    let mut src = with_header(body);
    if let Ok(Some(Frame::Messages(messages))) = FrameCodec::new(1 << 20).decode(&mut src) {
        let again = encode_frame(&messages).unwrap();
        assert_eq!(&again[8..], body);
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2_000))]

    #[test]
    fn arbitrary_bytes_never_panic(data in proptest::collection::vec(any::<u8>(), 0..512)) {
        let mut codec = FrameCodec::new(1 << 16);
        let mut src = BytesMut::from(&data[..]);
        let _ = drain(&mut codec, &mut src);
    }

    #[test]
    fn arbitrary_bodies_with_valid_checksums_never_panic(
        kind in prop_oneof![Just(1u8), Just(2u8), Just(3u8), any::<u8>()],
        rest in proptest::collection::vec(any::<u8>(), 0..256),
    ) {
        let mut body = vec![kind];
        body.extend_from_slice(&rest);
        let mut src = with_header(&body);
        let _ = FrameCodec::new(1 << 16).decode(&mut src);
        check_canonical(&body);
    }

    #[test]
    fn mutated_valid_frames_never_panic(
        seed in any::<u64>(),
        edits in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..6),
        cut in any::<prop::sample::Index>(),
    ) {
        let mut rng = Rng::new(seed);
        let batch = rng.batch(6);
        let bytes = encode_frame(&batch).unwrap();
        let mut body = bytes[8..].to_vec();
        for (position, value) in edits {
            let i = position.index(body.len());
            body[i] = value;
        }
        // Also drop a tail, so that counts and lengths point past the end.
        let keep = cut.index(body.len() + 1);
        body.truncate(keep.max(1));
        let mut src = with_header(&body);
        let _ = FrameCodec::new(1 << 20).decode(&mut src);
        check_canonical(&body);
    }

    #[test]
    fn seeded_batches_round_trip(seed in any::<u64>()) {
        let mut rng = Rng::new(seed);
        let batch = rng.batch(10);
        let bytes = encode_frame(&batch).unwrap();
        let mut src = BytesMut::from(&bytes[..]);
        let frame = FrameCodec::default().decode(&mut src).unwrap();
        prop_assert_eq!(frame, Some(Frame::Messages(batch)));
        prop_assert!(src.is_empty());
    }
}
