//! `rkvd`: the rkv server.

mod flags;

use std::process::ExitCode;

fn main() -> ExitCode {
    let flags = match flags::Flags::parse_go_style(std::env::args()) {
        Ok(flags) => flags,
        Err(e) => {
            let _ = e.print();
            return if e.use_stderr() { ExitCode::from(2) } else { ExitCode::SUCCESS };
        }
    };
    if let Err(e) = flags.validate() {
        eprintln!("rkvd: {e}");
        return ExitCode::from(2);
    }
    eprintln!("rkvd: the server front ends are not wired up yet (issue 4 in progress)");
    ExitCode::from(1)
}
