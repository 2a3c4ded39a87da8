//! `confab-server`: the relay server and its admin tools.
//!
//! ```text
//! confab-server run [--data DIR] [--listen ADDR] [--config FILE] [--tcp-listen ADDR] [--quic-listen ADDR]
//!                   [--cert-chain FILE --private-key FILE] [--init]
//! ```
//!
//! Serves TCP+TLS and QUIC on one address (default `127.0.0.1:7700`, data in
//! `./confab-data`) until SIGINT or SIGTERM, then stops gracefully and exits
//! 0. One server per data directory: a second one is refused at start,
//! naming the holder's pid. A data directory that was used before (it holds
//! `server.pin`, `server.crt` or `server.key`) and whose `confab.db` is
//! missing or empty is refused too, unless `--init` asks for an empty store.
//! Prints `confab-server listening: tcp ADDR, quic ADDR, ws URL`, `web URL`
//! (the browser client, unless `ws.web = false`), `pin sha256//...` and
//! `data DIR` on stdout; logs go to stderr (level by `RUST_LOG`,
//! default `info`). Exit 1: it could not start or stopped on an error.
//!
//! ```text
//! confab-server jwt verify --jwks FILE [--issuer ISS] [--audience AUD] [--now UNIX_SECONDS] [--leeway SECS] TOKEN
//! ```
//!
//! Prints the verified header and claims as JSON and exits 0, or prints the
//! reason the token was refused and exits 1. Exit 2: bad usage, or the JWK
//! Set file cannot be read or parsed.
//!
//! ```text
//! confab-server jwt jwks --data DIR [--now UNIX_SECONDS]
//! ```
//!
//! Prints the public JWK Set of the phantom-token signing keys stored in the
//! data directory (what the `jwks` request answers), `{"keys":[]}` if the
//! server never made any (and says so on stderr). Exit 2: no data directory,
//! no store in it, or a store it cannot read. It never creates anything.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{SystemTime, UNIX_EPOCH};

use clap::{Parser, Subcommand};
use confab_server::cli::{VerifyArgs, jwt_jwks, jwt_verify};
use confab_server::config::{RunConfig, RunFlags};
use confab_server::store::Init;

#[derive(Debug, Parser)]
#[command(name = "confab-server", version, about = "The confab relay server")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Runs the relay server (TCP+TLS and QUIC) until SIGINT or SIGTERM.
    Run {
        /// A TOML configuration file (every key: docs/confab-server.toml).
        #[arg(long, value_name = "FILE", env = "CONFAB_CONFIG")]
        config: Option<PathBuf>,
        #[command(flatten)]
        flags: RunFlags,
        /// Starts with an empty store even in a data directory that was used before and lost its
        /// confab.db (missing or empty): everything the lost store held is given up. Not needed
        /// for a new data directory; an existing store is opened as it is.
        #[arg(long)]
        init: bool,
    },
    /// JSON Web Token tools.
    #[command(subcommand)]
    Jwt(JwtCommand),
}

#[derive(Debug, Subcommand)]
enum JwtCommand {
    /// Verifies a JWT against a JWK Set file; prints its header and claims as JSON.
    Verify {
        /// The JWK Set document (`{"keys": [...]}`), for example a copy of an OIDC provider's jwks_uri.
        #[arg(long, value_name = "FILE")]
        jwks: PathBuf,
        /// Required `iss`; without it the issuer is not checked.
        #[arg(long, value_name = "ISS")]
        issuer: Option<String>,
        /// An audience `aud` must contain; without it the audience is not checked.
        #[arg(long, value_name = "AUD")]
        audience: Option<String>,
        /// The time to verify at, Unix seconds (default: now).
        #[arg(long, value_name = "UNIX_SECONDS")]
        now: Option<u64>,
        /// Clock skew tolerated on exp, nbf and iat, in seconds.
        #[arg(long, value_name = "SECS", default_value_t = 60)]
        leeway: u64,
        /// The compact JWS.
        token: String,
    },
    /// Prints the public JWK Set of the phantom-token signing keys stored in a data directory.
    Jwks {
        /// The server's data directory.
        #[arg(long, value_name = "DIR", env = "CONFAB_DATA")]
        data: PathBuf,
        /// The time to publish at, Unix seconds (default: now): retired keys are listed while their tokens may be valid.
        #[arg(long, value_name = "UNIX_SECONDS")]
        now: Option<u64>,
    },
}

/// The wall clock, Unix seconds: the binary may read it; the protocol core never does.
fn unix_now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Run { config, flags, init } => run(config, &flags, init),
        Command::Jwt(JwtCommand::Verify { jwks, issuer, audience, now, leeway, token }) => {
            let jwks = match std::fs::read(&jwks) {
                Ok(bytes) => bytes,
                Err(e) => {
                    eprintln!("error: cannot read {}: {e}", jwks.display());
                    return ExitCode::from(2);
                }
            };
            let now = now.unwrap_or_else(unix_now);
            let args = VerifyArgs { issuer, audience, now, leeway_secs: leeway };
            match jwt_verify(&jwks, &args, token.trim()) {
                Ok(json) => {
                    println!("{json}");
                    ExitCode::SUCCESS
                }
                Err(confab_server::cli::VerifyFailure::Jwks(e)) => {
                    eprintln!("error: unusable JWK Set: {e}");
                    ExitCode::from(2)
                }
                Err(confab_server::cli::VerifyFailure::Token(e)) => {
                    println!("rejected: {e}");
                    println!("reason: {e:?}");
                    ExitCode::from(1)
                }
            }
        }
        Command::Jwt(JwtCommand::Jwks { data, now }) => match jwt_jwks(&data, now.unwrap_or_else(unix_now)) {
            Ok(published) => {
                if published.keys == 0 {
                    eprintln!(
                        "no phantom signing keys yet: the server makes them at its first jwks or introspect request"
                    );
                }
                println!("{}", published.json);
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("error: {e}");
                ExitCode::from(2)
            }
        },
    }
}

fn run(file: Option<PathBuf>, flags: &RunFlags, init: bool) -> ExitCode {
    init_logs();
    let env = |k: &str| std::env::var(k).ok();
    let config = match RunConfig::load(file.as_deref(), &env, flags) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    let init = if init { Init::Allow } else { Init::IfNew };
    match confab_server::run::run(&config, init) {
        Ok(_) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e}");
            eprintln!("error: {e}");
            ExitCode::from(1)
        }
    }
}

/// Logs on stderr, level from `RUST_LOG` (default `info`).
fn init_logs() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    use std::io::IsTerminal as _;
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr)
        .init();
}
