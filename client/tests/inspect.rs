//! `confab inspect` end to end: the real binary, its stdout, stderr and exit status.

use std::io::Write;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use confab_proto::examples::{self, Example};
use confab_proto::wire::{FieldValue, Message};
use serde_json::Value;

/// What one run of the binary gave.
struct Run {
    status: i32,
    stdout: String,
    stderr: String,
}

impl Run {
    fn from(output: Output) -> Run {
        Run {
            status: output.status.code().expect("exited, not killed"),
            stdout: String::from_utf8(output.stdout).expect("stdout is UTF-8"),
            stderr: String::from_utf8(output.stderr).expect("stderr is UTF-8"),
        }
    }

    fn json_lines(&self) -> Vec<Value> {
        self.stdout
            .lines()
            .map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}")))
            .collect()
    }

    /// Asserts success with no stderr and returns the JSON lines.
    fn ok(&self) -> Vec<Value> {
        assert_eq!(self.status, 0, "stderr: {}", self.stderr);
        assert_eq!(self.stderr, "");
        self.json_lines()
    }

    /// Asserts exit status 1 with exactly one error line containing every
    /// part of `expected`, no panic, and returns the frames printed before it.
    fn fails(&self, expected: &[&str]) -> Vec<Value> {
        assert_eq!(self.status, 1, "stdout: {}\nstderr: {}", self.stdout, self.stderr);
        assert_eq!(self.stderr.lines().count(), 1, "one error line: {}", self.stderr);
        assert!(self.stderr.starts_with("error: "), "{}", self.stderr);
        assert!(!self.stderr.contains("panicked"), "{}", self.stderr);
        for part in expected {
            assert!(self.stderr.contains(part), "{part:?} not in {}", self.stderr);
        }
        self.json_lines()
    }
}

fn confab(args: &[&str]) -> Run {
    Run::from(Command::new(env!("CARGO_BIN_EXE_confab")).args(args).stdin(Stdio::null()).output().expect("run confab"))
}

fn confab_stdin(args: &[&str], stdin: &[u8]) -> Run {
    let mut child = Command::new(env!("CARGO_BIN_EXE_confab"))
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run confab");
    child.stdin.take().unwrap().write_all(stdin).unwrap();
    Run::from(child.wait_with_output().unwrap())
}

fn inspect_hex(bytes: &[u8]) -> Run {
    confab(&["inspect", "--hex", &hex::encode(bytes)])
}

fn field_json(value: FieldValue<'_>) -> Value {
    match value {
        FieldValue::Int(n) => Value::from(n),
        FieldValue::Str(s) => Value::from(s),
        FieldValue::Bytes(b) => Value::from(hex::encode(b)),
        FieldValue::Names(names) => Value::from(names.to_vec()),
        FieldValue::Entries(entries) => Value::Array(
            entries
                .iter()
                .map(|e| {
                    serde_json::json!({
                        "from": e.from, "seq": e.seq, "sent_ms": e.sent_ms, "sealed": hex::encode(&e.sealed),
                    })
                })
                .collect(),
        ),
    }
}

/// Top-level keys and values an example must print, in order (`body` last, as a placeholder).
type TopLevel = Vec<(&'static str, Value)>;
/// Body fields in wire order.
type Body<'a> = Vec<(&'static str, FieldValue<'a>)>;

/// The top-level keys and body fields an example must print, in order.
fn expected(example: &Example) -> (TopLevel, Body<'_>) {
    let bytes = example.to_bytes();
    let mut top = vec![
        ("version", Value::from(1)),
        ("type", Value::from(example.message.frame_type().name())),
        ("len_auth", Value::from(example.auth.len())),
        ("len_data", Value::from(bytes.len() - 14 - example.auth.len())),
        ("auth", Value::from(std::str::from_utf8(&example.auth).unwrap())),
        ("auth_hex", Value::from(hex::encode(&example.auth))),
    ];
    let mut head = |opcode: confab_proto::wire::Opcode, request_id: u32, timestamp_ms: u64| {
        top.push(("opcode", Value::from(opcode.as_u32())));
        top.push(("opcode_name", Value::from(opcode.name())));
        top.push(("request_id", Value::from(request_id)));
        top.push(("timestamp_ms", Value::from(timestamp_ms)));
    };
    let body = match &example.message {
        Message::Request(r) => {
            head(r.body.opcode(), r.request_id, r.timestamp_ms);
            r.body.fields()
        }
        Message::Response(r) => {
            head(r.opcode, r.request_id, r.timestamp_ms);
            top.push(("status", Value::from(r.status.name())));
            top.push(("code", Value::from(r.code)));
            r.body.fields()
        }
        Message::Event(e) => {
            head(e.body.opcode(), e.request_id, e.timestamp_ms);
            e.body.fields()
        }
        Message::Ping(p) => p.fields(),
        Message::Pong(p) => p.fields(),
        Message::Close(c) => c.fields(),
    };
    top.push(("body", Value::Null));
    (top, body)
}

/// Asserts that `keys` occur as object keys in `line` in this order.
fn assert_key_order(line: &str, keys: &[&str]) {
    let mut from = 0;
    for key in keys {
        let pattern = format!("\"{key}\":");
        let at = line[from..].find(&pattern).unwrap_or_else(|| panic!("{key} missing or out of order in {line}"));
        from += at + pattern.len();
    }
}

#[test]
fn every_example_prints_one_matching_json_line() {
    for example in examples::all() {
        let run = inspect_hex(&example.to_bytes());
        let lines = run.ok();
        assert_eq!(lines.len(), 1, "{}: {}", example.label, run.stdout);
        let json = &lines[0];
        let (top, body) = expected(&example);

        let top_keys: Vec<&str> = top.iter().map(|(k, _)| *k).collect();
        assert_eq!(json.as_object().unwrap().len(), top.len(), "{}: keys {json}", example.label);
        for (key, value) in &top {
            if *key != "body" {
                assert_eq!(&json[key], value, "{}: {key}", example.label);
            }
        }
        let body_json = json["body"].as_object().unwrap_or_else(|| panic!("{}: body {json}", example.label));
        assert_eq!(body_json.len(), body.len(), "{}: body {json}", example.label);
        for (name, value) in &body {
            assert_eq!(json["body"][name], field_json(*value), "{}: body.{name}", example.label);
        }

        // Key order: top level, then the body fields in wire order.
        let body_keys: Vec<&str> = body.iter().map(|(k, _)| *k).collect();
        assert_key_order(&run.stdout, &[top_keys, body_keys].concat());
    }
}

#[test]
fn a_stream_of_three_frames_gives_three_lines() {
    let all = examples::all();
    let picks = [&all[1], &all[all.len() - 5], &all[all.len() - 3]];
    let stream: Vec<u8> = picks.iter().flat_map(|e| e.to_bytes().to_vec()).collect();
    let lines = inspect_hex(&stream).ok();
    assert_eq!(lines.len(), 3);
    for (json, example) in lines.iter().zip(picks) {
        assert_eq!(json["type"], example.message.frame_type().name(), "{}", example.label);
        let opcode = example.message.opcode().map(|o| Value::from(o.name()));
        assert_eq!(json.get("opcode_name").cloned(), opcode, "{}", example.label);
    }
}

#[test]
fn hex_text_on_stdin_with_whitespace_and_prefix() {
    let ping = hex::encode(examples::control()[0].to_bytes());
    let (a, b) = ping.split_at(10);
    let text = format!("  0x{}\n {b}\n\t{}\n", a.to_uppercase(), hex::encode(examples::control()[2].to_bytes()));
    let lines = confab_stdin(&["inspect"], text.as_bytes()).ok();
    assert_eq!(lines.len(), 2);
    assert_eq!(lines[0]["body"], serde_json::json!({ "nonce": 42 }));
    assert_eq!(lines[1]["type"], "close");
    assert_eq!(lines[1]["body"], serde_json::json!({ "code": 408, "reason": "idle timeout" }));
}

#[test]
fn raw_bytes_from_a_file() {
    let path = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("inspect-{}.bin", std::process::id()));
    let register = &examples::requests()[0];
    let mut bytes = register.to_bytes().to_vec();
    bytes.extend_from_slice(&examples::responses()[4].to_bytes());
    std::fs::write(&path, &bytes).unwrap();
    let run = confab(&["inspect", "--file", path.to_str().unwrap()]);
    std::fs::remove_file(&path).unwrap();
    let lines = run.ok();
    assert_eq!(lines.len(), 2);
    assert_eq!(lines[0]["opcode_name"], "register");
    assert_eq!(lines[0]["body"]["identity_key"], hex::encode("idkey"));
    assert_eq!(lines[1]["opcode_name"], "join_room");
    assert_eq!(lines[1]["body"]["members"], serde_json::json!(["alice", "bob"]));
    assert_eq!(lines[1]["body"]["history"][1]["from"], "bob");
    assert_eq!(lines[1]["body"]["history"][1]["sealed"], hex::encode("sealed"));
}

#[test]
fn missing_file_is_an_error() {
    confab(&["inspect", "--file", "/nonexistent/confab-inspect"]).fails(&["cannot read /nonexistent/confab-inspect"]);
}

/// The seed's login request, byte by byte: header, then
/// `opcode | request_id | timestamp_ms | u16 len "alice" | u16 len "pw"`.
fn hand_built_login(extra: &[u8]) -> Vec<u8> {
    let mut data = Vec::new();
    data.extend_from_slice(&100_002u32.to_be_bytes());
    data.extend_from_slice(&77u32.to_be_bytes());
    data.extend_from_slice(&1_700_000_000_123u64.to_be_bytes());
    data.extend_from_slice(&5u16.to_be_bytes());
    data.extend_from_slice(b"alice");
    data.extend_from_slice(&2u16.to_be_bytes());
    data.extend_from_slice(b"pw");
    data.extend_from_slice(extra);
    let mut frame = vec![1, 1];
    frame.extend_from_slice(&0u32.to_be_bytes());
    frame.extend_from_slice(&(data.len() as u64).to_be_bytes());
    frame.extend_from_slice(&data);
    frame
}

#[test]
fn hand_built_login_frame() {
    let lines = inspect_hex(&hand_built_login(&[])).ok();
    assert_eq!(lines.len(), 1);
    assert_eq!(
        lines[0],
        serde_json::json!({
            "version": 1, "type": "request", "len_auth": 0, "len_data": 27, "auth": "", "auth_hex": "",
            "opcode": 100_002, "opcode_name": "login", "request_id": 77, "timestamp_ms": 1_700_000_000_123u64,
            "body": { "username": "alice", "password": "pw" },
        })
    );
}

#[test]
fn unknown_version() {
    let mut frame = hand_built_login(&[]);
    frame[0] = 7;
    inspect_hex(&frame).fails(&["unknown protocol version 7 at byte 0", "unknown_version"]);
}

#[test]
fn unknown_frame_type() {
    let mut frame = hand_built_login(&[]);
    frame[1] = 9;
    inspect_hex(&frame).fails(&["unknown frame type 9 at byte 1", "unknown_frame_type"]);
}

#[test]
fn length_bomb_is_rejected_at_once() {
    let mut bomb = vec![1, 1, 0, 0, 0, 0];
    bomb.extend_from_slice(&u64::MAX.to_be_bytes());
    let started = Instant::now();
    let run = inspect_hex(&bomb);
    let elapsed = started.elapsed();
    run.fails(&["len_data is 18446744073709551615, above the limit of 1048576, at byte 6", "limit_exceeded"]);
    // A sanity bound, not a benchmark: allocating 2^64 bytes would abort, not take 2 s.
    assert!(elapsed < Duration::from_secs(2), "took {elapsed:?}");
    // Raised limits still refuse it, and cannot be raised without bound.
    inspect_max_data_bomb(&bomb);
}

fn inspect_max_data_bomb(bomb: &[u8]) {
    confab(&["inspect", "--max-data", "1073741824", "--hex", &hex::encode(bomb)])
        .fails(&["above the limit of 1073741824, at byte 6"]);
    assert_eq!(confab(&["inspect", "--max-data", "18446744073709551615", "--hex", "01"]).status, 2);
}

#[test]
fn limits_can_be_lowered() {
    let token = &examples::requests()[3];
    assert!(!token.auth.is_empty());
    inspect_hex(&token.to_bytes()).ok();
    confab(&["inspect", "--max-auth", "4", "--hex", &hex::encode(token.to_bytes())])
        .fails(&["len_auth is 38, above the limit of 4, at byte 2"]);
    confab(&["inspect", "--max-data", "8", "--hex", &hex::encode(token.to_bytes())])
        .fails(&["len_data is", "above the limit of 8, at byte 6"]);
}

#[test]
fn truncated_header() {
    let run = inspect_hex(&hand_built_login(&[])[..5]);
    assert!(run.fails(&["truncated header at byte 5", "9 more byte(s) needed"]).is_empty());
}

#[test]
fn partial_frame_after_a_good_one() {
    let ping = examples::control()[0].to_bytes();
    let login = hand_built_login(&[]);
    let mut stream = ping.to_vec();
    stream.extend_from_slice(&login[..login.len() - 4]);
    let input_len = stream.len();
    let frames = inspect_hex(&stream).fails(&[
        &format!("truncated frame at byte {input_len}"),
        &format!("frame 2, which starts at byte {}", ping.len()),
        "4 more byte(s) needed",
    ]);
    assert_eq!(frames.len(), 1);
}

#[test]
fn truncated_body_field() {
    // The password's length prefix says 10 bytes; the frame's data holds 2.
    let mut frame = hand_built_login(&[]);
    let at = frame.len() - 4;
    frame[at..at + 2].copy_from_slice(&10u16.to_be_bytes());
    // The codec reports the offset where the field's bytes start.
    inspect_hex(&frame).fails(&[
        &format!("truncated field `password` at byte {}: 8 more byte(s) needed", frame.len() - 2),
        "[truncated;",
    ]);
}

#[test]
fn unknown_opcode_in_a_later_frame() {
    let ping = examples::control()[0].to_bytes();
    let mut login = hand_built_login(&[]);
    login[14..18].copy_from_slice(&4242u32.to_be_bytes());
    let mut stream = ping.to_vec();
    stream.extend_from_slice(&login);
    // The opcode is at byte 14 of the second frame.
    let frames = inspect_hex(&stream).fails(&[
        &format!("unknown opcode 4242 at byte {}", ping.len() + 14),
        "unknown_opcode",
        &format!("frame 2, which starts at byte {}", ping.len()),
    ]);
    assert_eq!(frames.len(), 1);
    assert_eq!(frames[0]["type"], "ping");
}

#[test]
fn event_opcode_in_a_request_frame() {
    let mut login = hand_built_login(&[]);
    login[14..18].copy_from_slice(&10_001u32.to_be_bytes());
    inspect_hex(&login).fails(&["opcode 10001 is not valid in a request frame at byte 14", "wrong_direction"]);
}

#[test]
fn trailing_bytes_inside_a_frame() {
    let frame = hand_built_login(&[0xaa, 0xbb]);
    inspect_hex(&frame)
        .fails(&[&format!("2 trailing byte(s) after the last field at byte {}", frame.len() - 2), "trailing_bytes"]);
}

#[test]
fn invalid_hex() {
    confab(&["inspect", "--hex", "0101 zz"]).fails(&["invalid hex: unexpected character 'z' at position 5"]);
    confab(&["inspect", "--hex", "010"]).fails(&["invalid hex: odd number of hex digits (3)"]);
    confab_stdin(&["inspect"], b"\x01\x01").fails(&["invalid hex: unexpected byte 0x01 at position 0"]);
}

#[test]
fn empty_input() {
    confab(&["inspect", "--hex", ""]).fails(&["empty input"]);
    confab_stdin(&["inspect"], b"  \n").fails(&["empty input"]);
}

#[test]
fn hex_and_file_together_is_a_usage_error() {
    let run = confab(&["inspect", "--hex", "01", "--file", "x"]);
    assert_eq!(run.status, 2);
    assert!(run.stderr.contains("cannot be used with"), "{}", run.stderr);
}
