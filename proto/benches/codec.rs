//! Codec throughput (issue 2): decode and encode of one frame at several
//! payload sizes, and a batch of small frames.
//!
//! Run with `cargo bench -p confab-proto --bench codec`; results and the
//! machine they were taken on are in `docs/BENCHMARKS.md`.
//!
//! Every benchmark frame is an authenticated `send_mp` request (auth part =
//! the example access token, 38 bytes) whose `sealed` blob is the payload:
//! 64 B, 1 KiB, 64 KiB or 1 MiB. The frame data part is the payload plus 25
//! bytes of fixed fields, so the limits are the defaults with `max_data`
//! raised to 2 MiB to admit the 1 MiB payload.
//!
//! Decode, per frame size (`decode/<method>/<payload>`):
//!
//! * `frame_parse`: [`Frame::parse`] on a [`Bytes`] holding the frame. Zero
//!   copy: the frame's parts are slices of the input.
//! * `frame_parse+message_decode`: the same, then [`Message::decode`]. The
//!   blob is a zero-copy slice too (only the short `peer` name is copied
//!   into a `String`), so neither time should grow with the payload.
//! * `frame_decoder`: the streaming [`FrameDecoder`] (one per connection,
//!   reused across iterations) fed the whole frame in one `push`, then
//!   `next_frame`. `push` **copies** the bytes into the decoder's buffer, as
//!   it must for bytes read from a socket into a caller's buffer, so this one
//!   grows with the payload (a memcpy).
//!
//! `decode_batch/<method>`: a buffer of 1000 back-to-back frames with 64-byte
//! payloads (the 10 M frames/s target), decoded by each method above.
//!
//! Encode, per size (`encode/<method>/<payload>`), into one [`BytesMut`]
//! reused across iterations (`clear()` keeps its capacity, so there is no
//! allocation in the loop):
//!
//! * `message_encode`: [`Message::encode`] of the `send_mp` request.
//! * `frame_encode`: [`Frame::encode`] of the raw frame layer (a frame whose
//!   data part is the payload, no message fields).
//!
//! All benchmarks use `Throughput::Elements` (frames), so criterion reports
//! frames per second.

use std::hint::black_box;

use bytes::{Buf, Bytes, BytesMut};
use confab_proto::examples::{ACCESS_TOKEN, TIMESTAMP_MS};
use confab_proto::wire::{Frame, FrameDecoder, FrameType, Limits, Message, Request, SendMp};
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};

/// Payload sizes: 64 B, 1 KiB, 64 KiB, 1 MiB.
const SIZES: [(usize, &str); 4] = [(64, "64B"), (1024, "1KiB"), (64 * 1024, "64KiB"), (1024 * 1024, "1MiB")];

/// Frames in the batch benchmark.
const BATCH: usize = 1000;

/// The default limits, with room for a 1 MiB payload plus the message fields.
const LIMITS: Limits = Limits { max_data: 2 * 1024 * 1024, ..Limits::DEFAULT };

/// A `send_mp` request carrying `size` bytes of sealed payload.
fn send_mp(size: usize) -> Message {
    let sealed: Vec<u8> = (0..size).map(|i| i as u8).collect();
    Message::Request(Request {
        request_id: 9,
        timestamp_ms: TIMESTAMP_MS,
        body: SendMp { peer: "bob".into(), sealed: Bytes::from(sealed) }.into(),
    })
}

/// `message` encoded as one authenticated frame.
fn frame_bytes(message: &Message) -> Bytes {
    message.to_bytes(ACCESS_TOKEN.as_bytes())
}

fn decode(c: &mut Criterion) {
    let mut group = c.benchmark_group("decode");
    group.throughput(Throughput::Elements(1));
    for (size, label) in SIZES {
        let wire = frame_bytes(&send_mp(size));

        group.bench_with_input(BenchmarkId::new("frame_parse", label), &wire, |b, wire| {
            b.iter(|| Frame::parse(black_box(wire), &LIMITS).unwrap().unwrap());
        });

        group.bench_with_input(BenchmarkId::new("frame_parse+message_decode", label), &wire, |b, wire| {
            b.iter(|| {
                let (frame, _) = Frame::parse(black_box(wire), &LIMITS).unwrap().unwrap();
                Message::decode(&frame, &LIMITS).unwrap()
            });
        });

        group.bench_with_input(BenchmarkId::new("frame_decoder", label), &wire, |b, wire| {
            let mut decoder = FrameDecoder::new(LIMITS);
            b.iter(|| {
                decoder.push(black_box(wire));
                decoder.next_frame().unwrap().unwrap()
            });
        });
    }
    group.finish();
}

fn decode_batch(c: &mut Criterion) {
    let one = frame_bytes(&send_mp(64));
    let mut buf = BytesMut::with_capacity(one.len() * BATCH);
    for _ in 0..BATCH {
        buf.extend_from_slice(&one);
    }
    let wire = buf.freeze();

    let mut group = c.benchmark_group("decode_batch");
    group.throughput(Throughput::Elements(BATCH as u64));

    group.bench_with_input(BenchmarkId::new("frame_parse", "1000x64B"), &wire, |b, wire| {
        b.iter(|| {
            let mut rest = black_box(wire).clone();
            let mut n = 0;
            while let Some((frame, len)) = Frame::parse(&rest, &LIMITS).unwrap() {
                black_box(frame);
                rest.advance(len);
                n += 1;
            }
            assert_eq!(n, BATCH);
        });
    });

    group.bench_with_input(BenchmarkId::new("frame_parse+message_decode", "1000x64B"), &wire, |b, wire| {
        b.iter(|| {
            let mut rest = black_box(wire).clone();
            let mut n = 0;
            while let Some((frame, len)) = Frame::parse(&rest, &LIMITS).unwrap() {
                black_box(Message::decode(&frame, &LIMITS).unwrap());
                rest.advance(len);
                n += 1;
            }
            assert_eq!(n, BATCH);
        });
    });

    group.bench_with_input(BenchmarkId::new("frame_decoder", "1000x64B"), &wire, |b, wire| {
        let mut decoder = FrameDecoder::new(LIMITS);
        b.iter(|| {
            decoder.push(black_box(wire));
            let mut n = 0;
            while let Some(frame) = decoder.next_frame().unwrap() {
                black_box(frame);
                n += 1;
            }
            assert_eq!(n, BATCH);
        });
    });

    group.finish();
}

fn encode(c: &mut Criterion) {
    let mut group = c.benchmark_group("encode");
    group.throughput(Throughput::Elements(1));
    for (size, label) in SIZES {
        let message = send_mp(size);
        let mut out = BytesMut::new();

        group.bench_with_input(BenchmarkId::new("message_encode", label), &message, |b, message| {
            b.iter(|| {
                out.clear();
                black_box(message).encode(ACCESS_TOKEN.as_bytes(), &mut out);
                black_box(&out);
            });
        });

        let frame = Frame {
            frame_type: FrameType::Request,
            auth: Bytes::from_static(ACCESS_TOKEN.as_bytes()),
            data: Bytes::from(vec![0xa5; size]),
        };
        group.bench_with_input(BenchmarkId::new("frame_encode", label), &frame, |b, frame| {
            b.iter(|| {
                out.clear();
                black_box(frame).encode(&mut out);
                black_box(&out);
            });
        });
    }
    group.finish();
}

criterion_group!(benches, decode, decode_batch, encode);
criterion_main!(benches);
