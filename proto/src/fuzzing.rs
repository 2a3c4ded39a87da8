//! Fuzz bodies, shared by the cargo-fuzz targets (`fuzz/`) and by the stable
//! test that replays the committed corpus. Built with `cfg(fuzzing)` (cargo
//! fuzz) or the `fuzzing` feature.
//!
//! Each body panics only on a real bug: a broken round trip or a decoder that
//! depends on chunking.

use bytes::{Bytes, BytesMut};

use crate::{Frame, FrameDecoder, Limits, Message};

/// Small limits so the fuzzer reaches every limit branch quickly.
fn fuzz_limits() -> Limits {
    Limits {
        max_auth: 256,
        max_data: 64 * 1024,
        max_name: 64,
        max_text: 1024,
        max_items: 64,
    }
}

/// Decodes `data` as a frame stream three ways (all at once, one byte at a
/// time, and in chunks whose sizes come from the first byte); all must give
/// the same frames and the same error. Every frame must re-encode to exactly
/// the bytes it came from, and every decodable message must re-encode to
/// exactly its frame.
pub fn frame_decode(data: &[u8]) {
    let limits = fuzz_limits();
    let whole = decode_stream(std::iter::once(data), &limits);
    let bytewise = decode_stream(data.chunks(1), &limits);
    assert_eq!(whole, bytewise, "one-byte chunking changed the result");
    let step = usize::from(data.first().copied().unwrap_or(1)).max(1);
    let chunked = decode_stream(data.chunks(step), &limits);
    assert_eq!(whole, chunked, "chunking by {step} changed the result");

    let (frames, _) = whole;
    let mut offset = 0;
    for frame in &frames {
        let bytes = frame.to_bytes();
        assert_eq!(
            &bytes[..],
            &data[offset..offset + bytes.len()],
            "frame did not re-encode identically"
        );
        offset += bytes.len();
        if let Ok(message) = Message::decode(frame, &limits) {
            assert_eq!(
                message.to_bytes(&frame.auth),
                bytes,
                "message did not re-encode identically"
            );
        }
    }
}

/// Decodes `data` as the data part of every frame type; whatever decodes
/// must re-encode to the same bytes and decode again to the same value.
pub fn message_decode(data: &[u8]) {
    let limits = fuzz_limits();
    // The frame layer refuses a data part above the limit before any message
    // decoding; such inputs cannot occur here.
    if data.len() as u64 > limits.max_data {
        return;
    }
    let data = Bytes::copy_from_slice(data);
    for frame_type in crate::FrameType::ALL {
        let frame = Frame {
            frame_type,
            auth: Bytes::new(),
            data: data.clone(),
        };
        if let Ok(message) = Message::decode(&frame, &limits) {
            let mut out = BytesMut::new();
            message.encode(&[], &mut out);
            let again = Frame::parse(&out.freeze(), &limits)
                .expect("re-encoded frame parses")
                .expect("whole frame");
            assert_eq!(again.0.data, data, "message did not re-encode identically");
            assert_eq!(Message::decode(&again.0, &limits).as_ref(), Ok(&message));
        }
    }
}

type StreamResult = (Vec<Frame>, Option<crate::DecodeError>);

fn decode_stream<'a>(chunks: impl Iterator<Item = &'a [u8]>, limits: &Limits) -> StreamResult {
    let mut decoder = FrameDecoder::new(*limits);
    let mut frames = Vec::new();
    for chunk in chunks {
        decoder.push(chunk);
        loop {
            match decoder.next_frame() {
                Ok(Some(frame)) => frames.push(frame),
                Ok(None) => break,
                Err(err) => return (frames, Some(err)),
            }
        }
    }
    (frames, None)
}
