//! Field-level codec shared by every message body: nom readers with offsets,
//! and the matching writers. One reader method and one writer per field kind.

use bytes::{BufMut, Bytes, BytesMut};
use nom::IResult;
use nom::bytes::complete::take;
use nom::number::complete::{be_u8, be_u16, be_u32, be_u64};

use super::HistoryEntry;
use crate::wire::{DecodeError, Limits};

type NomErr<'a> = nom::error::Error<&'a [u8]>;
/// A nom parser of one fixed-size big-endian integer.
type FixedParser<'a, T> = fn(&'a [u8]) -> IResult<&'a [u8], T, NomErr<'a>>;

/// Reads fields from a frame's data part, tracking the byte offset within
/// the whole frame so every error can say where it happened.
pub(crate) struct Reader<'a> {
    src: &'a Bytes,
    rest: &'a [u8],
    base: usize,
    limits: &'a Limits,
}

impl<'a> Reader<'a> {
    /// A reader over `src`, whose first byte sits at `base` in the frame.
    pub(crate) fn new(src: &'a Bytes, base: usize, limits: &'a Limits) -> Self {
        Reader { src, rest: &src[..], base, limits }
    }

    pub(crate) fn offset(&self) -> usize {
        self.base + (self.src.len() - self.rest.len())
    }

    fn fixed<T>(&mut self, field: &'static str, size: usize, parser: FixedParser<'a, T>) -> Result<T, DecodeError> {
        match parser(self.rest) {
            Ok((rest, value)) => {
                self.rest = rest;
                Ok(value)
            }
            Err(_) => Err(DecodeError::Truncated { field, offset: self.offset(), needed: size - self.rest.len() }),
        }
    }

    pub(crate) fn u8(&mut self, field: &'static str) -> Result<u8, DecodeError> {
        self.fixed(field, 1, be_u8)
    }

    pub(crate) fn u16(&mut self, field: &'static str) -> Result<u16, DecodeError> {
        self.fixed(field, 2, be_u16)
    }

    pub(crate) fn u32(&mut self, field: &'static str) -> Result<u32, DecodeError> {
        self.fixed(field, 4, be_u32)
    }

    pub(crate) fn u64(&mut self, field: &'static str) -> Result<u64, DecodeError> {
        self.fixed(field, 8, be_u64)
    }

    /// A length prefix of `prefix` bytes (2 or 4), checked against `max`, then that many bytes.
    fn prefixed(&mut self, field: &'static str, prefix: usize, max: u64) -> Result<&'a [u8], DecodeError> {
        let at = self.offset();
        let len = if prefix == 2 { u64::from(self.u16(field)?) } else { u64::from(self.u32(field)?) };
        if len > max {
            return Err(DecodeError::OverlongField { field, len, max, offset: at });
        }
        // `len <= max <= limits.max_data`, which the frame layer already bounded.
        let len = len as usize;
        match take::<_, _, NomErr<'a>>(len)(self.rest) {
            Ok((rest, bytes)) => {
                self.rest = rest;
                Ok(bytes)
            }
            Err(_) => Err(DecodeError::Truncated { field, offset: self.offset(), needed: len - self.rest.len() }),
        }
    }

    fn utf8(&self, field: &'static str, bytes: &'a [u8]) -> Result<String, DecodeError> {
        match std::str::from_utf8(bytes) {
            Ok(s) => Ok(s.to_owned()),
            Err(e) => Err(DecodeError::InvalidUtf8 {
                field,
                // `bytes` ends where `rest` starts.
                offset: self.offset() - bytes.len() + e.valid_up_to(),
            }),
        }
    }

    /// A name: u16 length, at most `max_name` bytes of UTF-8.
    pub(crate) fn name(&mut self, field: &'static str) -> Result<String, DecodeError> {
        let bytes = self.prefixed(field, 2, u64::from(self.limits.max_name))?;
        self.utf8(field, bytes)
    }

    /// A short text: u16 length, at most `max_text` bytes of UTF-8.
    pub(crate) fn text(&mut self, field: &'static str) -> Result<String, DecodeError> {
        let bytes = self.prefixed(field, 2, u64::from(self.limits.max_text))?;
        self.utf8(field, bytes)
    }

    /// A long text: u32 length, at most `max_data` bytes of UTF-8.
    pub(crate) fn long_text(&mut self, field: &'static str) -> Result<String, DecodeError> {
        let bytes = self.prefixed(field, 4, self.limits.max_data)?;
        self.utf8(field, bytes)
    }

    /// An opaque blob: u32 length, at most `max_data` bytes, returned without copying.
    pub(crate) fn blob(&mut self, field: &'static str) -> Result<Bytes, DecodeError> {
        let bytes = self.prefixed(field, 4, self.limits.max_data)?;
        Ok(self.src.slice_ref(bytes))
    }

    /// A list count: u16, at most `max_items`.
    fn count(&mut self, field: &'static str) -> Result<usize, DecodeError> {
        let at = self.offset();
        let n = self.u16(field)?;
        if n > self.limits.max_items {
            return Err(DecodeError::LimitExceeded {
                what: field,
                value: u64::from(n),
                max: u64::from(self.limits.max_items),
                offset: at,
            });
        }
        Ok(usize::from(n))
    }

    /// A list of names: u16 count, then each name.
    pub(crate) fn names(&mut self, field: &'static str) -> Result<Vec<String>, DecodeError> {
        let n = self.count(field)?;
        // Each item takes at least 2 bytes: never reserve more than the input can hold.
        let mut out = Vec::with_capacity(n.min(self.rest.len() / 2));
        for _ in 0..n {
            out.push(self.name(field)?);
        }
        Ok(out)
    }

    /// A list of history entries: u16 count, then each message's fields.
    pub(crate) fn entries(&mut self, field: &'static str) -> Result<Vec<HistoryEntry>, DecodeError> {
        let n = self.count(field)?;
        let mut out = Vec::with_capacity(n.min(self.rest.len() / HistoryEntry::MIN_LEN));
        for _ in 0..n {
            out.push(HistoryEntry::decode(self)?);
        }
        Ok(out)
    }

    /// Fails with [`DecodeError::TrailingBytes`] if anything is left.
    pub(crate) fn finish(self) -> Result<(), DecodeError> {
        if self.rest.is_empty() {
            Ok(())
        } else {
            Err(DecodeError::TrailingBytes { offset: self.offset(), count: self.rest.len() })
        }
    }
}

/// Writers, one per field kind, named like the [`Reader`] methods.
///
/// A field longer than its length prefix can express is a caller bug (the
/// client checks its inputs against [`Limits`] first) and panics.
pub(crate) mod put {
    use super::*;

    pub(crate) fn u16<S: Sink>(out: &mut S, v: &u16) {
        out.put(&v.to_be_bytes());
    }
    pub(crate) fn u32<S: Sink>(out: &mut S, v: &u32) {
        out.put(&v.to_be_bytes());
    }
    pub(crate) fn u64<S: Sink>(out: &mut S, v: &u64) {
        out.put(&v.to_be_bytes());
    }
    fn short<S: Sink>(out: &mut S, bytes: &[u8]) {
        out.put(&u16::try_from(bytes.len()).expect("field longer than a u16 prefix allows").to_be_bytes());
        out.put(bytes);
    }
    fn long<S: Sink>(out: &mut S, bytes: &[u8]) {
        out.put(&u32::try_from(bytes.len()).expect("field longer than a u32 prefix allows").to_be_bytes());
        out.put(bytes);
    }
    pub(crate) fn name<S: Sink>(out: &mut S, v: &str) {
        short(out, v.as_bytes());
    }
    pub(crate) fn text<S: Sink>(out: &mut S, v: &str) {
        short(out, v.as_bytes());
    }
    pub(crate) fn long_text<S: Sink>(out: &mut S, v: &str) {
        long(out, v.as_bytes());
    }
    pub(crate) fn blob<S: Sink>(out: &mut S, v: &Bytes) {
        long(out, v);
    }
    pub(crate) fn names<S: Sink>(out: &mut S, v: &[String]) {
        out.put(&u16::try_from(v.len()).expect("list longer than a u16 count allows").to_be_bytes());
        for n in v {
            name(out, n);
        }
    }
    pub(crate) fn entries<S: Sink>(out: &mut S, v: &[HistoryEntry]) {
        out.put(&u16::try_from(v.len()).expect("list longer than a u16 count allows").to_be_bytes());
        for m in v {
            m.encode(out);
        }
    }
}

/// Where the encoders write: a `BytesMut` (the public [`Message::encode`](super::Message::encode))
/// or a `Vec<u8>` (the server's per-session output, whose small appends the compiler
/// turns into plain stores: `BytesMut::put_slice` stays a call and a `memcpy` per field).
pub(crate) trait Sink {
    /// Appends `bytes`.
    fn put(&mut self, bytes: &[u8]);
    /// Bytes written so far.
    fn written(&self) -> usize;
    /// Overwrites the bytes at `at` (already written) with `bytes`.
    fn patch(&mut self, at: usize, bytes: &[u8]);
}

impl Sink for BytesMut {
    #[inline]
    fn put(&mut self, bytes: &[u8]) {
        self.put_slice(bytes);
    }
    #[inline]
    fn written(&self) -> usize {
        self.len()
    }
    #[inline]
    fn patch(&mut self, at: usize, bytes: &[u8]) {
        self[at..at + bytes.len()].copy_from_slice(bytes);
    }
}

impl Sink for Vec<u8> {
    #[inline]
    fn put(&mut self, bytes: &[u8]) {
        self.extend_from_slice(bytes);
    }
    #[inline]
    fn written(&self) -> usize {
        self.len()
    }
    #[inline]
    fn patch(&mut self, at: usize, bytes: &[u8]) {
        self[at..at + bytes.len()].copy_from_slice(bytes);
    }
}

/// A borrowed view of one body field, for printers (`confab inspect`,
/// transcripts) that walk a message without knowing its type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FieldValue<'a> {
    /// An integer field.
    Int(u64),
    /// A UTF-8 field (name or text).
    Str(&'a str),
    /// An opaque blob.
    Bytes(&'a [u8]),
    /// A list of names.
    Names(&'a [String]),
    /// A list of history entries.
    Entries(&'a [HistoryEntry]),
}

impl<'a> From<&'a u16> for FieldValue<'a> {
    fn from(v: &'a u16) -> Self {
        FieldValue::Int(u64::from(*v))
    }
}
impl<'a> From<&'a u32> for FieldValue<'a> {
    fn from(v: &'a u32) -> Self {
        FieldValue::Int(u64::from(*v))
    }
}
impl<'a> From<&'a u64> for FieldValue<'a> {
    fn from(v: &'a u64) -> Self {
        FieldValue::Int(*v)
    }
}
impl<'a> From<&'a String> for FieldValue<'a> {
    fn from(v: &'a String) -> Self {
        FieldValue::Str(v)
    }
}
impl<'a> From<&'a Bytes> for FieldValue<'a> {
    fn from(v: &'a Bytes) -> Self {
        FieldValue::Bytes(v)
    }
}
impl<'a> From<&'a Vec<String>> for FieldValue<'a> {
    fn from(v: &'a Vec<String>) -> Self {
        FieldValue::Names(v)
    }
}
impl<'a> From<&'a Vec<HistoryEntry>> for FieldValue<'a> {
    fn from(v: &'a Vec<HistoryEntry>) -> Self {
        FieldValue::Entries(v)
    }
}
