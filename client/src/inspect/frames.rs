//! Cutting an input into frames and decoding each one.

use confab_proto::wire::{Frame, FrameDecoder, HEADER_LEN, Limits, Message};

use super::InspectError;

/// One decoded frame of the input.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InspectedFrame {
    /// Byte offset of the frame's first byte in the input.
    pub offset: usize,
    /// The version byte.
    pub version: u8,
    /// The frame as cut by the decoder.
    pub frame: Frame,
    /// Its decoded data part.
    pub message: Message,
}

/// The outcome of decoding an input: the good frames, then the error that
/// stopped decoding, if any.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Inspection {
    /// Every frame decoded before the error (all of them when there is none).
    pub frames: Vec<InspectedFrame>,
    /// Why decoding stopped before the end of the input.
    pub error: Option<InspectError>,
}

/// Decodes `input` as a stream of frames under `limits`.
///
/// Stops at the first frame that fails to decode, and reports an input that
/// ends inside a frame (or holds no bytes at all) as an error too.
#[must_use]
pub fn inspect_bytes(input: &[u8], limits: Limits) -> Inspection {
    let mut frames = Vec::new();
    if input.is_empty() {
        return Inspection { frames, error: Some(InspectError::Empty) };
    }
    let mut decoder = FrameDecoder::new(limits);
    decoder.push(input);
    let mut frame_start = 0;
    let error = loop {
        let index = frames.len() + 1;
        let decode_error = |error| InspectError::Decode { error, frame: index, frame_start };
        match decoder.next_frame() {
            Ok(Some(frame)) => match Message::decode(&frame, decoder.limits()) {
                Ok(message) => {
                    let len = HEADER_LEN + frame.auth.len() + frame.data.len();
                    frames.push(InspectedFrame { offset: frame_start, version: input[frame_start], frame, message });
                    frame_start += len;
                }
                Err(e) => break Some(decode_error(e)),
            },
            Ok(None) if decoder.buffered() == 0 => break None,
            Ok(None) => {
                break Some(InspectError::Incomplete {
                    frame: index,
                    frame_start,
                    input_len: input.len(),
                    needed: decoder.needed(),
                });
            }
            Err(e) => break Some(decode_error(e)),
        }
    };
    Inspection { frames, error }
}
