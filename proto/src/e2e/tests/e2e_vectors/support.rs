//! Helpers of the vector test: hex, a scripted CryptoRng, an ordered JSON
//! tree and the comparison with the file.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::path::PathBuf;

use rand::SeedableRng;
use rand::rngs::StdRng;

pub(super) fn h(s: &str) -> Vec<u8> {
    hex::decode(s).expect("valid hex")
}

pub(super) fn h16(s: &str) -> [u8; 16] {
    h(s).try_into().expect("16 bytes")
}

pub(super) fn lp(field: &[u8]) -> Vec<u8> {
    let mut out = (field.len() as u64).to_be_bytes().to_vec();
    out.extend_from_slice(field);
    out
}

/// A CryptoRng that first hands out scripted bytes, then a fixed stream.
/// RSA-PSS draws its 32-byte salt first, then blinding values (which do not
/// change the signature); P-256 key generation reads 32 bytes as a
/// little-endian integer.
pub(super) struct Scripted {
    queue: VecDeque<u8>,
    rest: StdRng,
}

impl Scripted {
    pub(super) fn new(parts: &[&[u8]]) -> Self {
        Self { queue: parts.concat().into(), rest: StdRng::from_seed([0x5e; 32]) }
    }

    /// Scripted bytes that make P-256 key generation return `scalar` (big-endian).
    pub(super) fn scalar(scalar: &[u8]) -> Vec<u8> {
        scalar.iter().rev().copied().collect()
    }
}

impl rand::TryRng for Scripted {
    type Error = Infallible;

    fn try_next_u32(&mut self) -> Result<u32, Infallible> {
        let mut b = [0u8; 4];
        self.try_fill_bytes(&mut b)?;
        Ok(u32::from_le_bytes(b))
    }

    fn try_next_u64(&mut self) -> Result<u64, Infallible> {
        let mut b = [0u8; 8];
        self.try_fill_bytes(&mut b)?;
        Ok(u64::from_le_bytes(b))
    }

    fn try_fill_bytes(&mut self, dst: &mut [u8]) -> Result<(), Infallible> {
        for byte in dst {
            *byte = match self.queue.pop_front() {
                Some(b) => b,
                None => rand::Rng::next_u32(&mut self.rest) as u8,
            };
        }
        Ok(())
    }
}

impl rand::TryCryptoRng for Scripted {}

/// An ordered JSON tree (serde_json without `preserve_order` sorts keys).
pub(super) enum Node {
    Str(String),
    Num(u64),
    Obj(Vec<(&'static str, Node)>),
}

pub(super) fn hx(bytes: &[u8]) -> Node {
    Node::Str(hex::encode(bytes))
}

pub(super) fn text(s: &str) -> Node {
    Node::Str(s.to_owned())
}

impl Node {
    pub(super) fn to_value(&self) -> serde_json::Value {
        match self {
            Node::Str(s) => serde_json::Value::String(s.clone()),
            Node::Num(n) => serde_json::Value::from(*n),
            Node::Obj(fields) => {
                serde_json::Value::Object(fields.iter().map(|(k, v)| ((*k).to_owned(), v.to_value())).collect())
            }
        }
    }

    pub(super) fn write(&self, out: &mut String, indent: usize) {
        match self {
            Node::Str(_) | Node::Num(_) => out.push_str(&self.to_value().to_string()),
            Node::Obj(fields) => {
                out.push_str("{\n");
                for (i, (k, v)) in fields.iter().enumerate() {
                    out.push_str(&"  ".repeat(indent + 1));
                    out.push_str(&serde_json::Value::String((*k).to_owned()).to_string());
                    out.push_str(": ");
                    v.write(out, indent + 1);
                    if i + 1 < fields.len() {
                        out.push(',');
                    }
                    out.push('\n');
                }
                out.push_str(&"  ".repeat(indent));
                out.push('}');
            }
        }
    }
}

/// Fails with the path of the first value that differs.
pub(super) fn compare(path: &str, expected: &serde_json::Value, found: &serde_json::Value) {
    use serde_json::Value;
    match (expected, found) {
        (Value::Object(e), Value::Object(f)) => {
            for (k, v) in e {
                let sub = if path.is_empty() { k.clone() } else { format!("{path}.{k}") };
                let Some(fv) = f.get(k) else { panic!("docs/vectors/e2e.json: `{sub}` is missing") };
                compare(&sub, v, fv);
            }
            for k in f.keys() {
                assert!(e.contains_key(k), "docs/vectors/e2e.json: `{path}.{k}` is not a vector field");
            }
        }
        _ => assert!(
            expected == found,
            "docs/vectors/e2e.json: `{path}` is {found}, the implementation computes {expected} \
             (regenerate with CONFAB_WRITE_VECTORS=1 only if the format change is intended)"
        ),
    }
}

pub(super) fn write_mode() -> bool {
    std::env::var_os("CONFAB_WRITE_VECTORS").is_some_and(|v| v == "1")
}

pub(super) fn vectors_path() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../docs/vectors/e2e.json")
}
