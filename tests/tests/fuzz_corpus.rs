//! Replays the committed fuzz inputs on stable: every file of
//! `fuzz/corpus/<target>/` (the seed corpus) and `fuzz/regressions/<target>/`
//! (inputs that once crashed) goes through `confab_proto::fuzzing::<target>`,
//! the same body the cargo-fuzz target runs. A panic here is a fuzz crash
//! reproduced without nightly or libFuzzer.

use std::fs;
use std::path::{Path, PathBuf};

fn fuzz_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz")
}

/// Files of `dir`, sorted by name; an absent directory has none.
fn inputs(dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut files: Vec<PathBuf> =
        entries.map(|entry| entry.expect("readable directory entry").path()).filter(|path| path.is_file()).collect();
    files.sort();
    files
}

fn replay(target: &str, body: fn(&[u8])) {
    let corpus = inputs(&fuzz_dir().join("corpus").join(target));
    assert!(!corpus.is_empty(), "fuzz/corpus/{target}/ is empty or missing: the replay would test nothing");
    let regressions = inputs(&fuzz_dir().join("regressions").join(target));
    for path in corpus.iter().chain(&regressions) {
        let data = fs::read(path).unwrap_or_else(|err| panic!("reading {}: {err}", path.display()));
        // Printed before the body runs, so a panic's captured output names the input.
        println!("{target}: replaying {} ({} bytes)", path.display(), data.len());
        body(&data);
    }
    println!("{target}: {} corpus and {} regression inputs passed", corpus.len(), regressions.len());
}

#[test]
fn frame_decode_corpus() {
    replay("frame_decode", confab_proto::fuzzing::frame_decode);
}

#[test]
fn message_decode_corpus() {
    replay("message_decode", confab_proto::fuzzing::message_decode);
}

#[test]
fn server_session_corpus() {
    replay("server_session", confab_proto::fuzzing::server_session);
}

#[test]
fn client_ops_corpus() {
    replay("client_ops", confab_proto::fuzzing::client_ops);
}

#[test]
fn jwt_corpus() {
    replay("jwt", confab_proto::fuzzing::jwt);
}

#[test]
fn switchboard_corpus() {
    replay("switchboard", confab_proto::fuzzing::switchboard);
}
