//! `confab`, the command-line client. Each subcommand's logic lives in the
//! library (`confab_client::commands`); this file parses arguments, builds
//! the real environment (sockets, terminal, system clock, OS randomness) and
//! dispatches.
//!
//! # Profiles
//!
//! Each user and server has a profile directory, by default
//! `$XDG_DATA_HOME/confab/<user>@<host:port>` (or
//! `$HOME/.local/share/confab/...`; for a list of nodes,
//! `<user>@<first host:port>+<more>-<digest>`, the same for any order of the
//! nodes, see `confab_client::profile::profile_dir`), holding
//! `profile.sqlite3` (0600, in a 0700 directory). `register USER` and
//! `login USER` record USER in
//! `<data>/confab/last-user@<host:port>`: the commands that take no USER
//! argument (`logout`, `room ...`, `dm ...`, `listen`, `code issue`,
//! `safety-number`) use that user's profile, unless `--user USER` or
//! `--profile DIR` says otherwise. The profile remembers the server and its
//! pin (or CA file) from `register`/`login` (and, for a list of nodes, the
//! node that served last, which the next command tries first): later commands need neither
//! `--server` nor `--pin`, and another server or pin than the remembered one
//! is refused unless `--switch-server` (see `confab_client::remember`). After `login`, commands log in with the
//! profile's refresh token: the password is not asked again. A profile
//! belongs to one user: `login`/`register` of another user in it is
//! refused, and a failed `login` leaves it as it was.
//!
//! # Output
//!
//! Human lines by default; with `--json` one JSON object per line, each with
//! a `kind`: `ok` (a command's result), `message`, `room_message`, `event`,
//! `warning`; errors go to standard error (`kind: "error"` with `message`,
//! `hint` and `exit_code` in JSON mode).
//!
//! # Exit codes
//!
//! | code | meaning |
//! | --- | --- |
//! | 0 | success |
//! | 1 | refused by the server or by a local check (no session with that peer, ...) |
//! | 2 | bad usage |
//! | 3 | not logged in, no identity key on this device, wrong password |
//! | 4 | network: cannot connect, connection lost, no answer in time |
//! | 5 | the local profile or a secret could not be read or written |
//! | 6 | another session of this account took over (the server closed this one with 409): not retried |
//! | 7 | temporary failure: the server is busy (503) and said when to retry |

use std::io;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use confab_client::commands::share::{self, Forwarded};
use confab_client::commands::{self, Env, account, code, dm, listen, pending, room, safety};
use confab_client::connect::{self, ConnectOpts, DEFAULT_SERVER, Transport, Trust};
use confab_client::inspect::{self, InspectArgs};
use confab_client::output::Output;
use confab_client::proto::ClientConfig;
use confab_client::proto::e2e::IdentityKey;
use confab_client::proto::server::HashParams;
use confab_client::secrets::{EnvOrPrompt, Secret};
use confab_client::{profile, remember, session};
use rand::TryRng;

/// confab: end-to-end-encrypted relay client.
#[derive(Debug, Parser)]
#[command(name = "confab", version, about)]
struct Cli {
    /// The server, HOST:PORT (default: the one the profile remembers, else the last
    /// `register`/`login`'s, else 127.0.0.1:7700), or a WebSocket URL
    /// (ws://HOST:PORT, wss://HOST:PORT[/PATH]), which implies --transport ws.
    /// Several nodes of one service, separated by commas: HOST:PORT,HOST:PORT,...
    /// (or only ws:// URLs, or only wss:// URLs). A connection tries the node that
    /// served last first (the profile remembers it from one command to the next),
    /// then the next ones in the list, wrapping around; a name with several DNS
    /// records is tried record by record. Each address first gets 1 s; one that did
    /// not answer by then (a paused or unreachable node) gets the rest of the 10 s
    /// timeout only after the others had their turn. Every node must present
    /// the same TLS key (one --pin for all): a node with another key stops the
    /// connection, it is never skipped. Adding or removing a node makes another
    /// server (and default profile directory); reordering does not.
    #[arg(long, global = true, env = "CONFAB_SERVER", value_name = "HOST:PORT[,...]")]
    server: Option<String>,
    /// The transport. ws: WebSocket at HOST:PORT+2, path /confab (plain ws:// on
    /// a loopback host, wss:// elsewhere), unless --server is a ws:// or wss:// URL.
    #[arg(long, global = true, env = "CONFAB_TRANSPORT", value_enum, default_value_t = Transport::Tcp)]
    transport: Transport,
    /// SHA-256 pin of the server's public key, as the server prints it.
    #[arg(long, global = true, env = "CONFAB_PIN", value_name = "PIN", conflicts_with = "ca")]
    pin: Option<String>,
    /// PEM file of the certificate (or CA) to trust instead of a pin.
    #[arg(long, global = true, value_name = "FILE")]
    ca: Option<PathBuf>,
    /// Profile directory (default: under the user's data directory, one per user and server).
    #[arg(long, global = true, env = "CONFAB_PROFILE", value_name = "DIR")]
    profile: Option<PathBuf>,
    /// Whose profile to use (default: the last `login`/`register` against this server).
    #[arg(long = "user", id = "as_user", global = true, value_name = "USER")]
    as_user: Option<String>,
    /// Use the --server, --pin or --ca given although the profile remembers
    /// others (the server moved, or its operator replaced its key), and remember them.
    #[arg(long, global = true)]
    switch_server: bool,
    /// Print JSON lines.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Create an account (makes this device's identity key) and log in.
    Register {
        user: String,
        /// Without --pin or --ca: trust the key the server presents now, and print its pin to compare.
        #[arg(long)]
        trust_on_first_use: bool,
    },
    /// Log in (needs the identity key made on this device by `register`).
    Login {
        user: String,
        /// Without --pin or --ca: trust the key the server presents now, and print its pin to compare.
        #[arg(long)]
        trust_on_first_use: bool,
    },
    /// Revoke the session and erase its secrets from this device.
    Logout,
    /// Rooms (the room password comes from CONFAB_ROOM_PASSWORD or a prompt).
    #[command(subcommand)]
    Room(RoomCommand),
    /// Private conversations.
    #[command(subcommand)]
    Dm(DmCommand),
    /// Print events and messages as they arrive, until interrupted.
    Listen,
    /// List the requests stored and not answered yet (sent again, once, by the next command).
    Outbox,
    /// Single-use codes for third-party servers.
    #[command(subcommand)]
    Code(CodeCommand),
    /// The safety number of you and USER, to compare out of band.
    SafetyNumber {
        user: String,
        /// Pin the different key USER now presents (after comparing the new number out of band).
        #[arg(long)]
        accept_new_key: bool,
    },
    /// Decode frames (hex or raw bytes) and print each one as a JSON line.
    Inspect(InspectArgs),
}

#[derive(Debug, Subcommand)]
enum RoomCommand {
    /// Create a password-protected room.
    Create { name: String },
    /// Join a room (prints its retained history).
    Join { name: String },
    /// Leave a room.
    Leave { name: String },
    /// Send a message to a room (TEXT `-`: read it from standard input).
    Send { name: String, text: String },
    /// Print a room's retained history.
    History { name: String },
}

#[derive(Debug, Subcommand)]
enum DmCommand {
    /// Ask USER for a private conversation (USER may be offline).
    Request { user: String },
    /// Accept USER's request.
    Accept { user: String },
    /// Close (or refuse) the conversation with USER.
    Close { user: String },
    /// Send a private message (TEXT `-`: read it from standard input).
    Send { user: String, text: String },
    /// Print the private messages received in the last hour (from USER, or everyone), and how many older ones expired.
    Read { user: Option<String> },
}

#[derive(Debug, Subcommand)]
enum CodeCommand {
    /// Issue a single-use code proving you to AUDIENCE.
    Issue { audience: String },
    /// Check a code USER gave to AUDIENCE (no login needed; consumes the code).
    Verify { user: String, audience: String, code: String },
}

fn os_seed() -> [u8; 32] {
    let mut seed = [0u8; 32];
    if rand::rngs::SysRng.try_fill_bytes(&mut seed).is_err() {
        eprintln!("error: the operating system's random number generator failed");
        std::process::exit(i32::from(commands::exit::LOCAL));
    }
    seed
}

/// Parses the arguments; a usage error is a JSON `error` line (exit 2) when
/// `--json` is among them, clap's text otherwise (`--help` and `--version`
/// print as usual).
fn parse() -> Cli {
    let err = match Cli::try_parse() {
        Ok(cli) => return cli,
        Err(err) => err,
    };
    let json = std::env::args_os().skip(1).take_while(|a| a != "--").any(|a| a == "--json");
    if !json || !err.use_stderr() {
        err.exit();
    }
    let message = err.kind().to_string();
    let detail = err.render().to_string();
    let detail = detail.lines().next().unwrap_or_default().trim_start_matches("error: ").to_owned();
    let line = serde_json::json!({
        "kind": "error",
        "message": if detail.is_empty() { message } else { detail },
        "hint": "run `confab --help` (or `confab COMMAND --help`) for the usage",
        "exit_code": commands::exit::USAGE,
    });
    eprintln!("{line}");
    std::process::exit(i32::from(commands::exit::USAGE));
}

/// The server and trust to use: the flags (or environment) where given,
/// else what the profile remembers ([`remember`]); the profile is `--profile`,
/// or the default one of the user against the given server (else the server
/// of the last `register`/`login`).
fn remembered_server(
    cli: &Cli,
    server: Option<String>,
    trust: Trust,
    data_dir: Option<&std::path::Path>,
) -> Result<(String, Trust), commands::CliError> {
    let command = &cli.command;
    let fallback = server.clone().or_else(|| data_dir.and_then(remember::last_server));
    let fallback_server = fallback.as_deref().unwrap_or(DEFAULT_SERVER);
    let user = match command {
        Command::Register { user, .. } | Command::Login { user, .. } => Some(user.clone()),
        _ => cli.as_user.clone(),
    };
    let dir = cli.profile.clone().or_else(|| {
        let base = data_dir?;
        let user = user.or_else(|| profile::last_user(base, fallback_server))?;
        Some(profile::profile_dir(base, &user, fallback_server))
    });
    let Some(dir) = dir else { return Ok((fallback_server.to_owned(), trust)) };
    let remembered = remember::read(&dir)?;
    let (server, trust) = remember::merge(&dir, &remembered, server, trust, cli.switch_server)?;
    Ok((server.or(fallback).unwrap_or_else(|| DEFAULT_SERVER.to_owned()), trust))
}

/// Sends the command through the `listen` running on its profile, if one
/// does (see `confab_client::commands::share`): `None` when there is none,
/// or the command is not one that can be shared, or the socket failed its
/// checks (`share::guard`) and the command can safely run on its own (a
/// warning says why); an error when it cannot.
fn forward_to_listener(
    command: &Command,
    env: &mut Env<'_>,
    out: &mut Output<'_>,
    json: bool,
) -> Result<Option<share::Reply>, commands::CliError> {
    let text = |t: &str| commands::message_text(t, &mut io::stdin().lock());
    let forwarded = match command {
        Command::Dm(DmCommand::Request { user }) => Forwarded::DmRequest { peer: user.clone() },
        Command::Dm(DmCommand::Accept { user }) => Forwarded::DmAccept { peer: user.clone() },
        Command::Dm(DmCommand::Close { user }) => Forwarded::DmClose { peer: user.clone() },
        Command::Dm(DmCommand::Read { user }) => Forwarded::DmRead { peer: user.clone() },
        Command::Room(RoomCommand::Leave { name }) => Forwarded::RoomLeave { room: name.clone() },
        Command::Room(RoomCommand::History { name }) => Forwarded::RoomHistory { room: name.clone() },
        Command::SafetyNumber { user, accept_new_key } => {
            Forwarded::SafetyNumber { user: user.clone(), accept_new_key: *accept_new_key }
        }
        Command::Code(CodeCommand::Issue { audience }) => Forwarded::CodeIssue { audience: audience.clone() },
        // Those that read standard input or a secret do it only once a listener is found.
        Command::Dm(DmCommand::Send { .. })
        | Command::Room(RoomCommand::Send { .. } | RoomCommand::Create { .. } | RoomCommand::Join { .. }) => {
            Forwarded::DmRead { peer: None }
        }
        _ => return Ok(None),
    };
    let Ok((dir, _)) = env.profile_dir(None) else { return Ok(None) };
    let Some(probe) = listener(&dir, out)? else { return Ok(None) };
    // The listener gives a request 2 s to arrive: read the input first (the
    // look above sent nothing), then connect again.
    let needs_input = matches!(
        command,
        Command::Dm(DmCommand::Send { .. })
            | Command::Room(RoomCommand::Send { .. } | RoomCommand::Create { .. } | RoomCommand::Join { .. })
    );
    if !needs_input {
        return forward(probe, forwarded, json).map(Some);
    }
    drop(probe);
    let forwarded = match command {
        Command::Dm(DmCommand::Send { user, text: t }) => Forwarded::DmSend { peer: user.clone(), text: text(t)? },
        Command::Room(RoomCommand::Send { name, text: t }) => {
            Forwarded::RoomSend { room: name.clone(), text: text(t)? }
        }
        Command::Room(RoomCommand::Create { name }) => {
            Forwarded::RoomCreate { room: name.clone(), password: env.secrets.get(Secret::RoomPassword)?.to_string() }
        }
        Command::Room(RoomCommand::Join { name }) => {
            Forwarded::RoomJoin { room: name.clone(), password: env.secrets.get(Secret::RoomPassword)?.to_string() }
        }
        _ => forwarded,
    };
    let lost = |e: String| {
        commands::CliError::Session(confab_client::session::SessionError::LinkLost(std::io::Error::other(e)))
    };
    let stream = listener(&dir, out)?
        .ok_or_else(|| lost("the running `confab listen` of this profile stopped; run the command again".into()))?;
    forward(stream, forwarded, json).map(Some)
}

/// The listener of the profile in `dir`, if one runs and passes the checks
/// (`share::guard`); a refused one is reported and, if it is safe to, the
/// command runs on its own (`None`).
fn listener(
    dir: &std::path::Path,
    out: &mut Output<'_>,
) -> Result<Option<std::os::unix::net::UnixStream>, commands::CliError> {
    match share::find(dir) {
        Ok(found) => Ok(found),
        Err(e) if e.may_fall_back(dir) => {
            out.warning(
                &format!("{e}; running the command without it"),
                serde_json::json!({"event": "listener_refused", "reason": e.to_string()}),
            );
            Ok(None)
        }
        Err(e) => Err(e.into()),
    }
}

fn forward(
    stream: std::os::unix::net::UnixStream,
    forwarded: Forwarded,
    json: bool,
) -> Result<share::Reply, commands::CliError> {
    share::forward(stream, forwarded, json).map_err(|e| {
        commands::CliError::Session(confab_client::session::SessionError::LinkLost(std::io::Error::other(format!(
            "the running `confab listen` of this profile did not answer: {e}"
        ))))
    })
}

fn main() -> ExitCode {
    let cli = parse();
    let (mut stdout, mut stderr) = (io::stdout().lock(), io::stderr().lock());
    if let Command::Inspect(args) = &cli.command {
        return ExitCode::from(inspect::run(args, &mut io::stdin().lock(), &mut stdout, &mut stderr));
    }
    let trust = match (cli.pin.clone(), cli.ca.clone()) {
        (Some(pin), _) => Trust::Pin(pin),
        (None, Some(ca)) => Trust::Ca(ca),
        (None, None) => match &cli.command {
            Command::Register { trust_on_first_use: true, .. } | Command::Login { trust_on_first_use: true, .. } => {
                Trust::FirstUse
            }
            _ => Trust::Unset,
        },
    };
    // One spelling per list (no white space), so that it names one profile.
    let given = match cli.server.as_deref().map(connect::normalize_server).transpose() {
        Ok(given) => given,
        Err(e) => {
            let mut out = Output::new(cli.json, &mut stdout, &mut stderr);
            let e = commands::CliError::from(session::SessionError::from(e));
            return ExitCode::from(commands::finish(Err(e), &mut out));
        }
    };
    let data_dir = profile::data_dir();
    let (server, trust) = match remembered_server(&cli, given, trust, data_dir.as_deref()) {
        Ok(found) => found,
        Err(e) => {
            let mut out = Output::new(cli.json, &mut stdout, &mut stderr);
            return ExitCode::from(commands::finish(Err(e), &mut out));
        }
    };
    // `last`: the command sets it from the profile it opens (the node that
    // served the previous command, `Env::start_at_last_node`).
    let mut connector = ConnectOpts { server, transport: cli.transport, trust, first_use: None, last: None };
    let mut secrets = EnvOrPrompt;
    let mut env = Env {
        connector: &mut connector,
        secrets: &mut secrets,
        clock: session::system_clock(),
        data_dir,
        user: cli.as_user,
        profile: cli.profile,
        config: ClientConfig::default(),
        room_params: confab_client::proto::e2e::room::ROOM_PARAMS,
        key_params: HashParams::OWASP,
        answer_timeout: Duration::from_secs(15),
        listen_for: None,
        switch_server: cli.switch_server,
        new_identity: Box::new(|rng| IdentityKey::generate(&mut *rng)),
        seed: Box::new(os_seed),
        lent: None,
    };
    let mut out = Output::new(cli.json, &mut stdout, &mut stderr);
    match forward_to_listener(&cli.command, &mut env, &mut out, cli.json) {
        Ok(None) => {}
        Ok(Some(reply)) => {
            reply.print(cli.json, &mut stdout, &mut stderr);
            return ExitCode::from(reply.code);
        }
        Err(e) => return ExitCode::from(commands::finish(Err(e), &mut out)),
    }
    let result = match &cli.command {
        Command::Register { user, .. } => account::register(&mut env, &mut out, user),
        Command::Login { user, .. } => account::login(&mut env, &mut out, user),
        Command::Logout => account::logout(&mut env, &mut out, None),
        Command::Room(RoomCommand::Create { name }) => room::create(&mut env, &mut out, name),
        Command::Room(RoomCommand::Join { name }) => room::join(&mut env, &mut out, name),
        Command::Room(RoomCommand::Leave { name }) => room::leave(&mut env, &mut out, name),
        Command::Room(RoomCommand::Send { name, text }) => commands::message_text(text, &mut io::stdin().lock())
            .and_then(|text| room::send(&mut env, &mut out, name, &text)),
        Command::Room(RoomCommand::History { name }) => room::history(&mut env, &mut out, name),
        Command::Dm(DmCommand::Request { user }) => dm::request(&mut env, &mut out, user),
        Command::Dm(DmCommand::Accept { user }) => dm::accept(&mut env, &mut out, user),
        Command::Dm(DmCommand::Close { user }) => dm::close(&mut env, &mut out, user),
        Command::Dm(DmCommand::Send { user, text }) => commands::message_text(text, &mut io::stdin().lock())
            .and_then(|text| dm::send(&mut env, &mut out, user, &text)),
        Command::Dm(DmCommand::Read { user }) => dm::read(&mut env, &mut out, user.as_deref()),
        Command::Listen => listen::listen(&mut env, &mut out),
        Command::Outbox => pending::outbox(&mut env, &mut out),
        Command::Code(CodeCommand::Issue { audience }) => code::issue(&mut env, &mut out, audience),
        Command::Code(CodeCommand::Verify { user, audience, code }) => {
            code::verify(&mut env, &mut out, user, audience, code)
        }
        Command::SafetyNumber { user, accept_new_key } => {
            safety::safety_number(&mut env, &mut out, user, *accept_new_key)
        }
        Command::Inspect(_) => Ok(()),
    };
    ExitCode::from(commands::finish(result, &mut out))
}
