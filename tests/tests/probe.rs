//! A format-agnostic probe for key stream reuse (issue 10, section 1), run
//! against the real binaries on real sockets.
//!
//! The scenario is the one that used to reuse a room key stream: alice
//! creates a room and sends m1; bob sends `room_history` (20) messages,
//! pushing m1 out of the retained history; alice logs out, logs in, rejoins
//! and sends m2, of the same length as m1. Two messages sealed under one
//! (key, nonce) give c1 XOR c2 = m1 XOR m2 at the same offsets, whatever the
//! blob layout around them.
//!
//! The probe parses nothing: it reads every file of the server's data
//! directory and of both clients' profiles as raw bytes (plus the server's
//! log), in snapshots taken right after m1 was sent, after m2 was sent and
//! after the server stopped, and looks for any two byte windows w1 and w2,
//! each `len(m)` long, from any file of any snapshot, with
//! w1 XOR w2 = m1 XOR m2 ([`find_reuse`]).
//!
//! Before it is trusted on the real files, the probe must find a reuse
//! planted among random bytes and in a scratch copy of the real data
//! directory, and find nothing in random bytes alone.

use std::collections::BTreeSet;
use std::path::Path;
use std::time::Instant;

use confab_tests::procs::{CliUser, ServerProc, TempDir, read_tree};
use rand::rngs::StdRng;
use rand::{Rng as _, SeedableRng as _};
use serde_json::Value;

/// m1 and m2: the same length (at least 24 bytes), distinctive, and with
/// an XOR that is not a repeated byte (no case flips of one text).
const M1: &str = "probe m1: the otter swims north at 04:17, bring 3 lanterns";
const M2: &str = "PROBE-M2 ~ violet kites over quay #9 (dawn) - ask for Ines";

/// One labelled byte string: a file of a snapshot, or a log.
#[derive(Debug, Clone)]
struct Blob {
    label: String,
    bytes: Vec<u8>,
}

/// Where a window starts: the blob's index and the offset in it.
type At = (usize, usize);

/// Two windows whose XOR is m1 XOR m2.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Hit {
    first: At,
    second: At,
    /// The key stream the pair implies is zero: the two windows are m1 and
    /// m2 themselves (plaintext at rest, not a key stream reuse).
    plaintext: bool,
}

/// What a search cost.
#[derive(Debug, Default)]
struct Cost {
    /// Windows indexed (one per byte offset of every blob long enough).
    windows: usize,
    /// Candidates whose 8-byte prefix matched and were compared in full.
    verified: usize,
}

/// The 8-byte prefix of `bytes` as an integer.
fn prefix(bytes: &[u8]) -> u64 {
    let mut p = [0u8; 8];
    p.copy_from_slice(&bytes[..8]);
    u64::from_le_bytes(p)
}

/// Every unordered pair of windows (w1, w2) of length `m1.len()`, taken from
/// any blob at any offset (the two may be in one blob or in two), such that
/// w1 XOR w2 = m1 XOR m2.
///
/// Since w2 = w1 XOR d (d = m1 XOR m2), the search indexes every window by
/// its first 8 bytes (a vector sorted by that prefix), then for every window
/// w1 looks up the windows whose prefix is prefix(w1) XOR prefix(d) and
/// compares only those in full: O(N log N) for N windows instead of
/// O(N^2 len). Identical windows (one ciphertext stored twice, in the
/// database and its WAL, or in two snapshots) XOR to zero, never to d, as
/// m1 != m2.
fn find_reuse(blobs: &[Blob], m1: &[u8], m2: &[u8]) -> (Vec<Hit>, Cost) {
    assert_eq!(m1.len(), m2.len(), "m1 and m2 must have the same length");
    assert!(m1.len() >= 24, "m1 and m2 must be at least 24 bytes");
    assert_ne!(m1, m2, "m1 and m2 must differ");
    let len = m1.len();
    let d: Vec<u8> = m1.iter().zip(m2).map(|(a, b)| a ^ b).collect();
    let d8 = prefix(&d);
    let mut index: Vec<(u64, u32, u32)> = Vec::new();
    for (b, blob) in blobs.iter().enumerate() {
        let b = u32::try_from(b).expect("blob count");
        for (o, w) in blob.bytes.windows(len).enumerate() {
            index.push((prefix(w), b, u32::try_from(o).expect("blob size")));
        }
    }
    index.sort_unstable();
    let mut cost = Cost { windows: index.len(), verified: 0 };
    let mut hits = Vec::new();
    let window = |(b, o): At| &blobs[b].bytes[o..o + len];
    for &(key, b, o) in &index {
        let first = (b as usize, o as usize);
        let target = key ^ d8;
        let start = index.partition_point(|e| e.0 < target);
        for &(k2, b2, o2) in &index[start..] {
            if k2 != target {
                break;
            }
            let second = (b2 as usize, o2 as usize);
            // Each unordered pair once: the relation is symmetric.
            if second <= first {
                continue;
            }
            cost.verified += 1;
            let (w1, w2) = (window(first), window(second));
            if w1.iter().zip(w2).zip(&d).all(|((x, y), z)| x ^ y == *z) {
                let plaintext = (w1 == m1 && w2 == m2) || (w1 == m2 && w2 == m1);
                hits.push(Hit { first, second, plaintext });
            }
        }
    }
    hits.sort_by_key(|h| (h.first, h.second));
    (hits, cost)
}

/// The files of `dir`, read now, labelled `{tag}:{path relative to dir}`.
fn snapshot(tag: &str, dir: &Path) -> Vec<Blob> {
    let mut files = read_tree(dir);
    files.sort();
    files
        .into_iter()
        .map(|(path, bytes)| {
            let rel = path.strip_prefix(dir).unwrap_or(&path).display();
            Blob { label: format!("{tag}:{rel}"), bytes }
        })
        .collect()
}

/// A readable account of `hits` in `blobs`.
fn describe(blobs: &[Blob], hits: &[Hit]) -> String {
    let at = |(b, o): At| format!("{} @ {o}", blobs[b].label);
    hits.iter()
        .take(20)
        .map(|h| format!("  {} ^ {}{}\n", at(h.first), at(h.second), if h.plaintext { " (plaintext)" } else { "" }))
        .collect()
}

/// `n` random bytes.
fn random_bytes(rng: &mut StdRng, n: usize) -> Vec<u8> {
    let mut v = vec![0u8; n];
    rng.fill_bytes(&mut v);
    v
}

/// `a` XOR `b`.
fn xor(a: &[u8], b: &[u8]) -> Vec<u8> {
    a.iter().zip(b).map(|(x, y)| x ^ y).collect()
}

/// Copies every file under `from` into `to`, keeping the relative paths.
fn copy_tree(from: &Path, to: &Path) {
    for (path, bytes) in read_tree(from) {
        let dest = to.join(path.strip_prefix(from).expect("under from"));
        std::fs::create_dir_all(dest.parent().expect("parent")).expect("mkdir");
        std::fs::write(dest, bytes).expect("write");
    }
}

/// The probe proves itself: nothing in random bytes; a reuse planted in
/// random bytes (one file, and across two files) is found exactly; a
/// ciphertext stored twice is not a reuse; plaintext pairs are flagged as such.
#[test]
fn the_probe_finds_a_planted_reuse_and_nothing_in_random_bytes() {
    let (m1, m2) = (M1.as_bytes(), M2.as_bytes());
    let mut rng = StdRng::seed_from_u64(0x0c0f_fab1);
    let noise: Vec<Blob> =
        (0..4).map(|i| Blob { label: format!("noise{i}"), bytes: random_bytes(&mut rng, 256 * 1024) }).collect();
    let (hits, _) = find_reuse(&noise, m1, m2);
    assert!(hits.is_empty(), "false positives in random bytes:\n{}", describe(&noise, &hits));

    // One key stream k, two ciphertexts, at odd offsets of one file.
    let k = random_bytes(&mut rng, m1.len());
    let (c1, c2) = (xor(m1, &k), xor(m2, &k));
    let mut planted = noise.clone();
    planted[1].bytes[1001..1001 + c1.len()].copy_from_slice(&c1);
    planted[1].bytes[77_777..77_777 + c2.len()].copy_from_slice(&c2);
    // The same ciphertext stored twice (a database and its WAL) is no reuse.
    planted[2].bytes[5000..5000 + c1.len()].copy_from_slice(&c1);
    let (hits, _) = find_reuse(&planted, m1, m2);
    assert_eq!(
        hits,
        vec![
            Hit { first: (1, 1001), second: (1, 77_777), plaintext: false },
            Hit { first: (1, 77_777), second: (2, 5000), plaintext: false },
        ],
        "the planted reuse (c1 twice, c2 once):\n{}",
        describe(&planted, &hits)
    );

    // Across two files, c2 first; and the plaintexts themselves are flagged as plaintext.
    let mut planted = noise.clone();
    planted[3].bytes[3..3 + c2.len()].copy_from_slice(&c2);
    planted[0].bytes[200_000..200_000 + c1.len()].copy_from_slice(&c1);
    planted[2].bytes[10..10 + m1.len()].copy_from_slice(m1);
    planted[2].bytes[90_000..90_000 + m2.len()].copy_from_slice(m2);
    let (hits, _) = find_reuse(&planted, m1, m2);
    assert_eq!(
        hits,
        vec![
            Hit { first: (0, 200_000), second: (3, 3), plaintext: false },
            Hit { first: (2, 10), second: (2, 90_000), plaintext: true },
        ],
        "{}",
        describe(&planted, &hits)
    );
}

/// The JSON lines of a command's output.
fn lines(stdout: &str) -> Vec<Value> {
    stdout.lines().filter_map(|l| serde_json::from_str(l).ok()).collect()
}

/// The texts of the `room_message` lines in `stdout`.
fn room_texts(stdout: &str) -> Vec<String> {
    lines(stdout)
        .into_iter()
        .filter(|v| v["kind"] == "room_message")
        .filter_map(|v| v["text"].as_str().map(str::to_owned))
        .collect()
}

#[test]
fn no_key_stream_reuse_after_history_loss_logout_login_and_rejoin() {
    let (m1, m2) = (M1.as_bytes(), M2.as_bytes());
    let started = Instant::now();
    let dir = TempDir::new("probe");
    let data = dir.path().join("data");
    let mut server = ServerProc::start(&data, None);
    let alice = CliUser::new(dir.path(), "alice", &server, "tcp");
    let bob = CliUser::new(dir.path(), "bob", &server, "tcp");
    let _ = alice.ok(&["register", "alice"]);
    let _ = bob.ok(&["register", "bob"]);
    let _ = alice.ok(&["room", "create", "lobby"]);
    let _ = bob.ok(&["room", "join", "lobby"]);
    let _ = alice.ok(&["room", "send", "lobby", M1]);
    let mut blobs = snapshot("after-m1/server", &data);
    blobs.extend(snapshot("after-m1/alice", &alice.profile));
    // A scratch copy of the data directory as it is now (m1 sealed in it,
    // no reuse possible yet), for the planted reuse below.
    let scratch = TempDir::new("probe-scratch");
    copy_tree(&data, scratch.path());

    // Bob pushes m1 out of the retained history (room_history = 20 by default).
    for n in 0..20 {
        let _ = bob.ok(&["room", "send", "lobby", &format!("filler {n:02} from bob")]);
    }
    let _ = alice.ok(&["logout"]);
    let _ = alice.ok(&["login", "alice"]);
    let joined = alice.ok(&["room", "join", "lobby"]);
    let retained = room_texts(&joined);
    assert_eq!(retained.len(), 20, "the retained history on rejoin: {joined}");
    assert!(!retained.iter().any(|t| t == M1), "m1 must be out of the history: {joined}");
    let _ = alice.ok(&["room", "send", "lobby", M2]);
    let history = bob.ok(&["room", "history", "lobby"]);
    assert!(room_texts(&history).iter().any(|t| t == M2), "bob reads m2: {history}");
    blobs.extend(snapshot("after-m2/server", &data));
    blobs.extend(snapshot("after-m2/alice", &alice.profile));
    blobs.extend(snapshot("after-m2/bob", &bob.profile));
    assert_eq!(server.terminate(), Some(0), "SIGTERM exits 0");
    blobs.extend(snapshot("stopped/server", &data));
    blobs.push(Blob { label: "server log".to_owned(), bytes: server.log().into_bytes() });
    let scenario = started.elapsed();

    // First the probe must find a reuse planted in a scratch copy of the real
    // data directory, read back from disk like the real one.
    let mut rng = StdRng::seed_from_u64(0x5eed);
    let k = random_bytes(&mut rng, m1.len());
    let mut planted = random_bytes(&mut rng, 64 * 1024);
    planted[4099..4099 + m1.len()].copy_from_slice(&xor(m1, &k));
    planted[40_001..40_001 + m2.len()].copy_from_slice(&xor(m2, &k));
    std::fs::write(scratch.path().join("planted"), &planted).expect("write");
    let copy = snapshot("scratch", scratch.path());
    let (hits, _) = find_reuse(&copy, m1, m2);
    let labels: BTreeSet<(&str, usize, &str, usize)> = hits
        .iter()
        .map(|h| (copy[h.first.0].label.as_str(), h.first.1, copy[h.second.0].label.as_str(), h.second.1))
        .collect();
    assert_eq!(
        labels,
        BTreeSet::from([("scratch:planted", 4099, "scratch:planted", 40_001)]),
        "the probe must find exactly the planted reuse in the scratch copy:\n{}",
        describe(&copy, &hits)
    );

    // Then the real files: no two windows anywhere XOR to m1 XOR m2.
    let searched = Instant::now();
    let (hits, cost) = find_reuse(&blobs, m1, m2);
    let bytes: usize = blobs.iter().map(|b| b.bytes.len()).sum();
    eprintln!(
        "probe: scenario {scenario:?}; searched {} files, {bytes} bytes, {} windows, {} full comparisons in {:?}",
        blobs.len(),
        cost.windows,
        cost.verified,
        searched.elapsed()
    );
    assert!(
        blobs.iter().any(|b| b.label.starts_with("after-m1/server:") && b.bytes.len() > 4096),
        "the server's data directory was read after m1"
    );
    assert!(
        hits.is_empty(),
        "{} pairs of windows XOR to m1 XOR m2: key stream reuse (or plaintext at rest); the first ones:\n{}",
        hits.len(),
        describe(&blobs, &hits)
    );
}
