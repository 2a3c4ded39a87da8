// Fuzz body: confab_proto::fuzzing::jwt (proto/src/fuzzing.rs).
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| confab_proto::fuzzing::jwt(data));
