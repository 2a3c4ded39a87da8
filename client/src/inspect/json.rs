//! One compact JSON object per frame, keys in a fixed order.

use confab_proto::wire::{FieldValue, Message};
use serde::{Serialize, Serializer};

use super::InspectedFrame;

impl InspectedFrame {
    /// The frame as one compact JSON object (no trailing newline), keys in
    /// the order described in the [module docs](super).
    #[must_use]
    pub fn to_json(&self) -> String {
        serde_json::to_string(&self.json()).expect("an ordered JSON tree always serialises")
    }

    fn json(&self) -> Json {
        let auth = &self.frame.auth;
        let printable = auth.iter().all(|b| (0x20..=0x7e).contains(b));
        let mut obj = vec![
            ("version", Json::Int(u64::from(self.version))),
            ("type", Json::str(self.frame.frame_type.name())),
            ("len_auth", Json::Int(auth.len() as u64)),
            ("len_data", Json::Int(self.frame.data.len() as u64)),
            ("auth", if printable { Json::Str(String::from_utf8_lossy(auth).into_owned()) } else { Json::Null }),
            ("auth_hex", Json::Str(hex::encode(auth))),
        ];
        let opcode = self.message.opcode();
        let mut head = |request_id: u32, timestamp_ms: u64| {
            if let Some(opcode) = opcode {
                obj.push(("opcode", Json::Int(u64::from(opcode.as_u32()))));
                obj.push(("opcode_name", Json::str(opcode.name())));
            }
            obj.push(("request_id", Json::Int(u64::from(request_id))));
            obj.push(("timestamp_ms", Json::Int(timestamp_ms)));
        };
        let body = match &self.message {
            Message::Request(r) => {
                head(r.request_id, r.timestamp_ms);
                r.body.fields()
            }
            Message::Response(r) => {
                head(r.request_id, r.timestamp_ms);
                obj.push(("status", Json::str(r.status.name())));
                obj.push(("code", Json::Int(u64::from(r.code))));
                r.body.fields()
            }
            Message::Event(e) => {
                head(e.request_id, e.timestamp_ms);
                e.body.fields()
            }
            Message::Ping(p) => p.fields(),
            Message::Pong(p) => p.fields(),
            Message::Close(c) => c.fields(),
        };
        obj.push(("body", fields_json(body)));
        Json::Obj(obj)
    }
}

fn fields_json(fields: Vec<(&'static str, FieldValue<'_>)>) -> Json {
    Json::Obj(fields.into_iter().map(|(name, value)| (name, field_json(value))).collect())
}

fn field_json(value: FieldValue<'_>) -> Json {
    match value {
        FieldValue::Int(n) => Json::Int(n),
        FieldValue::Str(s) => Json::str(s),
        FieldValue::Bytes(b) => Json::Str(hex::encode(b)),
        FieldValue::Names(names) => Json::Arr(names.iter().map(|n| Json::str(n)).collect()),
        FieldValue::Entries(entries) => Json::Arr(entries.iter().map(|e| fields_json(e.fields())).collect()),
    }
}

/// A JSON value whose objects keep their keys in insertion order (the
/// workspace's `serde_json::Map` sorts them).
#[derive(Debug)]
enum Json {
    Null,
    Int(u64),
    Str(String),
    Arr(Vec<Json>),
    Obj(Vec<(&'static str, Json)>),
}

impl Json {
    fn str(s: &str) -> Json {
        Json::Str(s.to_owned())
    }
}

impl Serialize for Json {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            Json::Null => serializer.serialize_unit(),
            Json::Int(n) => serializer.serialize_u64(*n),
            Json::Str(s) => serializer.serialize_str(s),
            Json::Arr(items) => serializer.collect_seq(items),
            Json::Obj(entries) => serializer.collect_map(entries.iter().map(|(k, v)| (k, v))),
        }
    }
}
