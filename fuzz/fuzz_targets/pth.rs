#![no_main]
libfuzzer_sys::fuzz_target!(|bytes: &[u8]| nntools_tests::fuzzing::pth(bytes));
