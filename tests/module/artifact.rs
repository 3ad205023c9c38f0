//! The shipped module itself: what Bacalhau's wazero accepts (WASI preview1 imports only, no
//! threads / relaxed-simd / memory64 / tail calls), a `name` section, SIMD128, and ≤ 10 MB.

use crate::common;

struct Module {
    size: usize,
    sections: Vec<(u8, Option<String>, Vec<u8>)>,
}

fn leb(data: &[u8], at: &mut usize) -> u64 {
    let (mut value, mut shift) = (0u64, 0);
    loop {
        let b = data[*at];
        *at += 1;
        value |= ((b & 0x7f) as u64) << shift;
        shift += 7;
        if b < 0x80 {
            return value;
        }
    }
}

fn name(data: &[u8], at: &mut usize) -> String {
    let len = leb(data, at) as usize;
    let s = String::from_utf8_lossy(&data[*at..*at + len]).into_owned();
    *at += len;
    s
}

fn module() -> Module {
    let path = common::sd_wasm_path();
    let data = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}; build it with scripts/build-wasm.sh", path.display()));
    assert_eq!(&data[..8], b"\0asm\x01\0\0\0", "not a core wasm module");
    let mut sections = Vec::new();
    let mut at = 8;
    while at < data.len() {
        let id = data[at];
        at += 1;
        let size = leb(&data, &mut at) as usize;
        let mut body_at = at;
        let custom = (id == 0).then(|| name(&data, &mut body_at));
        sections.push((id, custom, data[body_at..at + size].to_vec()));
        at += size;
    }
    Module { size: data.len(), sections }
}

#[test]
fn fits_bacalhau_local_module_limit() {
    let m = module();
    assert!(m.size <= 10_000_000, "sd.wasm is {} bytes; Bacalhau refuses local modules over 10 MB", m.size);
}

#[test]
fn keeps_a_name_section() {
    let m = module();
    assert!(m.sections.iter().any(|(_, n, _)| n.as_deref() == Some("name")), "no name section: Bacalhau's tracing rejects the module");
}

#[test]
fn imports_only_wasi_preview1() {
    let m = module();
    let (_, _, body) = m.sections.iter().find(|(id, _, _)| *id == 2).expect("an import section");
    let mut at = 0;
    let count = leb(body, &mut at);
    for _ in 0..count {
        let module = name(body, &mut at);
        let field = name(body, &mut at);
        assert_eq!(module, "wasi_snapshot_preview1", "import {module}.{field}");
        let kind = body[at];
        at += 1;
        match kind {
            0 => {
                leb(body, &mut at);
            }
            2 => panic!("the module imports its memory ({field}): shared memory needs threads"),
            _ => panic!("unexpected import kind {kind} for {field}"),
        }
    }
}

#[test]
fn memory_is_plain_32_bit_and_unshared() {
    let m = module();
    let (_, _, body) = m.sections.iter().find(|(id, _, _)| *id == 5).expect("a memory section");
    let flags = body[1];
    assert_eq!(flags & 0x02, 0, "shared memory (threads) is not supported by wazero");
    assert_eq!(flags & 0x04, 0, "memory64 is not supported by wazero");
}

/// Bacalhau's wazero (v1.12.0) miscompiles float `select` on amd64 (wazero#2534; shown in
/// tests/platforms/wasi_runner.rs): scripts/build-wasm.sh rewrites them all with tools/wasm-ship.
#[test]
fn has_no_float_selects() {
    let path = common::sd_wasm_path();
    let report = wasm_ship::inspect(&std::fs::read(&path).unwrap()).unwrap();
    assert_eq!(report.float_selects, 0, "{}: float selects left; build it with scripts/build-wasm.sh", path.display());
}

#[test]
fn uses_simd128_and_nothing_wazero_lacks() {
    let m = module();
    let (_, _, body) = m.sections.iter().find(|(_, n, _)| n.as_deref() == Some("target_features")).expect("target_features section");
    let mut at = 0;
    let count = leb(body, &mut at);
    let mut features = Vec::new();
    for _ in 0..count {
        let prefix = body[at];
        at += 1;
        let feature = name(body, &mut at);
        if prefix == b'+' {
            features.push(feature);
        }
    }
    assert!(features.iter().any(|f| f == "simd128"), "built without SIMD128: {features:?}");
    // rustc lists extended-const among its default features; whether the module uses it is
    // checked on the constant expressions themselves (only_plain_constant_expressions).
    for missing_in_wazero in ["atomics", "shared-mem", "relaxed-simd", "memory64", "tail-call", "multimemory", "exception-handling", "gc"] {
        assert!(!features.iter().any(|f| f == missing_in_wazero), "uses {missing_in_wazero}, which wazero (Bacalhau) rejects: {features:?}");
    }
}

/// One constant expression: the opcodes up to `end`.
fn const_expr(data: &[u8], at: &mut usize) -> Vec<u8> {
    let mut ops = Vec::new();
    loop {
        let op = data[*at];
        *at += 1;
        match op {
            0x0b => return ops,
            0x41 | 0x42 | 0x23 => {
                leb(data, at);
            }
            0x43 => *at += 4,
            0x44 => *at += 8,
            _ => {}
        }
        ops.push(op);
    }
}

/// wazero without its experimental extended-const flag (Bacalhau's setting) accepts only a
/// single constant (or imported global.get) in global initializers and data offsets.
#[test]
fn only_plain_constant_expressions() {
    let m = module();
    let plain = |ops: &[u8]| ops.len() == 1 && [0x41, 0x42, 0x43, 0x44, 0x23].contains(&ops[0]);
    let (_, _, globals) = m.sections.iter().find(|(id, _, _)| *id == 6).expect("a global section");
    let mut at = 0;
    for _ in 0..leb(globals, &mut at) {
        assert!(globals[at] < 0x80 && [0x7f, 0x7e, 0x7d, 0x7c, 0x7b].contains(&globals[at]), "unexpected global type");
        at += 2;
        let ops = const_expr(globals, &mut at);
        assert!(plain(&ops), "global initializer uses extended-const: {ops:x?}");
    }
    let (_, _, data) = m.sections.iter().find(|(id, _, _)| *id == 11).expect("a data section");
    let mut at = 0;
    for _ in 0..leb(data, &mut at) {
        let flags = leb(data, &mut at);
        if flags == 2 {
            leb(data, &mut at);
        }
        if flags != 1 {
            let ops = const_expr(data, &mut at);
            assert!(plain(&ops), "data offset uses extended-const: {ops:x?}");
        }
        let len = leb(data, &mut at) as usize;
        at += len;
    }
}
