//! The command encoding: round trips, the exact layout, and a decoder that never panics.

mod common;

use bytes::Bytes;
use common::{b, put};
use proptest::prelude::*;
use rkv_kv::{COMMAND_FORMAT_VERSION, ClientSeq, Command, DecodeError, WriteOp};

fn bytes_strategy() -> impl Strategy<Value = Bytes> {
    proptest::collection::vec(any::<u8>(), 0..40).prop_map(Bytes::from)
}

fn op_strategy() -> impl Strategy<Value = WriteOp> {
    prop_oneof![
        (bytes_strategy(), bytes_strategy()).prop_map(|(key, value)| WriteOp::Put { key, value }),
        bytes_strategy().prop_map(|key| WriteOp::Delete { key }),
        (
            bytes_strategy(),
            proptest::option::of(bytes_strategy()),
            proptest::option::of(bytes_strategy())
        )
            .prop_map(|(key, expected, new)| WriteOp::CompareAndSwap {
                key,
                expected,
                new
            }),
        proptest::collection::vec((bytes_strategy(), bytes_strategy()), 0..8)
            .prop_map(|pairs| WriteOp::PutMany { pairs }),
    ]
}

fn command_strategy() -> impl Strategy<Value = Command> {
    prop_oneof![
        any::<u64>().prop_map(|now_ms| Command::Register { now_ms }),
        (
            any::<u64>(),
            proptest::option::of((any::<u64>(), any::<u64>())),
            op_strategy()
        )
            .prop_map(|(now_ms, session, op)| Command::Write {
                now_ms,
                session: session.map(|(client_id, seq)| ClientSeq { client_id, seq }),
                op,
            }),
    ]
}

proptest! {
    #[test]
    fn commands_round_trip(command in command_strategy()) {
        let encoded = command.encode();
        prop_assert_eq!(encoded[0], COMMAND_FORMAT_VERSION);
        prop_assert_eq!(Command::decode(&encoded), Ok(command));
    }

    #[test]
    fn decoding_arbitrary_bytes_never_panics(input in proptest::collection::vec(any::<u8>(), 0..200)) {
        let _ = Command::decode(&input);
    }

    /// Mutations of valid encodings reach deep into the decoder, where random bytes do
    /// not; whatever decodes must re-encode to the same bytes (one encoding per command).
    #[test]
    fn decoding_mutated_commands_never_panics(
        command in command_strategy(),
        position in any::<usize>(),
        byte in any::<u8>(),
        cut in any::<usize>(),
    ) {
        let mut encoded = command.encode();
        let position = position % encoded.len();
        encoded[position] = byte;
        encoded.truncate(cut % (encoded.len() + 1));
        if let Ok(decoded) = Command::decode(&encoded) {
            prop_assert_eq!(decoded.encode(), encoded);
        }
    }
}

#[test]
fn the_layout_is_as_documented() {
    let command = Command::Write {
        now_ms: 0x0102,
        session: Some(ClientSeq {
            client_id: 7,
            seq: 9,
        }),
        op: put("k", "vv"),
    };
    let mut want = vec![1u8, 1];
    want.extend(0x0102u64.to_le_bytes());
    want.push(1);
    want.extend(7u64.to_le_bytes());
    want.extend(9u64.to_le_bytes());
    want.extend(1u32.to_le_bytes());
    want.extend(b"k");
    want.extend(2u32.to_le_bytes());
    want.extend(b"vv");
    assert_eq!(command.encode(), want);

    let mut want = vec![1u8, 0];
    want.extend(5u64.to_le_bytes());
    assert_eq!(Command::Register { now_ms: 5 }.encode(), want);
}

#[test]
fn decode_errors_are_specific() {
    assert_eq!(Command::decode(&[]), Err(DecodeError::Empty));
    assert_eq!(
        Command::decode(&[2]),
        Err(DecodeError::UnsupportedVersion(2))
    );
    assert_eq!(Command::decode(&[1]), Err(DecodeError::Truncated));
    let mut unknown = vec![1u8, 9];
    unknown.extend(0u64.to_le_bytes());
    assert_eq!(Command::decode(&unknown), Err(DecodeError::UnknownKind(9)));

    let mut trailing = Command::Register { now_ms: 1 }.encode();
    trailing.push(0);
    assert_eq!(
        Command::decode(&trailing),
        Err(DecodeError::TrailingBytes(1))
    );

    let mut bad_flag = vec![1u8, 2];
    bad_flag.extend(0u64.to_le_bytes());
    bad_flag.push(2);
    assert_eq!(Command::decode(&bad_flag), Err(DecodeError::InvalidFlag(2)));

    // A length far beyond the input is truncation, not an allocation.
    let mut huge = vec![1u8, 2];
    huge.extend(0u64.to_le_bytes());
    huge.push(0);
    huge.extend(u32::MAX.to_le_bytes());
    assert_eq!(Command::decode(&huge), Err(DecodeError::Truncated));
    let mut many = vec![1u8, 4];
    many.extend(0u64.to_le_bytes());
    many.push(0);
    many.extend(u32::MAX.to_le_bytes());
    assert_eq!(Command::decode(&many), Err(DecodeError::Truncated));
}

#[test]
fn validate_matches_the_limits() {
    let ok = Command::Write {
        now_ms: 0,
        session: None,
        op: put("k", "v"),
    };
    assert_eq!(ok.validate(), Ok(()));
    assert_eq!(Command::Register { now_ms: 0 }.validate(), Ok(()));
    let big = Command::Write {
        now_ms: 0,
        session: None,
        op: WriteOp::CompareAndSwap {
            key: b("k"),
            expected: Some(Bytes::from(vec![0; rkv_kv::VALUE_BYTES_MAX + 1])),
            new: None,
        },
    };
    assert!(big.validate().is_err());
}
