//! Both stores pass the one conformance suite, the file log in several configurations
//! (tiny segments and no cache force rolls and disk reads; a real directory checks the
//! real file system).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use rkv_log::sim::SimVfs;
use rkv_log::{FileLog, FileLogOptions, MemLog, conformance};

fn sim_log(options: FileLogOptions) -> FileLog {
    static SEED: AtomicU64 = AtomicU64::new(1);
    let vfs = SimVfs::new(SEED.fetch_add(1, Ordering::Relaxed));
    FileLog::open(Arc::new(vfs), options).expect("open").0
}

#[test]
fn mem_log() {
    conformance::run_all(MemLog::new);
}

#[test]
fn file_log_default_options() {
    conformance::run_all(|| sim_log(FileLogOptions::default()));
}

#[test]
fn file_log_tiny_segments_no_cache() {
    conformance::run_all(|| {
        sim_log(FileLogOptions {
            cache_entries: 0,
            segment_bytes_max: 256,
            ..FileLogOptions::default()
        })
    });
}

#[test]
fn file_log_small_cache() {
    conformance::run_all(|| {
        sim_log(FileLogOptions {
            cache_entries: 3,
            segment_bytes_max: 1024,
            ..FileLogOptions::default()
        })
    });
}

#[test]
fn file_log_real_directory() {
    let root = tempfile::tempdir().expect("temp dir");
    let counter = AtomicU64::new(0);
    conformance::run_all(|| {
        let dir = root
            .path()
            .join(counter.fetch_add(1, Ordering::Relaxed).to_string());
        let options = FileLogOptions {
            segment_bytes_max: 2048,
            cache_entries: 5,
            ..FileLogOptions::default()
        };
        FileLog::open_dir(dir, options).expect("open").0
    });
}
