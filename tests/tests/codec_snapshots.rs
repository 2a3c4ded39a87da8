//! One insta snapshot per example message (every opcode, every response
//! shape, the control frames): the encoded frame split into its parts, then
//! the decoded fields. A change to the wire format shows up here for review.

use std::fmt::Write as _;

use confab_proto::examples;
use confab_proto::wire::{FieldValue, Frame, Limits, Message};

fn hex_groups(bytes: &[u8]) -> String {
    bytes.chunks(16).map(hex::encode).collect::<Vec<_>>().join("\n        ")
}

fn value(v: &FieldValue<'_>) -> String {
    match v {
        FieldValue::Int(n) => n.to_string(),
        FieldValue::Str(s) => format!("{s:?}"),
        FieldValue::Bytes(b) => format!("0x{} ({} bytes)", hex::encode(b), b.len()),
        FieldValue::Names(n) => format!("{n:?}"),
        FieldValue::Entries(e) => {
            let items: Vec<String> = e
                .iter()
                .map(|m| {
                    format!(
                        "{{from: {:?}, seq: {}, sent_ms: {}, sealed: 0x{}}}",
                        m.from,
                        m.seq,
                        m.sent_ms,
                        hex::encode(&m.sealed)
                    )
                })
                .collect();
            format!("[{}]", items.join(", "))
        }
    }
}

fn render(example: &examples::Example) -> String {
    let bytes = example.to_bytes();
    let (frame, used) = Frame::parse(&bytes, &Limits::default()).unwrap().unwrap();
    assert_eq!(used, bytes.len());
    let message = Message::decode(&frame, &Limits::default()).unwrap();
    assert_eq!(message, example.message);

    let mut out = String::new();
    writeln!(out, "type:   {}", frame.frame_type.name()).unwrap();
    writeln!(out, "header: {}", hex::encode(&bytes[..14])).unwrap();
    writeln!(out, "auth:   {:?}", String::from_utf8_lossy(&frame.auth)).unwrap();
    writeln!(out, "data:   {}", hex_groups(&frame.data)).unwrap();
    let fields = match &message {
        Message::Request(r) => {
            writeln!(
                out,
                "opcode: {}  request_id: {}  timestamp_ms: {}",
                r.body.opcode(),
                r.request_id,
                r.timestamp_ms
            )
            .unwrap();
            r.body.fields()
        }
        Message::Response(r) => {
            writeln!(
                out,
                "opcode: {}  request_id: {}  timestamp_ms: {}  status: {}  code: {}",
                r.opcode,
                r.request_id,
                r.timestamp_ms,
                r.status.name(),
                r.code
            )
            .unwrap();
            r.body.fields()
        }
        Message::Event(e) => {
            writeln!(
                out,
                "opcode: {}  request_id: {}  timestamp_ms: {}",
                e.body.opcode(),
                e.request_id,
                e.timestamp_ms
            )
            .unwrap();
            e.body.fields()
        }
        Message::Ping(p) => p.fields(),
        Message::Pong(p) => p.fields(),
        Message::Close(c) => c.fields(),
    };
    for (name, v) in &fields {
        writeln!(out, "  {name}: {}", value(v)).unwrap();
    }
    out
}

#[test]
fn every_example_encodes_as_snapshotted() {
    let all = examples::all();
    let mut labels = std::collections::BTreeSet::new();
    for example in &all {
        assert!(labels.insert(example.label.clone()), "duplicate label {}", example.label);
        insta::assert_snapshot!(example.label.clone(), render(example));
    }
    assert_eq!(labels.len(), all.len());
}
