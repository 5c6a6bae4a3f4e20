//! `rkvd`: the rkv server. The node and its front ends live in the `rkv_server` library
//! (shared with raftd, hraftd and raft-demo in `rkv-demo`); this is the command line.

use std::process::ExitCode;

use rkv_server::flags::Flags;

/// jemalloc instead of glibc's malloc: with glibc, allocation was a fifth of the
/// leader's CPU at 100 clients (`_int_malloc`, `malloc_consolidate`, `unlink_chunk`).
/// jemalloc gave 16% more writes/s at 13% less CPU each and a lower p99; mimalloc, tried
/// too, saved CPU but raised the p99 by a quarter.
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() -> ExitCode {
    let flags = match Flags::parse_go_style(std::env::args()) {
        Ok(flags) => flags,
        Err(e) => {
            let _ = e.print();
            return if e.use_stderr() {
                ExitCode::from(2)
            } else {
                ExitCode::SUCCESS
            };
        }
    };
    if let Err(e) = flags.validate() {
        eprintln!("rkvd: {e}");
        return ExitCode::from(2);
    }
    if !flags.quiet {
        let filter = tracing_subscriber::EnvFilter::try_new(&flags.log_level)
            .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
        tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_writer(std::io::stderr)
            .init();
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("rkvd: cannot start the runtime: {e}");
            return ExitCode::from(1);
        }
    };
    match runtime.block_on(rkv_server::rkvd::run(flags)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("rkvd: {e}");
            ExitCode::from(1)
        }
    }
}
