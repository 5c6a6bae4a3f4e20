//! What every binary here does before its own work: Go-style flags (`-id node0`,
//! `--id node0`, `-id=node0`, as rkvd), logging to stderr, a multi-threaded runtime, and
//! exit codes (0 done, 1 failed, 2 bad command line).

use std::future::Future;
use std::process::ExitCode;

use clap::Parser;

/// Parses `args` (argv\[0\] first) Go style into `F`.
pub fn parse<F: Parser>(args: impl IntoIterator<Item = String>) -> Result<F, clap::Error> {
    F::try_parse_from(rkv_server::flags::normalize(args))
}

/// Prints a flag error the way clap does and returns the exit code for it.
pub fn flag_error(error: &clap::Error) -> ExitCode {
    let _ = error.print();
    if error.use_stderr() {
        ExitCode::from(2)
    } else {
        ExitCode::SUCCESS
    }
}

/// Logs to stderr at `filter` (falls back to `warn` if it does not parse).
pub fn init_logging(filter: &str) {
    let filter = tracing_subscriber::EnvFilter::try_new(filter)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
}

/// Runs `main` on a multi-threaded runtime; an error is printed as `program: error`.
pub fn run<Fut>(program: &str, main: Fut) -> ExitCode
where
    Fut: Future<Output = Result<(), String>>,
{
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("{program}: cannot start the runtime: {e}");
            return ExitCode::from(1);
        }
    };
    match runtime.block_on(main) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("{program}: {e}");
            ExitCode::from(1)
        }
    }
}
