//! Issue 12, item 14 (part): the profile remembers the server's address and
//! pin from `register`/`login`, so later commands need neither
//! `CONFAB_SERVER` nor `CONFAB_PIN`; another server or pin is refused unless
//! `--switch-server`; without a pin, `--trust-on-first-use` trusts the key
//! the server presents (and prints its pin), and nothing else does.

use std::process::{Command, Output};

use confab_tests::procs::{CliUser, ServerProc, TempDir};
use serde_json::Value;

fn run(mut cmd: Command) -> Output {
    cmd.stdin(std::process::Stdio::null()).output().expect("run confab")
}

fn error_of(out: &Output) -> Value {
    let stderr = String::from_utf8_lossy(&out.stderr);
    serde_json::from_str(stderr.trim()).unwrap_or_else(|e| panic!("{e}: {stderr}"))
}

fn lines(out: &Output) -> Vec<Value> {
    String::from_utf8_lossy(&out.stdout).lines().filter_map(|l| serde_json::from_str(l).ok()).collect()
}

#[test]
fn the_profile_remembers_the_server_and_its_pin() {
    let dir = TempDir::new("remember");
    let server = ServerProc::start(&dir.path().join("data"), None);
    let alice = CliUser::new(dir.path(), "alice", &server, "tcp");
    let _ = alice.ok(&["register", "alice"]);

    // Later commands: no server, no pin.
    let out = run(alice.bare(&["dm", "request", "bob"]));
    assert_eq!(out.status.code(), Some(1), "bob does not exist, but the server answered: {out:?}");
    assert!(error_of(&out)["message"].as_str().unwrap().contains("(404)"), "{out:?}");
    let out = run(alice.bare(&["room", "create", "lobby"]));
    assert!(out.status.success(), "{out:?}");

    // Another server, or another pin, is refused, not switched to silently.
    let mut elsewhere = alice.bare(&[]);
    elsewhere.args(["--server", "127.0.0.1:9", "room", "send", "lobby", "hi"]);
    let out = run(elsewhere);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let error = error_of(&out);
    assert!(error["message"].as_str().unwrap().contains("refusing to switch silently"), "{error}");
    assert!(error["hint"].as_str().unwrap().contains("--switch-server"), "{error}");
    let mut repinned = alice.bare(&[]);
    repinned.args(["--pin", "sha256//AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=", "room", "send", "lobby", "hi"]);
    let out = run(repinned);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(error_of(&out)["message"].as_str().unwrap().contains("pin"), "{out:?}");
    // The same values as remembered are fine.
    let out = alice.run(&["room", "send", "lobby", "hi"]);
    assert!(out.status.success(), "{out:?}");
}

#[test]
fn without_a_pin_only_an_explicit_trust_on_first_use_connects() {
    let dir = TempDir::new("tofu");
    let server = ServerProc::start(&dir.path().join("data"), None);
    let bob = CliUser::new(dir.path(), "bob", &server, "quic");
    let with_server = |args: &[&str]| {
        let mut cmd = bob.bare(&[]);
        cmd.arg("--server").arg(&bob.server).args(args);
        cmd
    };
    let out = run(with_server(&["register", "bob"]));
    assert_eq!(out.status.code(), Some(4), "{out:?}");
    let hint = error_of(&out)["hint"].as_str().unwrap().to_owned();
    assert!(hint.contains("server.pin") && hint.contains("--trust-on-first-use"), "{hint}");

    let out = run(with_server(&["register", "bob", "--trust-on-first-use"]));
    assert!(out.status.success(), "{out:?}");
    let seen = lines(&out);
    let tofu = seen.iter().find(|l| l["event"] == "trusted_on_first_use").unwrap_or_else(|| panic!("{seen:?}"));
    assert_eq!(tofu["pin"], server.pin.as_str(), "the pin printed is the server's");
    // From now on the profile has its pin: no flag, no pin needed.
    let out = run(bob.bare(&["room", "create", "tofu-room"]));
    assert!(out.status.success(), "{out:?}");
}

#[test]
fn default_profiles_remember_the_last_server() {
    let dir = TempDir::new("remember-default");
    let server = ServerProc::start(&dir.path().join("data"), None);
    let carol = CliUser::new(dir.path(), "carol", &server, "tcp");
    let home = dir.path().join("xdg");
    let command = |args: &[&str]| {
        let mut cmd = carol.bare(&[]);
        // No --profile: the default directory under XDG_DATA_HOME.
        let argv: Vec<_> = cmd.get_args().map(ToOwned::to_owned).collect();
        let mut plain = Command::new(cmd.get_program());
        let mut skip = false;
        for a in argv {
            if skip {
                skip = false;
            } else if a == "--profile" {
                skip = true;
            } else {
                plain.arg(a);
            }
        }
        for (k, v) in cmd.get_envs() {
            match v {
                Some(v) => plain.env(k, v),
                None => plain.env_remove(k),
            };
        }
        cmd = plain;
        cmd.env("XDG_DATA_HOME", &home).args(args);
        cmd
    };
    let mut register = command(&["register", "carol"]);
    register.args(["--server", &carol.server, "--pin", &server.pin]);
    let out = run(register);
    assert!(out.status.success(), "{out:?}");
    let out = run(command(&["room", "create", "carols-room"]));
    assert!(out.status.success(), "{out:?}");
}
