//! The `confab` binary: message text from standard input, empty messages,
//! and usage errors in JSON mode. None of these needs a server.

use std::io::Write;
use std::process::{Command, Stdio};

/// Runs `confab` with `stdin`, in an empty data directory: exit code, stdout, stderr.
fn confab(args: &[&str], stdin: &[u8]) -> (i32, String, String) {
    let home = std::env::temp_dir().join(format!("confab-usage-{}", std::process::id()));
    let mut child = Command::new(env!("CARGO_BIN_EXE_confab"))
        .args(args)
        .env("XDG_DATA_HOME", &home)
        .env_remove("CONFAB_PROFILE")
        .env_remove("CONFAB_SERVER")
        .env("CONFAB_PIN", "sha256//AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run confab");
    child.stdin.take().unwrap().write_all(stdin).unwrap();
    let out = child.wait_with_output().unwrap();
    let text = |b: Vec<u8>| String::from_utf8(b).unwrap();
    (out.status.code().unwrap_or(-1), text(out.stdout), text(out.stderr))
}

fn json_error(stderr: &str) -> serde_json::Value {
    let line: serde_json::Value = serde_json::from_str(stderr.trim()).unwrap_or_else(|e| panic!("{e}: {stderr:?}"));
    assert_eq!(line["kind"], "error", "{line}");
    line
}

#[test]
fn an_empty_message_is_refused_from_argv_and_from_stdin() {
    for (args, stdin) in [
        (&["--json", "dm", "send", "bob", ""][..], &b""[..]),
        (&["--json", "dm", "send", "bob", "  "][..], &b""[..]),
        (&["--json", "room", "send", "lobby", "-"][..], &b"\n"[..]),
        (&["--json", "dm", "send", "bob", "-"][..], &b""[..]),
    ] {
        let (code, _, stderr) = confab(args, stdin);
        assert_eq!(code, 2, "{args:?}: {stderr}");
        let error = json_error(&stderr);
        assert!(error["message"].as_str().unwrap().contains("empty message"), "{error}");
    }
    let (code, _, stderr) = confab(&["dm", "send", "bob", ""], b"");
    assert_eq!(code, 2);
    assert!(stderr.contains("error: empty message"), "{stderr}");
}

#[test]
fn message_text_comes_from_stdin_with_a_dash() {
    // The text is read and accepted: the command goes on to the profile
    // (and stops there: nobody logged in, exit 3).
    let (code, _, stderr) = confab(&["--json", "dm", "send", "bob", "-"], b"a message\nfrom a file\n");
    assert_eq!(code, 3, "{stderr}");
    assert!(json_error(&stderr)["message"].as_str().unwrap().contains("no user given"), "{stderr}");
    let mut stdin = "from stdin\n".as_bytes();
    assert_eq!(confab_client::commands::message_text("-", &mut stdin).unwrap(), "from stdin");
    let mut stdin = "two\nlines\r\n".as_bytes();
    assert_eq!(confab_client::commands::message_text("-", &mut stdin).unwrap(), "two\nlines");
    assert_eq!(confab_client::commands::message_text("as is\n", &mut "".as_bytes()).unwrap(), "as is\n");
}

#[test]
fn usage_errors_are_json_lines_with_json() {
    for args in [
        &["--json", "dm", "sned", "bob"][..],
        &["dm", "send", "--json"][..],
        &["--json", "--transport", "carrier-pigeon", "listen"][..],
    ] {
        let (code, stdout, stderr) = confab(args, b"");
        assert_eq!(code, 2, "{args:?}");
        assert!(stdout.is_empty());
        let error = json_error(&stderr);
        assert_eq!(error["exit_code"], 2);
        assert!(!error["message"].as_str().unwrap().is_empty(), "{error}");
    }
    // Without --json: clap's text.
    let (code, _, stderr) = confab(&["dm", "sned"], b"");
    assert_eq!(code, 2);
    assert!(stderr.starts_with("error:"), "{stderr}");
}
