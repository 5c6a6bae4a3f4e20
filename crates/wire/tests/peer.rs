//! The peer protocol against its specification (`PEER.md`).

mod common;

use bytes::{BufMut, Bytes, BytesMut};
use common::{Rng, every_variant};
use rkv_raft::{Index, Message, MessageBody, NodeId, Term};
use rkv_wire::peer::{
    DEFAULT_MAX_FRAME_BYTES, FRAME_HEADER_BYTES, Frame, FrameCodec, FrameDecoder, HELLO_BODY_BYTES,
    Hello, MESSAGES_BODY_OVERHEAD_BYTES_MAX, PROTOCOL_VERSION, Reject, WireError, encode_frame,
    encode_messages, encoded_len,
};
use tokio_util::codec::{Decoder, Encoder};

/// Encodes, decodes and compares; also checks `encoded_len` against the bytes written.
fn round_trip(messages: &[Message]) {
    let bytes = encode_frame(messages).unwrap();
    let body_len = bytes.len() - FRAME_HEADER_BYTES;
    let content: usize = messages.iter().map(encoded_len).sum();
    assert!(body_len > content && body_len <= content + MESSAGES_BODY_OVERHEAD_BYTES_MAX);
    for message in messages {
        let single = encode_frame(std::slice::from_ref(message)).unwrap();
        assert_eq!(
            single.len(),
            FRAME_HEADER_BYTES + 2 + encoded_len(message),
            "{message:?}"
        );
    }
    let mut src = BytesMut::from(&bytes[..]);
    let frame = FrameDecoder::default().decode(&mut src).unwrap().unwrap();
    assert_eq!(frame, Frame::Messages(messages.to_vec()));
    assert!(src.is_empty());
}

fn frame_bytes(frame: &Frame) -> BytesMut {
    let mut dst = BytesMut::new();
    frame.encode(&mut dst, DEFAULT_MAX_FRAME_BYTES).unwrap();
    dst
}

#[test]
fn every_variant_round_trips_alone_and_batched() {
    let all = every_variant();
    for message in &all {
        round_trip(std::slice::from_ref(message));
    }
    round_trip(&all);
    round_trip(&[]);
}

#[test]
fn seeded_random_messages_round_trip() {
    for seed in 0..2_000 {
        let mut rng = Rng::new(seed);
        let batch = rng.batch(12);
        let bytes = encode_frame(&batch).unwrap();
        let mut src = BytesMut::from(&bytes[..]);
        let frame = FrameCodec::default().decode(&mut src);
        assert_eq!(
            frame.unwrap(),
            Some(Frame::Messages(batch.clone())),
            "seed {seed}"
        );
        // Canonical: re-encoding the decoded batch gives the same bytes.
        assert_eq!(encode_frame(&batch).unwrap(), bytes, "seed {seed}");
        for message in &batch {
            let single = encode_frame(std::slice::from_ref(message)).unwrap();
            assert_eq!(single.len(), FRAME_HEADER_BYTES + 2 + encoded_len(message));
        }
    }
}

#[test]
fn a_stream_of_frames_decodes_in_order_whatever_the_chunking() {
    let mut rng = Rng::new(99);
    let mut frames = vec![Frame::Hello(Hello::new(7, NodeId(1), NodeId(2)))];
    frames.extend((0..50).map(|_| Frame::Messages(rng.batch(5))));
    frames.push(Frame::Reject(Reject::ClusterMismatch { cluster_id: 3 }));
    let mut stream = BytesMut::new();
    let mut codec = FrameCodec::default();
    for frame in &frames {
        Encoder::<&Frame>::encode(&mut codec, frame, &mut stream).unwrap();
    }
    let stream = stream.freeze();
    for chunk in [1, 2, 3, 7, 8, 9, 64, 1000, stream.len()] {
        let mut decoded = Vec::new();
        let mut src = BytesMut::new();
        for piece in stream.chunks(chunk) {
            src.extend_from_slice(piece);
            // Through the tokio-util trait, as a `Framed` stream would.
            while let Some(frame) = Decoder::decode(&mut codec, &mut src).unwrap() {
                decoded.push(frame);
            }
        }
        assert!(src.is_empty(), "chunk {chunk}");
        assert_eq!(decoded, frames, "chunk {chunk}");
    }
}

#[test]
fn truncated_input_waits_for_more_bytes() {
    let bytes = encode_frame(&every_variant()).unwrap();
    let mut codec = FrameCodec::default();
    for cut in 0..bytes.len() {
        let mut src = BytesMut::from(&bytes[..cut]);
        assert_eq!(codec.decode(&mut src).unwrap(), None, "cut at {cut}");
        assert_eq!(src.len(), cut, "nothing consumed at cut {cut}");
    }
    let mut src = BytesMut::from(&bytes[..]);
    assert!(codec.decode(&mut src).unwrap().is_some());
}

#[test]
fn corruption_of_any_byte_is_detected() {
    let bytes = encode_frame(&every_variant()).unwrap();
    let mut codec = FrameCodec::default();
    for position in 0..bytes.len() {
        for flip in [0x01, 0x80, 0xff] {
            let mut corrupt = BytesMut::from(&bytes[..]);
            corrupt[position] ^= flip;
            match codec.decode(&mut corrupt) {
                // A corrupted length either waits for bytes that never come, is too
                // large, or lands the checksum on other bytes.
                Ok(None) => assert!(position < 4, "position {position}"),
                Ok(Some(frame)) => panic!("corruption at {position} not detected: {frame:?}"),
                Err(
                    WireError::BadChecksum { .. }
                    | WireError::FrameTooLarge { .. }
                    | WireError::EmptyFrame,
                ) => {}
                Err(e) => panic!("unexpected error at {position}: {e}"),
            }
        }
    }
}

#[test]
fn crc_mismatch_is_typed() {
    let mut bytes = BytesMut::from(&encode_frame(&every_variant()).unwrap()[..]);
    let last = bytes.len() - 1;
    bytes[last] ^= 0x10;
    let err = FrameCodec::default().decode(&mut bytes).unwrap_err();
    assert!(matches!(err, WireError::BadChecksum { expected, actual } if expected != actual));
}

#[test]
fn oversized_length_is_rejected_from_the_header_without_allocating() {
    let mut codec = FrameCodec::new(1024);
    for len in [1025u32, 1 << 20, u32::MAX] {
        let mut src = BytesMut::with_capacity(FRAME_HEADER_BYTES);
        src.put_u32_le(len);
        src.put_u32_le(0);
        let capacity = src.capacity();
        let err = codec.decode(&mut src).unwrap_err();
        assert!(
            matches!(err, WireError::FrameTooLarge { len: l, max: 1024 } if l == u64::from(len))
        );
        assert_eq!(src.capacity(), capacity, "no allocation for {len}");
    }
    // The default maximum is 64 MiB.
    let mut src = BytesMut::new();
    src.put_u32_le(DEFAULT_MAX_FRAME_BYTES + 1);
    src.put_u32_le(0);
    assert!(matches!(
        FrameCodec::default().decode(&mut src),
        Err(WireError::FrameTooLarge { .. })
    ));
}

#[test]
fn the_encoder_refuses_frames_above_its_maximum_and_leaves_dst_alone() {
    let big = Message {
        from: NodeId(1),
        to: NodeId(2),
        term: Term(1),
        body: MessageBody::InstallSnapshot {
            meta: Default::default(),
            offset: 0,
            data: Bytes::from(vec![0; 2000]),
            done: true,
        },
    };
    let mut dst = BytesMut::from(&b"prefix"[..]);
    let err = encode_messages(std::slice::from_ref(&big), &mut dst, 1000).unwrap_err();
    assert!(matches!(err, WireError::FrameTooLarge { max: 1000, .. }));
    assert_eq!(&dst[..], b"prefix");
    // A body of exactly the maximum is accepted by both sides.
    let exact = (2 + encoded_len(&big)) as u32;
    encode_messages(std::slice::from_ref(&big), &mut dst, exact).unwrap();
    let mut src = dst.split_off(6);
    let frame = FrameCodec::new(exact).decode(&mut src).unwrap().unwrap();
    assert_eq!(frame, Frame::Messages(vec![big.clone()]));
    // One byte less: the decoder refuses it.
    let mut src = BytesMut::new();
    encode_messages(std::slice::from_ref(&big), &mut src, exact).unwrap();
    assert!(matches!(
        FrameCodec::new(exact - 1).decode(&mut src),
        Err(WireError::FrameTooLarge { .. })
    ));
}

#[test]
fn empty_body_and_unknown_kind_are_typed_errors() {
    let mut src = BytesMut::new();
    src.put_u32_le(0);
    src.put_u32_le(0);
    assert!(matches!(
        FrameCodec::default().decode(&mut src),
        Err(WireError::EmptyFrame)
    ));

    let body = [0x7e, 1, 2, 3];
    let mut src = BytesMut::new();
    src.put_u32_le(body.len() as u32);
    src.put_u32_le(crc32c::crc32c(&body));
    src.put_slice(&body);
    assert!(matches!(
        FrameCodec::default().decode(&mut src),
        Err(WireError::UnknownFrameKind(0x7e))
    ));
}

/// Wraps a hand-written body in a valid header.
fn with_header(body: &[u8]) -> BytesMut {
    let mut src = BytesMut::new();
    src.put_u32_le(body.len() as u32);
    src.put_u32_le(crc32c::crc32c(body));
    src.put_slice(body);
    src
}

#[test]
fn malformed_bodies_are_typed_errors() {
    let decode = |body: &[u8]| FrameCodec::default().decode(&mut with_header(body));
    // Unknown message tag.
    assert!(matches!(
        decode(&[0x02, 1, 1, 2, 3, 99]),
        Err(WireError::UnknownTag {
            what: "message",
            tag: 99
        })
    ));
    // Bool that is 2.
    assert!(matches!(
        decode(&[0x02, 1, 1, 2, 3, 2, 2]),
        Err(WireError::BadBool { value: 2, .. })
    ));
    // Trailing byte after a complete TimeoutNow.
    assert!(matches!(
        decode(&[0x02, 1, 1, 2, 3, 11, 0]),
        Err(WireError::TrailingBytes { count: 1 })
    ));
    // A message cut short.
    assert!(matches!(
        decode(&[0x02, 1, 1, 2, 3, 1, 5]),
        Err(WireError::Truncated { .. })
    ));
    // A count of messages the body cannot hold.
    assert!(matches!(
        decode(&[0x02, 0x80, 0x01, 1, 2, 3, 11]),
        Err(WireError::Truncated { .. })
    ));
    // Membership not strictly increasing: snapshot meta with voters [2, 1].
    assert!(matches!(
        decode(&[0x02, 1, 1, 2, 3, 9, 0, 0, 2, 2, 1, 0, 0, 1, 0]),
        Err(WireError::InvalidMembership)
    ));
    // An id both voter and learner.
    assert!(matches!(
        decode(&[0x02, 1, 1, 2, 3, 9, 0, 0, 1, 4, 1, 4, 0, 1, 0]),
        Err(WireError::InvalidMembership)
    ));
    // The same snapshot, well formed, decodes.
    assert!(decode(&[0x02, 1, 1, 2, 3, 9, 0, 0, 1, 4, 1, 5, 0, 1, 0]).is_ok());
}

#[test]
fn hello_layout_matches_the_spec() {
    let bytes = frame_bytes(&Frame::Hello(Hello::new(0x2a, NodeId(1), NodeId(2))));
    assert_eq!(bytes.len(), FRAME_HEADER_BYTES + HELLO_BODY_BYTES);
    assert_eq!(&bytes[..4], &[0x1f, 0, 0, 0]);
    let body: &[u8] = &[
        0x01, b'R', b'K', b'V', b'P', 0x01, 0x00, 0x2a, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0,
        0, 2, 0, 0, 0, 0, 0, 0, 0,
    ];
    assert_eq!(&bytes[8..], body);
    assert_eq!(&bytes[4..8], &crc32c::crc32c(body).to_le_bytes());
}

#[test]
fn heartbeat_example_from_the_spec() {
    let message = Message {
        from: NodeId(1),
        to: NodeId(2),
        term: Term(3),
        body: MessageBody::Heartbeat {
            commit: Index(5),
            read_round: 300,
        },
    };
    let bytes = encode_frame(&[message]).unwrap();
    assert_eq!(&bytes[..4], &[9, 0, 0, 0]);
    assert_eq!(&bytes[8..], &[0x02, 0x01, 1, 2, 3, 7, 5, 0xac, 0x02]);
}

#[test]
fn hello_and_reject_ignore_appended_fields() {
    let mut body = frame_bytes(&Frame::Hello(Hello::new(5, NodeId(3), NodeId(4))))
        .split_off(FRAME_HEADER_BYTES)
        .to_vec();
    body[5] = 9; // a future version
    body.extend_from_slice(b"future fields");
    let frame = FrameCodec::default()
        .decode(&mut with_header(&body))
        .unwrap()
        .unwrap();
    let hello = frame.into_hello().unwrap();
    assert_eq!(hello.protocol_version, 9);
    assert!(matches!(
        hello.check(5, NodeId(4), None),
        Err(WireError::UnsupportedVersion { peer: 9, .. })
    ));

    let mut body = vec![0x03, 2];
    body.extend_from_slice(&77u64.to_le_bytes());
    body.extend_from_slice(b"more");
    let frame = FrameCodec::default()
        .decode(&mut with_header(&body))
        .unwrap();
    assert_eq!(
        frame,
        Some(Frame::Reject(Reject::ClusterMismatch { cluster_id: 77 }))
    );
}

#[test]
fn bad_magic_is_not_an_rkv_peer() {
    let mut body = frame_bytes(&Frame::Hello(Hello::new(5, NodeId(3), NodeId(4))))
        .split_off(FRAME_HEADER_BYTES)
        .to_vec();
    body[1..5].copy_from_slice(b"HTTP");
    let err = FrameCodec::default()
        .decode(&mut with_header(&body))
        .unwrap_err();
    assert!(matches!(err, WireError::BadMagic(m) if &m == b"HTTP"));
    assert!(err.is_handshake());
}

#[test]
fn handshake_checks_and_rejects() {
    let hello = Hello::new(42, NodeId(1), NodeId(2));
    assert_eq!(hello.protocol_version, PROTOCOL_VERSION);
    hello.check(42, NodeId(2), None).unwrap();
    hello.check(42, NodeId(2), Some(NodeId(1))).unwrap();

    // A peer from another cluster gets a clear error, and a REJECT that names ours.
    let err = hello.check(43, NodeId(2), None).unwrap_err();
    assert!(matches!(
        err,
        WireError::ClusterMismatch {
            local: 43,
            peer: 42
        }
    ));
    assert!(err.to_string().contains("cluster 0x2a"), "{err}");
    let reject = err.reject().unwrap();
    assert_eq!(reject, Reject::ClusterMismatch { cluster_id: 43 });

    // The REJECT travels back and becomes a typed error on the other side.
    let mut stream = frame_bytes(&Frame::Reject(reject));
    let frame = FrameCodec::default().decode(&mut stream).unwrap().unwrap();
    let err = frame.into_hello().unwrap_err();
    assert!(matches!(
        err,
        WireError::Rejected(Reject::ClusterMismatch { cluster_id: 43 })
    ));
    assert!(err.to_string().contains("another cluster, 0x2b"), "{err}");
    assert!(err.is_handshake());

    let err = hello.check(42, NodeId(3), None).unwrap_err();
    assert!(matches!(
        err,
        WireError::WrongNode {
            local: NodeId(3),
            addressed: NodeId(2)
        }
    ));
    assert_eq!(err.reject(), Some(Reject::WrongNode { node: NodeId(3) }));

    let err = hello.check(42, NodeId(2), Some(NodeId(5))).unwrap_err();
    assert!(matches!(
        err,
        WireError::UnexpectedPeer {
            expected: NodeId(5),
            actual: NodeId(1)
        }
    ));
    assert_eq!(
        err.reject(),
        Some(Reject::UnexpectedPeer {
            expected: NodeId(5)
        })
    );

    let old = Hello {
        protocol_version: 0,
        ..hello
    };
    let err = old.check(42, NodeId(2), None).unwrap_err();
    assert!(matches!(err, WireError::UnsupportedVersion { peer: 0, .. }));
    assert_eq!(
        err.reject(),
        Some(Reject::UnsupportedVersion {
            supported_max: PROTOCOL_VERSION
        })
    );

    // Decoding errors are not handshake refusals and have nothing to send back.
    let err = WireError::BadChecksum {
        expected: 1,
        actual: 2,
    };
    assert!(!err.is_handshake());
    assert_eq!(err.reject(), None);
}

#[test]
fn every_reject_round_trips() {
    let rejects = [
        Reject::UnsupportedVersion { supported_max: 3 },
        Reject::ClusterMismatch {
            cluster_id: u64::MAX,
        },
        Reject::WrongNode { node: NodeId(7) },
        Reject::UnexpectedPeer {
            expected: NodeId(8),
        },
        Reject::Other {
            code: 200,
            value: 5,
        },
        Reject::Other {
            code: 1,
            value: 1 << 40,
        },
    ];
    for reject in rejects {
        let mut src = frame_bytes(&Frame::Reject(reject));
        let frame = FrameCodec::default().decode(&mut src).unwrap();
        assert_eq!(frame, Some(Frame::Reject(reject)));
        assert!(!reject.to_string().is_empty());
    }
}

#[test]
fn frame_order_helpers() {
    let messages = Frame::Messages(vec![]);
    assert!(matches!(
        messages.clone().into_hello(),
        Err(WireError::UnexpectedFrame {
            expected: "HELLO",
            ..
        })
    ));
    assert_eq!(messages.into_messages().unwrap(), vec![]);
    let hello = Frame::Hello(Hello::new(1, NodeId(1), NodeId(2)));
    assert!(matches!(
        hello.into_messages(),
        Err(WireError::UnexpectedFrame {
            expected: "MESSAGES",
            ..
        })
    ));
    let reject = Frame::Reject(Reject::WrongNode { node: NodeId(1) });
    assert!(matches!(
        reject.into_messages(),
        Err(WireError::Rejected(_))
    ));
}

#[test]
fn encoder_trait_impls_agree() {
    let batch = every_variant();
    let mut codec = FrameCodec::default();
    let mut a = BytesMut::new();
    Encoder::<&[Message]>::encode(&mut codec, &batch, &mut a).unwrap();
    let mut b = BytesMut::new();
    Encoder::<Frame>::encode(&mut codec, Frame::Messages(batch.clone()), &mut b).unwrap();
    assert_eq!(a, b);
    assert_eq!(a.freeze(), encode_frame(&batch).unwrap());
}

#[test]
fn command_payloads_are_zero_copy_slices_of_the_frame() {
    let batch = every_variant();
    let bytes = encode_frame(&batch).unwrap();
    let mut src = BytesMut::from(&bytes[..]);
    let start = src.as_ptr() as usize;
    let end = start + src.len();
    let Some(Frame::Messages(decoded)) = FrameCodec::default().decode(&mut src).unwrap() else {
        panic!("expected messages");
    };
    let snapshot = decoded
        .iter()
        .find_map(|m| match &m.body {
            MessageBody::InstallSnapshot { data, .. } if !data.is_empty() => Some(data.clone()),
            _ => None,
        })
        .unwrap();
    let ptr = snapshot.as_ptr() as usize;
    assert!(ptr >= start && ptr < end, "snapshot data was copied");
}
