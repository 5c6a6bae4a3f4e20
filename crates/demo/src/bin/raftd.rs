//! `raftd`: goraft's interactive reference server on rkv (see `rkv_demo::raftd`).

use std::process::ExitCode;

use rkv_demo::{cli, raftd};

fn main() -> ExitCode {
    let flags: raftd::Flags = match cli::parse(std::env::args()) {
        Ok(flags) => flags,
        Err(e) => return cli::flag_error(&e),
    };
    let answers = match raftd::ask_on_console(&flags) {
        Ok(answers) => answers,
        Err(e) => {
            eprintln!("raftd: {e}");
            return ExitCode::from(2);
        }
    };
    cli::init_logging(&flags.log_level);
    cli::run("raftd", raftd::serve(flags, answers))
}
