// Fuzz body: confab_proto::fuzzing::switchboard (proto/src/fuzzing/switchboard.rs).
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| confab_proto::fuzzing::switchboard(data));
