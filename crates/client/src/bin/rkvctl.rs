//! `rkvctl`: rkv's command-line client and load generator (see `rkv_client::cli`).

/// jemalloc, as rkvd: the load generator's CPU is taken from the servers' two cores, and
/// glibc's malloc was a large part of it.
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() -> std::process::ExitCode {
    rkv_client::cli::main()
}
