//! `rkv-demo`: raft-demo's programs on rkv, one subcommand each (see `rkv_demo`):
//! `kvstore`, `chatroom`, `chat`, `logger`.

use std::process::ExitCode;

use rkv_demo::{chat, cli, kvstore, logger};

const USAGE: &str =
    "usage: rkv-demo kvstore|chatroom|chat|logger [flags]  (rkv-demo SUBCOMMAND -h for its flags)";

fn main() -> ExitCode {
    let mut args: Vec<String> = std::env::args().collect();
    if args.len() < 2 {
        eprintln!("{USAGE}");
        return ExitCode::from(2);
    }
    let subcommand = args.remove(1);
    args[0] = format!("rkv-demo {subcommand}");
    match subcommand.as_str() {
        "kvstore" => match cli::parse::<kvstore::Flags>(args) {
            Ok(flags) => {
                cli::init_logging(&flags.node.log_level);
                cli::run("rkv-demo kvstore", kvstore::run(flags))
            }
            Err(e) => cli::flag_error(&e),
        },
        "chatroom" => match cli::parse::<chat::ServerFlags>(args) {
            Ok(flags) => {
                cli::init_logging(&flags.node.log_level);
                cli::run("rkv-demo chatroom", chat::run_server(flags))
            }
            Err(e) => cli::flag_error(&e),
        },
        "chat" => match cli::parse::<chat::ClientFlags>(args) {
            Ok(flags) => {
                cli::init_logging("warn");
                cli::run("rkv-demo chat", chat::run_client(flags))
            }
            Err(e) => cli::flag_error(&e),
        },
        "logger" => match cli::parse::<logger::Flags>(args) {
            Ok(flags) => {
                cli::init_logging(&flags.node.log_level);
                cli::run("rkv-demo logger", logger::run(flags))
            }
            Err(e) => cli::flag_error(&e),
        },
        "-h" | "--help" | "help" => {
            println!("{USAGE}");
            ExitCode::SUCCESS
        }
        other => {
            eprintln!("rkv-demo: unknown subcommand {other:?}\n{USAGE}");
            ExitCode::from(2)
        }
    }
}
