//! Random operation sequences against a reference model; snapshots, restore, digests.

mod common;

use std::collections::BTreeMap;

use bytes::Bytes;
use common::{Rng, for_seeds};
use proptest::prelude::*;
use rkv_kv::{
    Applied, ClientSeq, Command, Event, EventKind, Output, SEQ_WINDOW, SESSION_TTL_MS,
    SNAPSHOT_MAGIC, SessionError, SnapshotError, StateMachine, WriteOp,
};

/// One committed log entry as a driver sees it.
#[derive(Clone, Debug)]
enum Entry {
    Command(Vec<u8>),
    Noop,
}

/// The session rules written as plainly as possible, to check the real machine against.
#[derive(Default)]
struct Model {
    map: BTreeMap<Bytes, Bytes>,
    sessions: BTreeMap<u64, ModelSession>,
    clock: u64,
}

#[derive(Default)]
struct ModelSession {
    last_seq: u64,
    last_result: Option<Output>,
    active: u64,
    buffered: BTreeMap<u64, (u64, WriteOp)>,
}

impl Model {
    fn apply(&mut self, index: u64, payload: &[u8]) -> Vec<Applied> {
        let answer = |index, session, output| Applied {
            index,
            session,
            output,
            events: Vec::new(),
            duplicate: false,
        };
        let command = match Command::decode(payload) {
            Ok(command) => command,
            Err(error) => return vec![answer(index, None, Output::Rejected(error))],
        };
        self.clock = self.clock.max(command.now_ms());
        let mut out = Vec::new();
        let mut expired: Vec<(u64, u64)> = self
            .sessions
            .iter()
            .filter(|(_, s)| self.clock - s.active > SESSION_TTL_MS)
            .map(|(id, s)| (s.active, *id))
            .collect();
        expired.sort();
        for (_, client_id) in expired {
            let session = self.sessions.remove(&client_id).unwrap();
            for (seq, (index, _)) in session.buffered {
                let error = Output::Session(SessionError::Expired { client_id });
                out.push(answer(index, Some(ClientSeq { client_id, seq }), error));
            }
        }
        let (session, op) = match command {
            Command::Register { .. } => {
                let session = ModelSession {
                    active: self.clock,
                    ..ModelSession::default()
                };
                self.sessions.insert(index, session);
                out.push(answer(index, None, Output::Registered { client_id: index }));
                return out;
            }
            Command::Write { session, op, .. } => (session, op),
            // The model covers the map and sessions; the address book has its own tests
            // (tests/peers.rs), and this test's generator never makes a SetPeer.
            Command::SetPeer { node_id, .. } => {
                out.push(answer(index, None, Output::PeerSet { node_id }));
                return out;
            }
        };
        let Some(cs) = session else {
            let (output, events) = self.execute(index, &op);
            out.push(Applied {
                events,
                ..answer(index, None, output)
            });
            return out;
        };
        let error = |e| answer(index, Some(cs), Output::Session(e));
        let client_id = cs.client_id;
        if cs.seq == 0 {
            out.push(error(SessionError::ZeroSeq { client_id }));
            return out;
        }
        let Some(session) = self.sessions.get_mut(&client_id) else {
            out.push(error(SessionError::Unknown { client_id }));
            return out;
        };
        session.active = self.clock;
        let last_seq = session.last_seq;
        if cs.seq <= last_seq {
            let output = if cs.seq == last_seq {
                session.last_result.clone().unwrap()
            } else {
                Output::Duplicate
            };
            out.push(Applied {
                duplicate: true,
                ..answer(index, Some(cs), output)
            });
        } else if cs.seq - last_seq > SEQ_WINDOW {
            let seq = cs.seq;
            out.push(error(SessionError::TooFarAhead {
                client_id,
                seq,
                last_seq,
            }));
        } else if cs.seq > last_seq + 1 {
            session.buffered.entry(cs.seq).or_insert((index, op));
        } else {
            let mut ready = vec![(index, cs.seq, op)];
            let mut next = cs.seq + 1;
            while let Some((index, op)) = session.buffered.remove(&next) {
                ready.push((index, next, op));
                next += 1;
            }
            for (own_index, seq, op) in ready {
                let (output, events) = self.execute(index, &op);
                let session = self.sessions.get_mut(&client_id).unwrap();
                session.last_seq = seq;
                session.last_result = Some(output.clone());
                let session = Some(ClientSeq { client_id, seq });
                out.push(Applied {
                    events,
                    ..answer(own_index, session, output)
                });
            }
        }
        out
    }

    fn execute(&mut self, index: u64, op: &WriteOp) -> (Output, Vec<Event>) {
        if let Err(e) = op.validate() {
            return (Output::Limit(e), Vec::new());
        }
        let event = |key: &Bytes, kind| Event {
            index,
            key: key.clone(),
            kind,
        };
        match op {
            WriteOp::Put { key, value } => {
                self.map.insert(key.clone(), value.clone());
                (Output::Put, vec![event(key, EventKind::Put(value.clone()))])
            }
            WriteOp::Delete { key } => {
                let existed = self.map.remove(key).is_some();
                let events = if existed {
                    vec![event(key, EventKind::Delete)]
                } else {
                    vec![]
                };
                (Output::Deleted { existed }, events)
            }
            WriteOp::CompareAndSwap { key, expected, new } => {
                let previous = self.map.get(key).cloned();
                let swapped = previous == *expected;
                let mut events = Vec::new();
                if swapped {
                    if let Some(value) = new {
                        self.map.insert(key.clone(), value.clone());
                        events.push(event(key, EventKind::Put(value.clone())));
                    } else if self.map.remove(key).is_some() {
                        events.push(event(key, EventKind::Delete));
                    }
                }
                (Output::Swapped { swapped, previous }, events)
            }
            WriteOp::PutMany { pairs } => {
                let mut events = Vec::new();
                for (key, value) in pairs {
                    self.map.insert(key.clone(), value.clone());
                    events.push(event(key, EventKind::Put(value.clone())));
                }
                (Output::PutMany, events)
            }
        }
    }
}

/// A random but plausible stream of entries: sessions registering and writing in order,
/// retrying, arriving early, plus stray, malformed and no-op entries, under a clock that
/// mostly creeps forward and sometimes jumps past the session idle time or goes back.
fn random_entries(rng: &mut Rng, count: usize) -> Vec<Entry> {
    let mut entries = Vec::with_capacity(count);
    let mut clients: Vec<(u64, u64)> = Vec::new(); // (client id, next seq)
    let mut now: u64 = 1_000_000;
    let key = |rng: &mut Rng| Bytes::from(format!("k{}", rng.below(40)));
    let value = |rng: &mut Rng| {
        if rng.chance(5) {
            None
        } else {
            Some(Bytes::from(format!("v{}", rng.below(5))))
        }
    };
    for position in 0..count {
        let index = position as u64 + 1;
        now = match rng.below(100) {
            0 => now + SESSION_TTL_MS + 1,
            1..=3 => now + SESSION_TTL_MS / 3,
            4..=6 => now.saturating_sub(rng.below(10_000)),
            _ => now + rng.below(50),
        };
        let roll = rng.below(100);
        if roll < 3 {
            entries.push(Entry::Noop);
            continue;
        }
        if roll < 5 {
            let len = rng.below(12) as usize;
            let garbage: Vec<u8> = (0..len).map(|_| rng.next_u64() as u8).collect();
            entries.push(Entry::Command(garbage));
            continue;
        }
        if roll < 10 || clients.is_empty() {
            clients.push((index, 1));
            entries.push(Entry::Command(Command::Register { now_ms: now }.encode()));
            continue;
        }
        let op = match rng.below(10) {
            0..=3 => WriteOp::Put {
                key: key(rng),
                value: value(rng).unwrap_or_default(),
            },
            4..=5 => WriteOp::Delete { key: key(rng) },
            6..=8 => WriteOp::CompareAndSwap {
                key: key(rng),
                expected: value(rng),
                new: value(rng),
            },
            _ => WriteOp::PutMany {
                pairs: (0..rng.below(4))
                    .map(|_| (key(rng), value(rng).unwrap_or_default()))
                    .collect(),
            },
        };
        let session = if rng.chance(10) {
            None
        } else {
            let pick = rng.below(clients.len() as u64) as usize;
            let (client_id, next) = &mut clients[pick];
            let seq = match rng.below(100) {
                0..=59 => {
                    *next += 1;
                    *next - 1
                }
                60..=74 => next.saturating_sub(1 + rng.below(3)).max(1),
                75..=94 => *next + 1 + rng.below(4),
                95..=97 => *next + SEQ_WINDOW + rng.below(3),
                _ => 0,
            };
            let client_id = if rng.chance(3) {
                *client_id + 1_000_000
            } else {
                *client_id
            };
            Some(ClientSeq { client_id, seq })
        };
        entries.push(Entry::Command(
            Command::Write {
                now_ms: now,
                session,
                op,
            }
            .encode(),
        ));
    }
    entries
}

fn feed(machine: &mut StateMachine, index: u64, entry: &Entry) -> Vec<Applied> {
    match entry {
        Entry::Command(payload) => machine.apply(index, payload),
        Entry::Noop => {
            machine.apply_noop(index);
            Vec::new()
        }
    }
}

#[test]
fn the_machine_matches_the_reference_model() {
    for_seeds(40, |seed| {
        let mut rng = Rng::new(seed);
        let entries = random_entries(&mut rng, 2_000);
        let mut machine = StateMachine::new();
        let mut model = Model::default();
        let (mut released, mut buffered) = (0, 0);
        for (position, entry) in entries.iter().enumerate() {
            let index = position as u64 + 1;
            let got = feed(&mut machine, index, entry);
            let want = match entry {
                Entry::Command(payload) => model.apply(index, payload),
                Entry::Noop => Vec::new(),
            };
            assert_eq!(got, want, "entry {index}");
            assert_eq!(machine.applied_index(), index);
            released += got.iter().filter(|a| a.index != index).count();
            buffered += usize::from(got.is_empty());
        }
        assert!(machine.range(b"", None).eq(model.map.iter()));
        assert_eq!(machine.session_count(), model.sessions.len());
        assert!(
            released > 0 && buffered > 0,
            "the generator exercises buffering"
        );
    });
}

#[test]
fn restore_of_a_snapshot_equals_the_original_and_continues_identically() {
    for_seeds(30, |seed| {
        let mut rng = Rng::new(seed ^ 0x5eed);
        let entries = random_entries(&mut rng, 1_500);
        let mut machine = StateMachine::new();
        let mut views = Vec::new();
        for (position, entry) in entries.iter().enumerate() {
            feed(&mut machine, position as u64 + 1, entry);
            if rng.chance(2) {
                views.push((machine.snapshot_view(), machine.digest()));
            }
        }
        let final_digest = machine.digest();
        assert_eq!(
            StateMachine::restore(&machine.snapshot()).unwrap().digest(),
            final_digest
        );
        for (view, digest_then) in views {
            // The view is frozen: later writes did not reach it.
            assert_eq!(view.digest(), digest_then);
            let bytes = view.encode();
            let mut restored = StateMachine::restore(&bytes).expect("a fresh snapshot restores");
            assert_eq!(restored.digest(), digest_then);
            assert_eq!(restored.applied_index(), view.applied_index());
            assert_eq!(restored.snapshot(), bytes, "one encoding per state");
            // A restored replica replays the whole log (old indexes are skipped) and ends
            // where the original did.
            for (position, entry) in entries.iter().enumerate() {
                feed(&mut restored, position as u64 + 1, entry);
            }
            assert_eq!(restored.digest(), final_digest);
        }
    });
}

#[test]
fn replicas_fed_the_same_entries_have_equal_digests_and_differ_otherwise() {
    for_seeds(10, |seed| {
        let entries = random_entries(&mut Rng::new(seed), 1_000);
        let mut a = StateMachine::new();
        let mut b = StateMachine::new();
        for (position, entry) in entries.iter().enumerate() {
            let index = position as u64 + 1;
            assert_eq!(feed(&mut a, index, entry), feed(&mut b, index, entry));
            assert_eq!(a.digest(), b.digest(), "entry {index}");
        }
        // One more write to one replica only is visible in the digest.
        let extra = Command::Write {
            now_ms: 0,
            session: None,
            op: WriteOp::Put {
                key: Bytes::from("divergent"),
                value: Bytes::new(),
            },
        };
        a.apply_command(entries.len() as u64 + 1, extra);
        assert_ne!(a.digest(), b.digest());
        b.apply_noop(entries.len() as u64 + 1);
        assert_ne!(a.digest(), b.digest());
    });
}

fn sample_snapshot() -> Vec<u8> {
    let mut machine = StateMachine::new();
    for (position, entry) in random_entries(&mut Rng::new(7), 300).iter().enumerate() {
        feed(&mut machine, position as u64 + 1, entry);
    }
    assert!(!machine.is_empty() && machine.session_count() > 0);
    machine.snapshot()
}

#[test]
fn restore_rejects_every_single_byte_corruption_and_truncation() {
    let snapshot = sample_snapshot();
    for position in 0..snapshot.len() {
        let mut corrupt = snapshot.clone();
        corrupt[position] ^= 0x20;
        assert!(
            StateMachine::restore(&corrupt).is_err(),
            "flip at {position}"
        );
    }
    for len in 0..snapshot.len() {
        assert!(
            StateMachine::restore(&snapshot[..len]).is_err(),
            "truncated to {len}"
        );
    }
    assert_eq!(
        StateMachine::restore(b"RKV").err(),
        Some(SnapshotError::TooShort)
    );
    let mut foreign = snapshot.clone();
    foreign[0] = b'X';
    assert_eq!(
        StateMachine::restore(&foreign).err(),
        Some(SnapshotError::BadMagic)
    );
    let mut future = snapshot;
    future[4] = 3;
    assert_eq!(
        StateMachine::restore(&future).err(),
        Some(SnapshotError::UnsupportedVersion(3))
    );
}

/// Wraps a body in a valid header and checksum, to reach past the checksum check.
fn sealed(body: &[u8]) -> Vec<u8> {
    let mut out = SNAPSHOT_MAGIC.to_vec();
    out.push(1);
    out.extend_from_slice(body);
    let crc = crc32c_of(&out);
    out.extend(crc.to_le_bytes());
    out
}

/// CRC-32C (Castagnoli), bitwise: independent of the crate's implementation.
fn crc32c_of(data: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &byte in data {
        crc ^= u32::from(byte);
        for _ in 0..8 {
            crc = if crc & 1 == 1 {
                (crc >> 1) ^ 0x82f6_3b78
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

#[test]
fn restore_checks_invariants_behind_a_valid_checksum() {
    // Two pairs out of order.
    let mut body = Vec::new();
    body.extend(5u64.to_le_bytes()); // applied index
    body.extend(0u64.to_le_bytes()); // clock
    body.extend(2u64.to_le_bytes());
    for key in [b"b", b"a"] {
        body.extend(1u32.to_le_bytes());
        body.extend(key);
        body.extend(0u32.to_le_bytes());
    }
    body.extend(0u64.to_le_bytes()); // sessions
    assert_eq!(
        StateMachine::restore(&sealed(&body)).err(),
        Some(SnapshotError::Invalid("keys out of order"))
    );
    // The same in order restores, and the sealed bytes are exactly what snapshot() writes.
    let mut ordered = Vec::new();
    ordered.extend(5u64.to_le_bytes());
    ordered.extend(0u64.to_le_bytes());
    ordered.extend(2u64.to_le_bytes());
    for key in [b"a", b"b"] {
        ordered.extend(1u32.to_le_bytes());
        ordered.extend(key);
        ordered.extend(0u32.to_le_bytes());
    }
    ordered.extend(0u64.to_le_bytes());
    let restored = StateMachine::restore(&sealed(&ordered)).unwrap();
    assert_eq!(restored.len(), 2);
    assert_eq!(restored.applied_index(), 5);
    assert_eq!(restored.snapshot(), sealed(&ordered));
    // A count promising more than the bytes hold.
    let mut lying = Vec::new();
    lying.extend(0u64.to_le_bytes());
    lying.extend(0u64.to_le_bytes());
    lying.extend(u64::MAX.to_le_bytes());
    assert!(matches!(
        StateMachine::restore(&sealed(&lying)),
        Err(SnapshotError::Malformed(_))
    ));
}

proptest! {
    #[test]
    fn restore_never_panics_on_arbitrary_bytes(input in proptest::collection::vec(any::<u8>(), 0..300)) {
        let _ = StateMachine::restore(&input);
    }

    #[test]
    fn restore_never_panics_behind_a_valid_checksum(body in proptest::collection::vec(any::<u8>(), 0..300)) {
        let _ = StateMachine::restore(&sealed(&body));
    }

    /// Mutations of a real snapshot, resealed so that they reach the body parser.
    #[test]
    fn restore_never_panics_on_resealed_mutations(position in any::<usize>(), byte in any::<u8>(), cut in any::<usize>()) {
        let snapshot = sample_snapshot();
        let mut body = snapshot[5..snapshot.len() - 4].to_vec();
        let position = position % body.len();
        body[position] = byte;
        body.truncate(cut % (body.len() + 1));
        if let Ok(restored) = StateMachine::restore(&sealed(&body)) {
            prop_assert_eq!(restored.snapshot(), sealed(&body));
        }
    }
}
