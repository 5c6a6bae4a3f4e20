//! `hraftd`: raft-demo's webkvstore on rkv (see `rkv_demo::hraftd`).

use std::process::ExitCode;

use rkv_demo::{cli, hraftd};

fn main() -> ExitCode {
    let flags: hraftd::Flags = match cli::parse(std::env::args()) {
        Ok(flags) => flags,
        Err(e) => return cli::flag_error(&e),
    };
    cli::init_logging(&flags.log_level);
    cli::run("hraftd", hraftd::run(flags))
}
