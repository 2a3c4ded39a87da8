//! The README's quickstart, run as written: every ```sh block marked
//! `<!-- quickstart: USER -->` is run by bash, in README order, in that
//! user's "terminal" (each terminal keeps the `export`s of its earlier
//! blocks), from a scratch directory where a real `confab-server run` keeps
//! its `confab-data`.
//!
//! Two substitutions, both outside the blocks' own text: the server runs on
//! a free port instead of 7700 (given to the blocks as `CONFAB_SERVER`; its
//! WebSocket listener on that port + 2, as by default), and
//! lines that start with `cargo ` are skipped: the binaries this test run
//! built come first on `PATH`.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;

use confab_tests::procs::{ServerProc, TempDir, binary, contains, free_port, read_tree};

/// (user, script) of every marked block, in order.
fn blocks(readme: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut lines = readme.lines();
    while let Some(line) = lines.next() {
        let Some(user) = line.strip_prefix("<!-- quickstart: ").and_then(|r| r.strip_suffix(" -->")) else {
            continue;
        };
        assert_eq!(lines.next(), Some("```sh"), "a quickstart marker must precede a ```sh block");
        let body: Vec<&str> = lines.by_ref().take_while(|l| *l != "```").collect();
        out.push((user.to_owned(), body.join("\n")));
    }
    out
}

#[test]
fn the_readme_quickstart_works_as_written() {
    let readme = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../README.md")).expect("README");
    let blocks = blocks(&readme);
    assert!(blocks.len() >= 6, "the README has {} quickstart blocks", blocks.len());

    let dir = TempDir::new("quickstart");
    // A free port whose + 2 (the default WebSocket port, which the client derives) is free too.
    let port = (0..100)
        .map(|_| free_port())
        .find(|p| p.checked_add(2).is_some_and(|ws| std::net::TcpListener::bind(("127.0.0.1", ws)).is_ok()))
        .expect("a free port pair");
    let addr = format!("127.0.0.1:{port}");
    let args = ["--tcp-listen", &addr, "--quic-listen", &addr].map(str::to_owned);
    let server = ServerProc::start_with(&dir.path().join("confab-data"), &args);
    let bin_dir = binary("confab").parent().expect("bin dir").to_path_buf();
    let _ = binary("confab-server");
    let path = format!("{}:{}", bin_dir.display(), std::env::var("PATH").unwrap_or_default());

    let mut terminals: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut outputs = Vec::new();
    for (user, body) in &blocks {
        let exports = terminals.entry(user.clone()).or_default();
        let commands: Vec<&str> = body.lines().filter(|l| !l.trim_start().starts_with("cargo ")).collect();
        // The terminal's earlier exports, then this block; PATH is re-prefixed
        // after each export so the freshly built binaries win.
        let mut script = String::from("set -euo pipefail\n");
        for line in exports.iter().map(String::as_str).chain(commands.iter().copied()) {
            script.push_str(line);
            script.push('\n');
            if line.starts_with("export ") {
                script.push_str(&format!("export PATH=\"{}:$PATH\"\n", bin_dir.display()));
            }
        }
        let out = Command::new("bash")
            .arg("-c")
            .arg(&script)
            .current_dir(dir.path())
            .env("PATH", &path)
            .env("CONFAB_SERVER", &addr)
            .env_remove("CONFAB_TRANSPORT")
            .env_remove("CONFAB_PROFILE")
            .env_remove("CONFAB_PIN")
            .output()
            .expect("run bash");
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(
            out.status.success(),
            "the quickstart block of {user} failed ({}):\n{body}\n--- stdout\n{stdout}\n--- stderr\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        exports.extend(commands.iter().filter(|l| l.starts_with("export ")).map(|l| (*l).to_owned()));
        outputs.push((user.clone(), stdout));
    }

    let bob: String = outputs.iter().filter(|(u, _)| u == "bob").map(|(_, o)| o.as_str()).collect();
    for text in [
        "the plans are in the usual place",
        "this one went over QUIC",
        "now over QUIC",
        "hi bob, a DM is on its way",
        "now over WebSocket",
        "this one went over WebSocket",
    ] {
        assert!(bob.contains(text), "bob never saw {text:?}; his output:\n{bob}");
    }
    let log = server.log();
    for text in
        ["the plans are in the usual place", "this one went over QUIC", "this one went over WebSocket", "hi alice"]
    {
        assert!(!log.contains(text), "the server log holds {text:?}");
        for (path, bytes) in read_tree(&server.data) {
            assert!(!contains(&bytes, text.as_bytes()), "{} holds {text:?}", path.display());
        }
    }
    assert!(log.contains("transport=quic"), "no QUIC connection in the log");
    assert!(log.contains("transport=tcp"), "no TCP connection in the log");
    assert!(log.contains("transport=ws"), "no WebSocket connection in the log");
}
