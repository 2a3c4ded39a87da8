//! Attacker review of issue 12: the listener's local socket (`listen.sock`)
//! and the remembered server trust.

mod support;

use std::io::{BufRead as _, BufReader, Write as _};
use std::os::unix::fs::PermissionsExt as _;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::PathBuf;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use confab_client::commands::share::{self, Forwarded};
use confab_client::commands::{account, exit, listen};
use confab_client::connect::Trust;
use confab_client::profile::Profile;
use confab_client::remember;
use support::World;

fn temp(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("confab-attack2-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

/// `confab --profile /tmp/alice room join team` (or `dm send`) first looks
/// for a running listener: `share::connect(dir)` connects to
/// `dir/listen.sock` before the profile is opened, so before anything
/// checked (or chmodded) the directory, and neither side checks the peer
/// (SO_PEERCRED). Another local user who created the directory first
/// (world-writable, as /tmp paths left after a clean-up are) and bound a
/// socket in it is handed the room password (or the message text), and what
/// it answers is printed to the victim's terminal unescaped (main.rs writes
/// `reply.stdout` raw), with the exit code it chooses. A socket in a
/// directory others can write is not the listener of this user's profile.
#[test]
fn a_socket_planted_in_a_directory_others_can_write_gets_no_secret() {
    let dir = temp("planted");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o777)).unwrap();
    let planted = UnixListener::bind(dir.join(share::SOCKET)).unwrap();
    std::fs::set_permissions(dir.join(share::SOCKET), std::fs::Permissions::from_mode(0o777)).unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        if let Ok((stream, _)) = planted.accept() {
            let mut line = String::new();
            let _ = BufReader::new(&stream).read_line(&mut line);
            let _ = tx.send(line);
            let forged = "{\"code\":0,\"stdout\":\"\\u001b]0;owned\\u0007joined team\\n\",\"stderr\":\"\"}\n";
            let _ = (&stream).write_all(forged.as_bytes());
        }
    });
    if let Some(stream) = share::connect(&dir) {
        let forwarded = Forwarded::RoomJoin { room: "team".into(), password: "the room password".into() };
        let _ = share::forward(stream, forwarded, false);
    }
    let leaked = rx.recv_timeout(Duration::from_secs(2)).unwrap_or_default();
    let _ = std::fs::remove_dir_all(&dir);
    assert!(
        !leaked.contains("the room password"),
        "the room password went to a socket in a world-writable directory: {leaked}"
    );
}

/// `serve_one` reads the request with `read_line` under a 5 s timeout per
/// read, with no total deadline and no size bound, on the listener's only
/// thread. A process that connects to `listen.sock` and sends a byte every
/// second (never a newline) freezes the listener: it neither receives nor
/// shows anything, and every command forwarded to it waits behind (up to
/// its 120 s FORWARD_TIMEOUT, then fails). Here the dripper stops after
/// 30 s; a forwarded `dm read` must still be answered within 10 s.
#[test]
fn a_slow_client_on_the_socket_does_not_freeze_the_listener() {
    let w = World::new("attack2-drip");
    let (code, _) = w.run(Some("bob"), None, |e, o| account::register(e, o, "bob"));
    assert_eq!(code, exit::OK);
    let dir = w.profile_dir("bob");
    let socket = dir.join(share::SOCKET);
    let (tx, rx) = mpsc::channel();
    let dripper = {
        let socket = socket.clone();
        std::thread::spawn(move || {
            let start = Instant::now();
            let mut stream = loop {
                if let Ok(s) = UnixStream::connect(&socket) {
                    break s;
                }
                assert!(start.elapsed() < Duration::from_secs(20), "no listener");
                std::thread::sleep(Duration::from_millis(5));
            };
            let victim = std::thread::spawn(move || {
                std::thread::sleep(Duration::from_millis(300));
                let t0 = Instant::now();
                let answered = share::connect(&dir)
                    .map(|s| share::forward(s, Forwarded::DmRead { peer: None }, true).is_ok())
                    .unwrap_or(false);
                let _ = tx.send((answered, t0.elapsed()));
            });
            for _ in 0..30 {
                if stream.write_all(b"{").is_err() {
                    break;
                }
                std::thread::sleep(Duration::from_secs(1));
            }
            drop(stream);
            victim.join().unwrap();
        })
    };
    let (code, _) = w.run(Some("bob"), None, |e, o| {
        e.listen_for = Some(Duration::from_secs(3600));
        listen::listen(e, o)
    });
    assert_eq!(code, exit::OK);
    dripper.join().unwrap();
    let (answered, took) = rx.recv().unwrap();
    assert!(answered && took < Duration::from_secs(10), "forwarded command answered: {answered}, after {took:?}");
}

/// The profile remembers a CA as a path (`meta.ca`), not what the file
/// held: later commands trust whatever that file holds by then. A CA file
/// passed from /tmp (or ~/Downloads/ca.pem, later overwritten by another
/// server's) that is replaced makes the profile trust another CA without
/// `--switch-server` and without a word, exactly the silent switch the
/// remembered trust exists to refuse.
#[test]
fn a_remembered_ca_file_whose_content_changed_is_refused() {
    let dir = temp("ca");
    let ca = temp("ca-file.pem");
    std::fs::write(&ca, "-----BEGIN CERTIFICATE-----\nTUlJQm9yaWdpbmFs\n-----END CERTIFICATE-----\n").unwrap();
    {
        let profile = Profile::open(&dir).unwrap();
        remember::record(&profile, "127.0.0.1:7700", &Trust::Ca(ca.clone())).unwrap();
    }
    // Replaced: another CA (the attacker's) at the same path.
    std::fs::write(&ca, "-----BEGIN CERTIFICATE-----\nTUlJQmF0dGFja2Vy\n-----END CERTIFICATE-----\n").unwrap();
    let remembered = remember::read(&dir).unwrap();
    let merged = remember::merge(&dir, &remembered, None, Trust::Unset, false);
    let _ = std::fs::remove_dir_all(&dir);
    let _ = std::fs::remove_file(&ca);
    assert!(merged.is_err(), "another CA is trusted without --switch-server: {merged:?}");
}
