//! `confab`, the command-line client. Each subcommand's logic lives in the
//! library (`confab_client`); this file only parses arguments and dispatches.

use std::io;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use confab_client::inspect::{self, InspectArgs};

/// confab: end-to-end-encrypted relay client.
#[derive(Debug, Parser)]
#[command(name = "confab", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Decode frames (hex or raw bytes) and print each one as a JSON line.
    Inspect(InspectArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let status = match cli.command {
        Command::Inspect(args) => {
            inspect::run(&args, &mut io::stdin().lock(), &mut io::stdout().lock(), &mut io::stderr().lock())
        }
    };
    ExitCode::from(status)
}
