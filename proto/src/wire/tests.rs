//! Codec tests: property round trips, hand-built byte vectors for each frame
//! type, and one test per error path.

use bytes::{Bytes, BytesMut};
use proptest::prelude::*;

use super::strategy;
use crate::wire::*;

/// Builds a frame by hand from seed 000's layout, independently of the encoder.
fn raw_frame(frame_type: u8, auth: &[u8], data: &[u8]) -> Vec<u8> {
    let mut v = vec![1, frame_type];
    v.extend_from_slice(&(auth.len() as u32).to_be_bytes());
    v.extend_from_slice(&(data.len() as u64).to_be_bytes());
    v.extend_from_slice(auth);
    v.extend_from_slice(data);
    v
}

fn header(opcode: u32, request_id: u32, timestamp_ms: u64) -> Vec<u8> {
    let mut v = opcode.to_be_bytes().to_vec();
    v.extend_from_slice(&request_id.to_be_bytes());
    v.extend_from_slice(&timestamp_ms.to_be_bytes());
    v
}

fn str16(s: &[u8]) -> Vec<u8> {
    let mut v = (s.len() as u16).to_be_bytes().to_vec();
    v.extend_from_slice(s);
    v
}

fn decode_one(bytes: &[u8]) -> Result<Message, DecodeError> {
    let limits = Limits::default();
    let (frame, used) = Frame::parse(&Bytes::copy_from_slice(bytes), &limits)?.expect("complete frame");
    assert_eq!(used, bytes.len());
    Message::decode(&frame, &limits)
}

fn decode_stream(chunks: &[&[u8]]) -> (Vec<Frame>, Option<DecodeError>) {
    let mut d = FrameDecoder::new(Limits::default());
    let mut frames = Vec::new();
    for chunk in chunks {
        d.push(chunk);
        loop {
            match d.next_frame() {
                Ok(Some(f)) => frames.push(f),
                Ok(None) => break,
                Err(e) => return (frames, Some(e)),
            }
        }
    }
    (frames, None)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn message_round_trips(msg in strategy::message(), auth in strategy::auth()) {
        let bytes = msg.to_bytes(&auth);
        let limits = Limits::default();
        let (frame, used) = Frame::parse(&bytes, &limits).unwrap().unwrap();
        prop_assert_eq!(used, bytes.len());
        prop_assert_eq!(&frame.auth[..], &auth[..]);
        let decoded = Message::decode(&frame, &limits).unwrap();
        prop_assert_eq!(&decoded, &msg);
        // bytes -> value -> identical bytes
        prop_assert_eq!(decoded.to_bytes(&frame.auth), bytes);
    }

    #[test]
    fn any_chunking_gives_the_same_frames(
        msgs in proptest::collection::vec(strategy::message(), 1..5),
        cuts in proptest::collection::vec(1usize..64, 1..40),
    ) {
        let mut stream = BytesMut::new();
        for m in &msgs {
            m.encode(b"tok", &mut stream);
        }
        let stream = stream.freeze();
        let mut chunks: Vec<&[u8]> = Vec::new();
        let mut at = 0;
        for cut in cuts.iter().cycle() {
            if at >= stream.len() { break; }
            let end = (at + cut).min(stream.len());
            chunks.push(&stream[at..end]);
            at = end;
        }
        let (frames, err) = decode_stream(&chunks);
        prop_assert!(err.is_none());
        prop_assert_eq!(frames.len(), msgs.len());
        for (f, m) in frames.iter().zip(&msgs) {
            prop_assert_eq!(&Message::decode(f, &Limits::default()).unwrap(), m);
        }
    }

    #[test]
    fn arbitrary_bytes_never_panic(data in proptest::collection::vec(any::<u8>(), 0..512)) {
        let (frames, _) = decode_stream(&[&data]);
        for f in &frames {
            let _ = Message::decode(f, &Limits::default());
        }
    }
}

#[test]
fn one_byte_at_a_time_equals_all_at_once() {
    let mut stream = Vec::new();
    for ex in crate::examples::all() {
        stream.extend_from_slice(&ex.to_bytes());
    }
    let bytewise: Vec<&[u8]> = stream.chunks(1).collect();
    let (a, ea) = decode_stream(&[&stream]);
    let (b, eb) = decode_stream(&bytewise);
    assert!(ea.is_none() && eb.is_none());
    assert_eq!(a.len(), crate::examples::all().len());
    assert_eq!(a, b);
}

// ---- hand-built vectors, one per frame type ----

#[test]
fn vector_request_login() {
    let mut data = header(100_002, 7, 1_000);
    data.extend(str16(b"alice"));
    data.extend(str16(b"pw"));
    let bytes = raw_frame(1, b"", &data);
    assert_eq!(&bytes[..14], &[1, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 27]);
    let msg = decode_one(&bytes).unwrap();
    assert_eq!(
        msg,
        Message::Request(Request {
            request_id: 7,
            timestamp_ms: 1_000,
            body: RequestBody::Login(Login { username: "alice".into(), password: "pw".into() }),
        })
    );
    assert_eq!(&msg.to_bytes(b"")[..], &bytes[..]);
}

#[test]
fn vector_request_with_auth() {
    let mut data = header(100_012, 1, 0);
    data.extend(str16(b"room11"));
    let bytes = raw_frame(1, b"cfa_x", &data);
    let (frame, _) = Frame::parse(&Bytes::from(bytes.clone()), &Limits::default()).unwrap().unwrap();
    assert_eq!(&frame.auth[..], b"cfa_x");
    assert_eq!(frame.data_offset(), 19);
    let msg = Message::decode(&frame, &Limits::default()).unwrap();
    assert_eq!(msg.opcode(), Some(Opcode::LeaveRoom));
}

#[test]
fn vector_response_login_in_progress() {
    let mut data = header(100_002, 7, 2_000);
    data.extend([1, 0, 202]);
    let msg = decode_one(&raw_frame(2, b"", &data)).unwrap();
    assert_eq!(
        msg,
        Message::Response(Response {
            opcode: Opcode::Login,
            request_id: 7,
            timestamp_ms: 2_000,
            status: Status::InProgress,
            code: 202,
            body: ResponseBody::Empty,
        })
    );
}

#[test]
fn vector_response_error() {
    let mut data = header(100_002, 7, 2_000);
    data.extend([2, 0x01, 0xad]); // error, 429
    data.extend(str16(b"slow down"));
    data.extend(30_000u64.to_be_bytes());
    match decode_one(&raw_frame(2, b"", &data)).unwrap() {
        Message::Response(r) => {
            assert_eq!((r.status, r.code), (Status::Error, 429));
            assert_eq!(r.body, ResponseBody::Error(ErrorBody { reason: "slow down".into(), retry_after_ms: 30_000 }));
        }
        other => panic!("not a response: {other:?}"),
    }
}

#[test]
fn vector_event_peer_gone_and_user_message() {
    let mut data = header(10_007, 0, 5);
    data.extend(str16(b"bob"));
    assert_eq!(
        decode_one(&raw_frame(3, b"", &data)).unwrap(),
        Message::Event(Event {
            request_id: 0,
            timestamp_ms: 5,
            body: EventBody::PeerGone(PeerGone { peer: "bob".into() })
        })
    );
    let mut data = header(10_002, 0, 5);
    data.extend(str16(b"alice"));
    data.extend(9u64.to_be_bytes());
    data.extend(4u64.to_be_bytes());
    data.extend(3u32.to_be_bytes());
    data.extend([0xde, 0xad, 0x00]);
    match decode_one(&raw_frame(3, b"", &data)).unwrap() {
        Message::Event(Event { body: EventBody::UserMessage(m), .. }) => {
            assert_eq!((m.from.as_str(), m.seq, m.sent_ms), ("alice", 9, 4));
            assert_eq!(&m.sealed[..], &[0xde, 0xad, 0x00]);
        }
        other => panic!("not a user message: {other:?}"),
    }
}

#[test]
fn vector_ping_pong_close() {
    assert_eq!(decode_one(&raw_frame(4, b"", &42u64.to_be_bytes())).unwrap(), Message::Ping(Ping { nonce: 42 }));
    assert_eq!(decode_one(&raw_frame(5, b"", &42u64.to_be_bytes())).unwrap(), Message::Pong(Pong { nonce: 42 }));
    let mut data = 408u16.to_be_bytes().to_vec();
    data.extend(str16(b"idle"));
    assert_eq!(
        decode_one(&raw_frame(6, b"", &data)).unwrap(),
        Message::Close(Close { code: 408, reason: "idle".into() })
    );
}

#[test]
fn blobs_are_zero_copy_slices_of_the_frame() {
    let msg = Message::Request(Request {
        request_id: 1,
        timestamp_ms: 0,
        body: RequestBody::SendMp(SendMp { peer: "bob".into(), sealed: Bytes::from(vec![7u8; 4096]) }),
    });
    let bytes = msg.to_bytes(b"");
    let (frame, _) = Frame::parse(&bytes, &Limits::default()).unwrap().unwrap();
    let Message::Request(Request { body: RequestBody::SendMp(m), .. }) =
        Message::decode(&frame, &Limits::default()).unwrap()
    else {
        panic!("not send_mp")
    };
    let range = bytes.as_ptr_range();
    assert!(range.contains(&m.sealed.as_ptr()), "blob was copied");
}

// ---- error paths ----

#[test]
fn unknown_version_is_reported_after_one_byte() {
    let mut d = FrameDecoder::new(Limits::default());
    d.push(&[2]);
    let err = d.next_frame().unwrap_err();
    assert_eq!(err, DecodeError::UnknownVersion { version: 2, offset: 0 });
    assert!(err.is_fatal());
    assert_eq!(err.code(), status::UNSUPPORTED_VERSION);
    // The decoder stays failed: the stream has lost its framing.
    d.push(&raw_frame(4, b"", &[0; 8]));
    assert_eq!(d.next_frame().unwrap_err(), err);
}

#[test]
fn unknown_frame_type() {
    for bad in [0u8, 7, 255] {
        let (_, err) = decode_stream(&[&[1, bad]]);
        assert_eq!(err, Some(DecodeError::UnknownFrameType { frame_type: bad, offset: 1 }));
    }
}

#[test]
fn len_auth_over_limit_is_rejected_before_the_rest_arrives() {
    let mut bytes = vec![1, 1];
    bytes.extend(4097u32.to_be_bytes());
    let (_, err) = decode_stream(&[&bytes]);
    let err = err.unwrap();
    assert_eq!(err, DecodeError::LimitExceeded { what: "len_auth", value: 4097, max: 4096, offset: 2 });
    assert!(err.is_fatal());
}

#[test]
fn length_bomb_costs_nothing() {
    let mut bytes = vec![1, 1, 0, 0, 0, 0];
    bytes.extend(u64::MAX.to_be_bytes());
    let mut d = FrameDecoder::new(Limits::default());
    d.push(&bytes);
    let err = d.next_frame().unwrap_err();
    assert_eq!(err, DecodeError::LimitExceeded { what: "len_data", value: u64::MAX, max: 1 << 20, offset: 6 });
    assert_eq!(err.code(), status::TOO_LARGE);
    assert_eq!(d.buffered(), 0, "nothing kept after a fatal error");
    // The one-shot parser says the same.
    assert_eq!(Frame::parse(&Bytes::from(bytes), &Limits::default()).unwrap_err(), err);
}

#[test]
fn needed_counts_down() {
    let mut d = FrameDecoder::new(Limits::default());
    assert_eq!(d.needed(), 14);
    let bytes = raw_frame(4, b"", &42u64.to_be_bytes());
    d.push(&bytes[..10]);
    assert_eq!(d.needed(), 4);
    assert_eq!(d.next_frame().unwrap(), None);
    d.push(&bytes[10..16]);
    assert_eq!(d.needed(), 6);
    assert_eq!(d.next_frame().unwrap(), None);
    d.push(&bytes[16..]);
    assert_eq!(d.needed(), 0);
    assert!(d.next_frame().unwrap().is_some());
    assert_eq!(d.needed(), 14);
}

#[test]
fn unknown_opcode() {
    let data = header(999_999, 1, 0);
    let err = decode_one(&raw_frame(1, b"ab", &data)).unwrap_err();
    assert_eq!(err, DecodeError::UnknownOpcode { opcode: 999_999, offset: 16 });
    assert!(!err.is_fatal());
}

#[test]
fn opcode_in_the_wrong_direction() {
    let mut data = header(10_007, 0, 0);
    data.extend(str16(b"bob"));
    assert_eq!(
        decode_one(&raw_frame(1, b"", &data)).unwrap_err(),
        DecodeError::WrongDirection { opcode: 10_007, frame_type: "request", offset: 14 }
    );
    let mut data = header(100_014, 0, 0);
    data.extend(str16(b"bob"));
    assert_eq!(
        decode_one(&raw_frame(3, b"", &data)).unwrap_err(),
        DecodeError::WrongDirection { opcode: 100_014, frame_type: "event", offset: 14 }
    );
    let mut data = header(10_007, 0, 0);
    data.extend([0, 0, 200]);
    assert_eq!(
        decode_one(&raw_frame(2, b"", &data)).unwrap_err(),
        DecodeError::WrongDirection { opcode: 10_007, frame_type: "response", offset: 14 }
    );
}

#[test]
fn truncated_fields() {
    // Header cut inside the opcode.
    assert_eq!(
        decode_one(&raw_frame(1, b"", &[0, 1])).unwrap_err(),
        DecodeError::Truncated { field: "opcode", offset: 14, needed: 2 }
    );
    // Password length says 5, only 2 bytes follow.
    let mut data = header(100_002, 1, 0);
    data.extend(str16(b"alice"));
    data.extend([0, 5, b'p', b'w']);
    assert_eq!(
        decode_one(&raw_frame(1, b"", &data)).unwrap_err(),
        DecodeError::Truncated { field: "password", offset: 14 + 16 + 7 + 2, needed: 3 }
    );
    // Missing u64.
    let mut data = header(100_016, 1, 0);
    data.extend(str16(b"bob"));
    data.extend([0, 0, 0]);
    assert_eq!(
        decode_one(&raw_frame(1, b"", &data)).unwrap_err(),
        DecodeError::Truncated { field: "seq", offset: 14 + 16 + 5, needed: 5 }
    );
}

#[test]
fn overlong_field() {
    let mut data = header(100_015, 1, 0);
    data.extend(str16(&[b'a'; 65]));
    let err = decode_one(&raw_frame(1, b"", &data)).unwrap_err();
    assert_eq!(err, DecodeError::OverlongField { field: "username", len: 65, max: 64, offset: 30 });
    assert_eq!(err.code(), status::TOO_LARGE);
}

#[test]
fn invalid_utf8_points_at_the_bad_byte() {
    let mut data = header(100_015, 1, 0);
    data.extend(str16(&[b'a', b'b', 0xff]));
    assert_eq!(
        decode_one(&raw_frame(1, b"", &data)).unwrap_err(),
        DecodeError::InvalidUtf8 { field: "username", offset: 14 + 16 + 2 + 2 }
    );
}

#[test]
fn trailing_bytes() {
    let mut data = header(100_011, 1, 0);
    data.extend([9, 9]);
    assert_eq!(decode_one(&raw_frame(1, b"", &data)).unwrap_err(), DecodeError::TrailingBytes { offset: 30, count: 2 });
    let mut data = 42u64.to_be_bytes().to_vec();
    data.push(0);
    assert_eq!(decode_one(&raw_frame(4, b"", &data)).unwrap_err(), DecodeError::TrailingBytes { offset: 22, count: 1 });
}

#[test]
fn list_count_over_limit() {
    let mut data = header(100_005, 1, 0);
    data.extend([0, 0, 200]); // valid, 200
    data.extend(1025u16.to_be_bytes());
    assert_eq!(
        decode_one(&raw_frame(2, b"", &data)).unwrap_err(),
        DecodeError::LimitExceeded { what: "members", value: 1025, max: 1024, offset: 33 }
    );
}

#[test]
fn invalid_status_and_code() {
    let mut data = header(100_011, 1, 0);
    data.extend([9, 0, 200]);
    assert_eq!(
        decode_one(&raw_frame(2, b"", &data)).unwrap_err(),
        DecodeError::InvalidValue { field: "status", value: 9, offset: 30 }
    );
    let mut data = header(100_011, 1, 0);
    data.extend([0, 0, 42]);
    assert_eq!(
        decode_one(&raw_frame(2, b"", &data)).unwrap_err(),
        DecodeError::InvalidValue { field: "code", value: 42, offset: 31 }
    );
}

#[test]
fn error_kinds_are_distinct_and_named() {
    let errors = [
        DecodeError::UnknownVersion { version: 0, offset: 0 },
        DecodeError::UnknownFrameType { frame_type: 0, offset: 0 },
        DecodeError::LimitExceeded { what: "len_data", value: 0, max: 0, offset: 0 },
        DecodeError::UnknownOpcode { opcode: 0, offset: 0 },
        DecodeError::WrongDirection { opcode: 0, frame_type: "event", offset: 0 },
        DecodeError::Truncated { field: "x", offset: 0, needed: 1 },
        DecodeError::OverlongField { field: "x", len: 0, max: 0, offset: 0 },
        DecodeError::InvalidUtf8 { field: "x", offset: 0 },
        DecodeError::InvalidValue { field: "x", value: 0, offset: 0 },
        DecodeError::TrailingBytes { offset: 0, count: 0 },
    ];
    let kinds: std::collections::BTreeSet<_> = errors.iter().map(DecodeError::kind).collect();
    assert_eq!(kinds.len(), errors.len());
    assert!(errors[0].to_string().contains("version"));
    let fatal: Vec<bool> = errors.iter().map(DecodeError::is_fatal).collect();
    assert_eq!(fatal, [true, true, true, false, false, false, false, false, false, false]);
}

#[test]
fn every_opcode_has_an_example_and_a_layout() {
    let examples = crate::examples::all();
    for op in Opcode::ALL {
        assert!(examples.iter().any(|e| e.message.opcode() == Some(*op)), "{op} has no example");
        let layout = if op.is_request() { RequestBody::layout(*op) } else { EventBody::layout(*op) };
        assert!(layout.is_some(), "{op} has no layout");
        assert_eq!(Opcode::from_u32(op.as_u32()), Some(*op));
    }
    assert_eq!(Opcode::from_u32(100_000), None);
}

#[test]
fn request_header_survives_a_bad_body() {
    let mut data = header(100_002, 9, 0);
    data.extend([0, 5, b'a']); // truncated username
    let (frame, _) = Frame::parse(&Bytes::from(raw_frame(1, b"", &data)), &Limits::default()).unwrap().unwrap();
    assert!(Message::decode(&frame, &Limits::default()).is_err());
    assert_eq!(Message::request_header(&frame), Some((Opcode::Login, 9)));
    // Unknown opcode, event opcode, short data, other frame types: no header.
    for (ty, data) in
        [(1u8, header(999_999, 1, 0)), (1, header(10_001, 1, 0)), (1, vec![0, 1, 0x86]), (3, header(100_002, 1, 0))]
    {
        let (frame, _) = Frame::parse(&Bytes::from(raw_frame(ty, b"", &data)), &Limits::default()).unwrap().unwrap();
        assert_eq!(Message::request_header(&frame), None);
    }
}

#[test]
fn huge_limits_cannot_overflow_the_frame_length() {
    let limits = Limits { max_auth: u32::MAX, max_data: u64::MAX, ..Limits::DEFAULT };
    let mut bytes = vec![1, 1];
    bytes.extend(u32::MAX.to_be_bytes());
    bytes.extend(u64::MAX.to_be_bytes());
    let err = Frame::parse(&Bytes::from(bytes.clone()), &limits).unwrap_err();
    assert!(matches!(err, DecodeError::LimitExceeded { what: "len_data", offset: 6, .. }), "{err:?}");
    let mut d = FrameDecoder::new(limits);
    d.push(&bytes);
    assert_eq!(d.next_frame().unwrap_err(), err);
}

#[cfg(feature = "fuzzing")]
#[test]
fn message_fuzz_body_ignores_inputs_above_the_frame_limit() {
    // A send_mp whose data part is larger than the fuzz limit used to trip the re-encode check.
    let msg = Message::Request(Request {
        request_id: 1,
        timestamp_ms: 0,
        body: RequestBody::SendMp(SendMp { peer: "bob".into(), sealed: Bytes::from(vec![0u8; 64 * 1024]) }),
    });
    let frame = msg.to_bytes(b"");
    crate::fuzzing::message_decode(&frame[HEADER_LEN..]);
}
