#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| sd_wasm_fuzz::prompt_syntax(data));
