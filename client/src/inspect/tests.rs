use super::*;
use confab_proto::examples;
use confab_proto::wire::Message;

fn args() -> InspectArgs {
    InspectArgs { hex: None, file: None, max_data: Limits::DEFAULT.max_data, max_auth: Limits::DEFAULT.max_auth }
}

/// Runs with `input` on stdin; returns (status, stdout, stderr).
fn run_stdin(input: &str) -> (u8, String, String) {
    let (mut out, mut err) = (Vec::new(), Vec::new());
    let status = run(&args(), &mut input.as_bytes(), &mut out, &mut err);
    (status, String::from_utf8(out).unwrap(), String::from_utf8(err).unwrap())
}

#[test]
fn hex_accepts_whitespace_prefix_and_case() {
    assert_eq!(parse_hex(" 0xDe ad\n\tBE ef \r\n"), Ok(vec![0xde, 0xad, 0xbe, 0xef]));
    assert_eq!(parse_hex("0X01"), Ok(vec![1]));
    assert_eq!(parse_hex(""), Ok(vec![]));
    assert_eq!(parse_hex("  0x  "), Ok(vec![]));
}

#[test]
fn hex_errors_say_where() {
    assert_eq!(parse_hex("01 0g"), Err(HexError::InvalidChar { byte: b'g', position: 4 }));
    // `0x` is only a prefix at the start.
    assert_eq!(parse_hex("01 0x02"), Err(HexError::InvalidChar { byte: b'x', position: 4 }));
    assert_eq!(parse_hex("012"), Err(HexError::OddDigits { digits: 3 }));
    let e = parse_hex("é").unwrap_err();
    assert_eq!(e.to_string(), "invalid hex: unexpected byte 0xc3 at position 0");
}

#[test]
fn every_example_round_trips_through_json() {
    for example in examples::all() {
        let inspection = inspect_bytes(&example.to_bytes(), Limits::default());
        assert_eq!(inspection.error, None, "{}", example.label);
        assert_eq!(inspection.frames.len(), 1, "{}", example.label);
        let frame = &inspection.frames[0];
        assert_eq!(frame.message, example.message, "{}", example.label);
        let json: serde_json::Value = serde_json::from_str(&frame.to_json()).unwrap();
        assert_eq!(json["type"], example.message.frame_type().name(), "{}", example.label);
        assert_eq!(json["auth_hex"], hex::encode(&example.auth), "{}", example.label);
    }
}

#[test]
fn keys_keep_wire_order() {
    let example = examples::responses().into_iter().find(|e| e.label == "response_tokens").unwrap();
    let line = inspect_bytes(&example.to_bytes(), Limits::default()).frames[0].to_json();
    let keys = [
        "version",
        "type",
        "len_auth",
        "len_data",
        "auth",
        "auth_hex",
        "opcode",
        "opcode_name",
        "request_id",
        "timestamp_ms",
        "status",
        "code",
        "body",
        "access_token",
        "refresh_token",
        "access_expires_ms",
        "refresh_expires_ms",
    ];
    let mut from = 0;
    for key in keys {
        let at = line[from..].find(&format!("\"{key}\":")).unwrap_or_else(|| panic!("{key} in {line}"));
        from += at + 1;
    }
}

#[test]
fn unprintable_auth_is_null() {
    let ping = Message::Ping(confab_proto::wire::Ping { nonce: 1 });
    let line = inspect_bytes(&ping.to_bytes(b"\x00tok"), Limits::default()).frames[0].to_json();
    assert!(line.contains(r#""auth":null,"auth_hex":"00746f6b""#), "{line}");
}

#[test]
fn decode_error_offsets_count_from_the_input_start() {
    let mut input = Message::Ping(confab_proto::wire::Ping { nonce: 1 }).to_bytes(b"").to_vec();
    let first = input.len();
    input.extend_from_slice(&[1, 9]);
    let inspection = inspect_bytes(&input, Limits::default());
    assert_eq!(inspection.frames.len(), 1);
    let error = inspection.error.unwrap();
    assert_eq!(error.offset(), Some(first + 1));
    assert_eq!(error.kind(), "unknown_frame_type");
    assert_eq!(
        error.to_string(),
        format!(
            "unknown frame type 9 at byte {} [unknown_frame_type; frame 2, which starts at byte {first}]",
            first + 1
        )
    );
}

#[test]
fn incomplete_input_says_how_much_is_missing() {
    let ping = Message::Ping(confab_proto::wire::Ping { nonce: 1 }).to_bytes(b"");
    let inspection = inspect_bytes(&ping[..ping.len() - 3], Limits::default());
    assert_eq!(
        inspection.error,
        Some(InspectError::Incomplete { frame: 1, frame_start: 0, input_len: ping.len() - 3, needed: 3 })
    );
    let inspection = inspect_bytes(&ping[..5], Limits::default());
    let error = inspection.error.unwrap();
    assert_eq!(error.kind(), "incomplete");
    assert!(error.to_string().contains("9 more byte(s) needed"), "{error}");
}

#[test]
fn run_prints_frames_then_one_error() {
    let ping = hex::encode(Message::Ping(confab_proto::wire::Ping { nonce: 1 }).to_bytes(b""));
    let (status, out, err) = run_stdin(&format!("{ping}\n{ping}\n07"));
    assert_eq!(status, 1);
    assert_eq!(out.lines().count(), 2);
    assert_eq!(err.lines().count(), 1);
    assert!(err.starts_with("error: unknown protocol version 7 at byte 44 "), "{err}");
}

#[test]
fn run_rejects_empty_input() {
    let (status, out, err) = run_stdin(" \n");
    assert_eq!((status, out.as_str()), (1, ""));
    assert_eq!(err, "error: empty input: there is no frame to inspect\n");
}

#[test]
fn limits_flags_apply() {
    let limits = InspectArgs { max_data: 10, max_auth: 3, ..args() }.limits();
    assert_eq!((limits.max_data, limits.max_auth), (10, 3));
    assert_eq!(limits.max_name, Limits::DEFAULT.max_name);
}
