//! `rkvctl`: rkv's command-line client and load generator (see `rkv_client::cli`).

fn main() -> std::process::ExitCode {
    rkv_client::cli::main()
}
