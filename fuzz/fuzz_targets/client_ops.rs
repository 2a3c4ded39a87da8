// Fuzz body: confab_proto::fuzzing::client_ops (proto/src/fuzzing.rs).
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| confab_proto::fuzzing::client_ops(data));
