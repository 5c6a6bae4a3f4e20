//! Fuzzes every decoder of the on-disk format, and whole recovery over a segment made of
//! the input: no input may panic. Run with `scripts/fuzz [SECONDS]` from the repository root.
#![no_main]

use std::sync::Arc;

use libfuzzer_sys::fuzz_target;
use rkv_log::format;
use rkv_log::sim::SimVfs;
use rkv_log::{FileLog, FileLogOptions};

fuzz_target!(|data: &[u8]| {
    let _ = format::decode_record(data);
    let _ = format::check_record_frame(data);
    let _ = format::decode_segment_header(data);
    let _ = format::decode_hard_state_file(data);
    let _ = format::decode_snapshot(data);
    let vfs = SimVfs::new(0);
    vfs.put_file("log-00000000000000000000.seg", data.to_vec());
    let _ = FileLog::open(Arc::new(vfs), FileLogOptions::default());
});
