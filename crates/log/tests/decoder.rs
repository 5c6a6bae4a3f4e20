//! Decoder robustness on stable Rust: random bytes and randomly damaged valid files never
//! make a decoder or a whole recovery panic; damage gives an error or a reported
//! truncation, and whatever is recovered is a prefix of what was written. (The
//! cargo-fuzz target in `fuzz/` explores the same decoders with coverage guidance.)

use std::sync::Arc;

use proptest::prelude::*;
use rkv_log::conformance::entry;
use rkv_log::format;
use rkv_log::sim::SimVfs;
use rkv_log::{FileLog, FileLogOptions, LogStore};

fn valid_segment() -> (Vec<u8>, Vec<rkv_raft::Entry>) {
    let vfs = SimVfs::new(1);
    // A small preallocation step keeps 2,000 debug-build cases quick.
    let options = FileLogOptions {
        preallocate_bytes: 4096,
        ..FileLogOptions::default()
    };
    let (mut log, _, _) = FileLog::open(Arc::new(vfs.clone()), options).unwrap();
    let written: Vec<_> = (1..=12).map(|i| entry(i, 1 + i / 5)).collect();
    log.append(&written).unwrap();
    log.sync().unwrap();
    let mut bytes = rkv_log::vfs::Vfs::read(&vfs, "log-00000000000000000000.seg").unwrap();
    // Without its preallocated zeros (as a closed segment is), so damage hits records.
    let end = bytes.iter().rposition(|b| *b != 0).map_or(0, |p| p + 1);
    assert!(end < bytes.len(), "the active segment was preallocated");
    bytes.truncate(end);
    (bytes, written)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn decoders_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        let _ = format::decode_record(&bytes);
        let _ = format::check_record_frame(&bytes);
        let _ = format::decode_segment_header(&bytes);
        let _ = format::decode_hard_state_file(&bytes);
        let _ = format::decode_snapshot(&bytes);
    }

    #[test]
    fn damaged_segments_give_an_error_or_a_prefix(
        flips in prop::collection::vec((any::<prop::sample::Index>(), 1..=255u8), 1..4),
        cut in any::<prop::sample::Index>(),
        truncate in any::<bool>(),
    ) {
        let (mut bytes, written) = valid_segment();
        for (at, mask) in flips {
            let i = at.index(bytes.len());
            bytes[i] ^= mask;
        }
        if truncate {
            bytes.truncate(cut.index(bytes.len()));
        }
        let vfs = SimVfs::new(2);
        vfs.put_file("log-00000000000000000000.seg", bytes);
        match FileLog::open(Arc::new(vfs), FileLogOptions::default()) {
            Ok((_, recovered, _)) => {
                prop_assert!(recovered.entries.len() <= written.len());
                prop_assert_eq!(&recovered.entries[..], &written[..recovered.entries.len()]);
            }
            Err(error) => prop_assert_eq!(error.actor(), rkv_log::Actor::Operator, "{}", error),
        }
    }

    #[test]
    fn random_files_never_panic_recovery(
        segment in prop::collection::vec(any::<u8>(), 0..300),
        hard_state in prop::collection::vec(any::<u8>(), 0..200),
        snapshot in prop::collection::vec(any::<u8>(), 0..200),
    ) {
        let vfs = SimVfs::new(3);
        vfs.put_file("log-00000000000000000003.seg", segment);
        vfs.put_file("hardstate", hard_state);
        vfs.put_file("snap-00000000000000000001-00000000000000000001.snap", snapshot);
        let _ = FileLog::open(Arc::new(vfs), FileLogOptions::default());
    }
}
