//! End-to-end crypto (issue 5): sealing throughput and the cost of an MP
//! handshake, on one core.
//!
//! `cargo bench -p confab-proto --bench e2e`; results, with `openssl speed`
//! beside them, are in `docs/BENCHMARKS.md`.
//!
//! * `seal/<size>`: [`Sealer::seal`] of a 64 B, 1 KiB or 64 KiB message in
//!   an MP conversation (AES-128-CTR + HMAC-SHA256, allocation of the blob
//!   included).
//! * `open/<size>`: [`Opener::open`] of that blob (epoch-key derivation,
//!   replay-window check, tag in constant time, decryption); each iteration
//!   gets a fresh opener (32 bytes of stream key copied) so the same blob is
//!   never a replay.
//! * `handshake/full`: a whole MP handshake with the fixture identity keys:
//!   A creates its ephemeral key and signs it, B verifies, creates and signs
//!   its own and derives, A verifies and derives. Two RSA-2048 PSS
//!   signatures, two verifications, two P-256 key generations, two ECDHs.
//! * `handshake/{request,verify_request,accept,complete}`: the four steps.
//! * `room_keys/default`: [`RoomKeys::derive`] with a new room's default
//!   argon2id costs, m = 64 MiB, t = 3.
//! * `primitive/<name>/<size>`: the RustCrypto primitives alone, to set
//!   beside `openssl speed` (AES-128-CTR in place, HMAC-SHA256, SHA-256 at
//!   16 B to 64 KiB) and the public-key steps of a handshake (RSA-2048 PSS
//!   sign and verify, P-256 key generation and ECDH).

#![allow(missing_docs)]

use std::hint::black_box;
use std::time::Duration;

use confab_proto::e2e::fixtures::{ALICE_PKCS8, BOB_PKCS8};
use confab_proto::e2e::room::ROOM_PARAMS;
use confab_proto::e2e::{
    ConversationId, IdentityKey, MpOffer, MpRequest, Opener, RoomDescriptor, RoomKeys, Sealer, StreamKey,
};
use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use rand::SeedableRng;
use rand::rngs::StdRng;

const SIZES: [(usize, &str); 3] = [(64, "64B"), (1024, "1KiB"), (64 * 1024, "64KiB")];

fn keys() -> StreamKey {
    StreamKey::from_bytes([1; 32])
}

const T: u64 = 1_700_000_000_000;

fn seal_open(c: &mut Criterion) {
    let conv = ConversationId::mp("alice", "bob");
    let mut group = c.benchmark_group("seal");
    for (size, name) in SIZES {
        let plaintext = vec![0x5a; size];
        group.throughput(Throughput::Bytes(size as u64));
        let mut sealer = Sealer::new(&keys(), &mut StdRng::from_seed([1; 32]));
        group.bench_function(name, |b| b.iter(|| sealer.seal(&conv, "alice", T, black_box(&plaintext)).unwrap()));
    }
    group.finish();

    let mut group = c.benchmark_group("open");
    for (size, name) in SIZES {
        let blob =
            Sealer::new(&keys(), &mut StdRng::from_seed([1; 32])).seal(&conv, "alice", T, &vec![0x5a; size]).unwrap();
        group.throughput(Throughput::Bytes(size as u64));
        group.bench_function(name, |b| {
            b.iter_batched_ref(
                || Opener::new(keys()),
                |opener| opener.open(&conv, "alice", black_box(&blob)).unwrap(),
                BatchSize::SmallInput,
            )
        });
    }
    group.finish();
}

fn handshake(c: &mut Criterion) {
    let alice = IdentityKey::from_pkcs8_der(ALICE_PKCS8).unwrap();
    let bob = IdentityKey::from_pkcs8_der(BOB_PKCS8).unwrap();
    let (alice_pub, bob_pub) = (alice.public().clone(), bob.public().clone());
    let mut rng = StdRng::from_seed([9; 32]);
    let mut group = c.benchmark_group("handshake");
    group.bench_function("full", |b| {
        b.iter(|| {
            let (pending, request) = MpRequest::new(&mut rng, &alice, "alice", "bob").unwrap();
            let offer = MpOffer::verify("alice", &alice_pub, "bob", &request).unwrap();
            let (bob_session, accept) = offer.accept(&mut rng, &bob).unwrap();
            let alice_session = pending.complete(&mut rng, &bob_pub, &accept).unwrap();
            (alice_session, bob_session)
        })
    });
    group.bench_function("request", |b| b.iter(|| MpRequest::new(&mut rng, &alice, "alice", "bob").unwrap()));
    let (pending, request) = MpRequest::new(&mut rng, &alice, "alice", "bob").unwrap();
    group.bench_function("verify_request", |b| {
        b.iter(|| MpOffer::verify("alice", &alice_pub, "bob", black_box(&request)).unwrap())
    });
    let offer = MpOffer::verify("alice", &alice_pub, "bob", &request).unwrap();
    group.bench_function("accept", |b| b.iter(|| offer.accept(&mut rng, &bob).unwrap()));
    let (_, accept) = offer.accept(&mut rng, &bob).unwrap();
    group.bench_function("complete", |b| b.iter(|| pending.complete(&mut rng, &bob_pub, black_box(&accept)).unwrap()));
    group.finish();
}

fn primitives(c: &mut Criterion) {
    use aes::cipher::{KeyIvInit, StreamCipher};
    use hmac::{KeyInit, Mac};
    use p256::elliptic_curve::Generate;
    use sha2::Digest;

    let mut group = c.benchmark_group("primitive");
    for (size, name) in [(16, "16B"), (64, "64B"), (1024, "1KiB"), (16 * 1024, "16KiB"), (64 * 1024, "64KiB")] {
        let mut buf = vec![0x5a; size];
        group.throughput(Throughput::Bytes(size as u64));
        group.bench_function(format!("aes128ctr/{name}"), |b| {
            b.iter(|| {
                let mut cipher = ctr::Ctr128BE::<aes::Aes128>::new(&[1; 16].into(), &[0; 16].into());
                cipher.apply_keystream(black_box(&mut buf));
            })
        });
        group.bench_function(format!("hmac_sha256/{name}"), |b| {
            b.iter(|| {
                let mut mac = <hmac::Hmac<sha2::Sha256> as KeyInit>::new_from_slice(&[2; 32]).unwrap();
                mac.update(black_box(&buf));
                mac.finalize().into_bytes()
            })
        });
        group.bench_function(format!("sha256/{name}"), |b| b.iter(|| sha2::Sha256::digest(black_box(&buf))));
    }
    group.throughput(Throughput::Elements(1));
    let alice = IdentityKey::from_pkcs8_der(ALICE_PKCS8).unwrap();
    let mut rng = StdRng::from_seed([5; 32]);
    let signature = alice.sign(&mut rng, b"message").unwrap();
    group.bench_function("rsa2048_pss_sign", |b| b.iter(|| alice.sign(&mut rng, black_box(b"message")).unwrap()));
    group.bench_function("rsa2048_pss_verify", |b| {
        b.iter(|| alice.public().verify(black_box(b"message"), &signature).unwrap())
    });
    group.bench_function("p256_keygen", |b| b.iter(|| p256::SecretKey::generate_from_rng(&mut rng).public_key()));
    let secret = p256::SecretKey::generate_from_rng(&mut rng);
    let peer = p256::SecretKey::generate_from_rng(&mut rng).public_key();
    group.bench_function("p256_ecdh", |b| b.iter(|| *secret.diffie_hellman(black_box(&peer)).raw_secret_bytes()));
    group.finish();
}

fn room_keys(c: &mut Criterion) {
    let mut group = c.benchmark_group("room_keys");
    group.sample_size(10);
    let descriptor = RoomDescriptor::from_parts([7; 16], ROOM_PARAMS);
    group.bench_function("default", |b| {
        b.iter(|| RoomKeys::derive("room11", b"pass2934 of room11", &descriptor).unwrap())
    });
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().warm_up_time(Duration::from_secs(1)).measurement_time(Duration::from_secs(3));
    targets = seal_open, handshake, room_keys, primitives
}
criterion_main!(benches);
