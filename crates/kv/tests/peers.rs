//! The replicated address book: `SetPeer` commands, their encoding, and peers in snapshots.

use rkv_kv::{
    Command, DecodeError, LimitError, Output, PEER_FIELD_BYTES_MAX, PeerRecord, PeerRole,
    SNAPSHOT_FORMAT_VERSION, SNAPSHOT_FORMAT_VERSION_V1, StateMachine,
};

fn record(name: &str, port: u16, role: PeerRole) -> PeerRecord {
    PeerRecord {
        name: name.to_string(),
        peer_address: format!("127.0.0.1:{port}"),
        client_address: format!("127.0.0.1:{}", port + 1),
        role,
        incarnation: 0,
    }
}

fn set_peer(node_id: u64, record: Option<PeerRecord>) -> Vec<u8> {
    Command::SetPeer {
        now_ms: 5,
        node_id,
        record,
    }
    .encode()
}

#[test]
fn set_peer_round_trips_through_its_encoding() {
    for command in [
        Command::SetPeer {
            now_ms: 9,
            node_id: 7,
            record: Some(record("node1", 12001, PeerRole::Voter)),
        },
        Command::SetPeer {
            now_ms: 9,
            node_id: u64::MAX,
            record: Some(record("log1", 12003, PeerRole::Learner)),
        },
        Command::SetPeer {
            now_ms: 9,
            node_id: 3,
            record: None,
        },
    ] {
        let bytes = command.encode();
        assert_eq!(Command::decode(&bytes), Ok(command.clone()));
        // Every strict prefix is refused, never a panic.
        for cut in 0..bytes.len() {
            assert!(
                Command::decode(&bytes[..cut]).is_err(),
                "prefix of {cut} bytes"
            );
        }
    }
}

#[test]
fn a_set_peer_with_bad_text_or_role_is_rejected() {
    let mut bytes = set_peer(1, Some(record("a", 1, PeerRole::Voter)));
    let role = bytes.len() - 1;
    bytes[role] = 9;
    assert_eq!(Command::decode(&bytes), Err(DecodeError::InvalidFlag(9)));
    // The name "a" is the byte after its 4-byte length, which follows
    // version, kind, now_ms, node_id and the flag.
    let mut bytes = set_peer(1, Some(record("a", 1, PeerRole::Voter)));
    bytes[1 + 1 + 8 + 8 + 1 + 4] = 0xff;
    assert_eq!(Command::decode(&bytes), Err(DecodeError::InvalidText));
}

#[test]
fn applied_records_fill_the_book_and_a_none_removes_one() {
    let mut machine = StateMachine::new();
    let applied = machine.apply(
        1,
        &set_peer(7, Some(record("node1", 12001, PeerRole::Voter))),
    );
    assert_eq!(applied[0].output, Output::PeerSet { node_id: 7 });
    assert!(
        applied[0].events.is_empty(),
        "the book is not part of the map"
    );
    machine.apply(
        2,
        &set_peer(8, Some(record("log1", 12003, PeerRole::Learner))),
    );
    assert_eq!(machine.peers().len(), 2);
    assert_eq!(machine.peers()[&8].role, PeerRole::Learner);
    // A new record replaces the old one (a server that moved).
    machine.apply(
        3,
        &set_peer(7, Some(record("node1", 22001, PeerRole::Voter))),
    );
    assert_eq!(machine.peers()[&7].peer_address, "127.0.0.1:22001");
    machine.apply(4, &set_peer(8, None));
    assert_eq!(machine.peers().keys().copied().collect::<Vec<_>>(), vec![7]);
    assert_eq!(machine.scan(b"", None, 10).len(), 0);
}

#[test]
fn an_oversized_field_is_refused_and_changes_nothing() {
    let mut machine = StateMachine::new();
    let mut big = record("node1", 1, PeerRole::Voter);
    big.peer_address = "x".repeat(PEER_FIELD_BYTES_MAX + 1);
    let command = Command::SetPeer {
        now_ms: 1,
        node_id: 1,
        record: Some(big),
    };
    assert!(command.validate().is_err());
    let applied = machine.apply(1, &command.encode());
    assert_eq!(
        applied[0].output,
        Output::Limit(LimitError::ValueTooLarge {
            len: PEER_FIELD_BYTES_MAX + 1,
            max: PEER_FIELD_BYTES_MAX
        })
    );
    assert!(machine.peers().is_empty());
    assert_eq!(machine.applied_index(), 1);
}

#[test]
fn snapshots_carry_the_book_and_stay_version_1_without_it() {
    let mut machine = StateMachine::new();
    machine.apply(1, &Command::Register { now_ms: 1 }.encode());
    let without = machine.snapshot();
    assert_eq!(
        without[4], SNAPSHOT_FORMAT_VERSION_V1,
        "no peers: the old format"
    );

    machine.apply(
        2,
        &set_peer(7, Some(record("node1", 12001, PeerRole::Voter))),
    );
    machine.apply(
        3,
        &set_peer(9, Some(record("log1", 12003, PeerRole::Learner))),
    );
    let with = machine.snapshot();
    assert_eq!(with[4], SNAPSHOT_FORMAT_VERSION);
    let restored = StateMachine::restore(&with).expect("restores");
    assert_eq!(restored.peers(), machine.peers());
    assert_eq!(restored.digest(), machine.digest());
    assert_ne!(
        StateMachine::restore(&without)
            .expect("v1 restores")
            .digest(),
        machine.digest()
    );
    // Corruption anywhere is an error, never a panic.
    for at in 0..with.len() {
        let mut bad = with.clone();
        bad[at] ^= 0x40;
        assert!(StateMachine::restore(&bad).is_err(), "flipped byte {at}");
    }
}

/// Incarnations tell a member from a wiped directory or a second process under the same
/// name. A record without one (0) encodes exactly as before they existed, so older logs,
/// peer files and snapshots read back unchanged.
#[test]
fn incarnations_round_trip_and_records_without_one_keep_the_old_encoding() {
    let old = record("node1", 12001, PeerRole::Learner);
    let old_bytes = set_peer(7, Some(old.clone()));
    // The old layout: the role byte is the last byte, with no flag.
    assert_eq!(old_bytes.last(), Some(&1));
    let with = PeerRecord {
        incarnation: 0x1234_5678_9abc_def0,
        ..old.clone()
    };
    let with_bytes = set_peer(7, Some(with.clone()));
    assert_eq!(with_bytes.len(), old_bytes.len() + 8);
    assert_eq!(
        &with_bytes[..old_bytes.len() - 1],
        &old_bytes[..old_bytes.len() - 1]
    );
    for (bytes, expected) in [(&old_bytes, &old), (&with_bytes, &with)] {
        match Command::decode(bytes) {
            Ok(Command::SetPeer {
                record: Some(decoded),
                ..
            }) => assert_eq!(&decoded, expected),
            other => panic!("{other:?}"),
        }
        for cut in 0..bytes.len() {
            assert!(Command::decode(&bytes[..cut]).is_err(), "prefix of {cut}");
        }
    }
    // A flagged zero is not something this build writes.
    let mut zero = old_bytes.clone();
    let role = zero.len() - 1;
    zero[role] |= 0x80;
    zero.extend_from_slice(&0u64.to_le_bytes());
    assert!(Command::decode(&zero).is_err());
    // Snapshots keep incarnations, and a snapshot of records without one is the same
    // bytes an older build wrote for them.
    let mut machine = StateMachine::new();
    machine.apply(1, &old_bytes);
    let before = machine.snapshot();
    machine.apply(2, &set_peer(8, Some(with.clone())));
    let restored = StateMachine::restore(&machine.snapshot()).expect("restores");
    assert_eq!(restored.peers().get(&8), Some(&with));
    assert_eq!(restored.peers().get(&7), Some(&old));
    let mut only_old = StateMachine::new();
    only_old.apply(1, &old_bytes);
    assert_eq!(only_old.snapshot(), before);
}
