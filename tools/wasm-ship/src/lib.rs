//! Post-link pass that makes a WASI module safe and small enough for Bacalhau.
//!
//! 1. Float `select` → `if/else`. wazero v1.12.0 (the version Bacalhau v1.9.3 pins) lowers an
//!    f32/f64/v128 `select` on amd64 to a move into a temporary plus a conditional move, and
//!    declares the temporary to its register allocator as written but not read
//!    (`xmmCMov: useKindOp1`, wazero issue #2534, fixed upstream by PR #2535 after v1.12.0).
//!    Under register pressure the allocator hands the conditional move a different register, and
//!    the select returns garbage whenever its condition is false. Bacalhau's
//!    `WithCloseOnContextDone(true)` puts a call at every loop header, which spills loop-invariant
//!    floats and triggers it: sd.wasm rendered black pictures. Integer selects are modelled
//!    correctly and stay as they are.
//! 2. The `name` section replaced by one holding only the module name: Bacalhau's tracing
//!    wrapper rejects modules without one, never reads function names (≈1.7 MB of sd.wasm), and
//!    refuses local modules over 10 MB.

use wasmparser::{
    FuncValidatorAllocations, Operator, Parser, Payload, ValType, Validator, WasmFeatures,
};

pub type Error = Box<dyn std::error::Error + Send + Sync>;

#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Report {
    /// `select`s on f32/f64/v128 operands rewritten (or, for `inspect`, found).
    pub float_selects: usize,
    /// Bytes of the original `name` section (0 if it had none).
    pub name_section_bytes: usize,
}

/// Rewrites `module` as described in the crate docs; `module_name` goes into the new `name`
/// section.
pub fn ship(module: &[u8], module_name: &str) -> Result<(Vec<u8>, Report), Error> {
    transform(module, Some(module_name))
}

/// Counts what [`ship`] would change, without changing anything.
pub fn inspect(module: &[u8]) -> Result<Report, Error> {
    transform(module, None).map(|(_, report)| report)
}

fn transform(module: &[u8], rewrite_as: Option<&str>) -> Result<(Vec<u8>, Report), Error> {
    let mut validator = Validator::new_with_features(WasmFeatures::all());
    let mut report = Report::default();
    let mut out = module[..8].to_vec();
    let mut code: Option<Vec<Vec<u8>>> = None;
    let mut allocs = FuncValidatorAllocations::default();
    for payload in Parser::new(0).parse_all(module) {
        let payload = payload?;
        let valid = validator.payload(&payload)?;
        match &payload {
            Payload::CodeSectionStart { .. } => {
                code = Some(Vec::new());
                continue;
            }
            Payload::CodeSectionEntry(body) => {
                let wasmparser::ValidPayload::Func(func, _) = valid else {
                    return Err("code entry without a function to validate".into());
                };
                let mut func = func.into_validator(std::mem::take(&mut allocs));
                let new_body = rewrite_body(module, body, &mut func, &mut report)?;
                allocs = func.into_allocations();
                code.as_mut().ok_or("code entry outside a code section")?.push(new_body);
                continue;
            }
            _ => {}
        }
        // The first payload after the code entries: the rewritten code section goes out first.
        if let Some(bodies) = code.take() {
            push_section(&mut out, 10, &vec_of(&bodies));
        }
        match &payload {
            Payload::CustomSection(c) if c.name() == "name" => {
                report.name_section_bytes = (c.range().end - c.range().start) as usize;
            }
            _ => {
                if let Some((id, range)) = payload.as_section() {
                    push_section(&mut out, id, &module[range.start as usize..range.end as usize]);
                }
            }
        }
    }
    if let Some(name) = rewrite_as {
        // Subsection 0 (module name).
        let mut sub = Vec::new();
        leb(&mut sub, name.len() as u64);
        sub.extend_from_slice(name.as_bytes());
        let mut body = Vec::new();
        leb(&mut body, 4);
        body.extend_from_slice(b"name");
        body.push(0);
        leb(&mut body, sub.len() as u64);
        body.extend_from_slice(&sub);
        push_section(&mut out, 0, &body);
    }
    Ok((out, report))
}

/// The function body with every float select replaced by
/// `local.set c; local.set b; local.set a; local.get c; if (result T) local.get a else local.get b end`
/// over three fresh locals per operand type.
fn rewrite_body(
    module: &[u8],
    body: &wasmparser::FunctionBody,
    func: &mut wasmparser::FuncValidator<wasmparser::ValidatorResources>,
    report: &mut Report,
) -> Result<Vec<u8>, Error> {
    let mut reader = body.get_binary_reader();
    func.read_locals(&mut reader)?;
    let mut locals_reader = body.get_locals_reader()?;
    let mut groups: Vec<(u32, ValType)> = Vec::new();
    for _ in 0..locals_reader.get_count() {
        groups.push(locals_reader.read()?);
    }
    let first_new_local = func.len_locals();
    // Fresh locals: one i32 condition, then (a, b) per float type as first needed.
    let cond_local = first_new_local;
    let mut pair_locals: Vec<(ValType, u32)> = Vec::new();
    let mut ops = Vec::new();
    let mut ops_reader = body.get_operators_reader()?;
    while !ops_reader.eof() {
        let (op, offset) = ops_reader.read_with_offset()?;
        let end = ops_reader.original_position();
        let float_type = match &op {
            Operator::Select => match func.get_operand_type(1) {
                Some(Some(t @ (ValType::F32 | ValType::F64 | ValType::V128))) => Some(t),
                _ => None,
            },
            Operator::TypedSelect { ty: t @ (ValType::F32 | ValType::F64 | ValType::V128) } => {
                Some(*t)
            }
            _ => None,
        };
        func.op(offset as u64, &op)?;
        match float_type {
            None => ops.extend_from_slice(&module[offset as usize..end as usize]),
            Some(t) => {
                report.float_selects += 1;
                let a = match pair_locals.iter().find(|(pt, _)| *pt == t) {
                    Some(&(_, a)) => a,
                    None => {
                        let a = first_new_local + 1 + 2 * pair_locals.len() as u32;
                        pair_locals.push((t, a));
                        a
                    }
                };
                let b = a + 1;
                for (opcode, index) in [(0x21, cond_local), (0x21, b), (0x21, a), (0x20, cond_local)] {
                    ops.push(opcode);
                    leb(&mut ops, index as u64);
                }
                ops.push(0x04); // if
                push_valtype(&mut ops, t);
                ops.push(0x20);
                leb(&mut ops, a as u64);
                ops.push(0x05); // else
                ops.push(0x20);
                leb(&mut ops, b as u64);
                ops.push(0x0b); // end
            }
        }
    }
    ops_reader.finish()?;
    if !pair_locals.is_empty() {
        groups.push((1, ValType::I32));
        for (t, _) in &pair_locals {
            groups.push((2, *t));
        }
    }
    let mut out = Vec::new();
    leb(&mut out, groups.len() as u64);
    for (count, t) in groups {
        leb(&mut out, count as u64);
        push_valtype(&mut out, t);
    }
    out.extend_from_slice(&ops);
    Ok(out)
}

fn push_valtype(out: &mut Vec<u8>, t: ValType) {
    out.push(match t {
        ValType::I32 => 0x7f,
        ValType::I64 => 0x7e,
        ValType::F32 => 0x7d,
        ValType::F64 => 0x7c,
        ValType::V128 => 0x7b,
        ValType::Ref(r) if r.is_func_ref() && r.is_nullable() => 0x70,
        ValType::Ref(r) if r.is_extern_ref() && r.is_nullable() => 0x6f,
        ValType::Ref(r) => panic!("reference type {r:?} in a local: not produced by rustc for wasm32-wasip1"),
    });
}

fn vec_of(bodies: &[Vec<u8>]) -> Vec<u8> {
    let mut out = Vec::new();
    leb(&mut out, bodies.len() as u64);
    for body in bodies {
        leb(&mut out, body.len() as u64);
        out.extend_from_slice(body);
    }
    out
}

fn push_section(out: &mut Vec<u8>, id: u8, body: &[u8]) {
    out.push(id);
    leb(out, body.len() as u64);
    out.extend_from_slice(body);
}

fn leb(out: &mut Vec<u8>, mut n: u64) {
    loop {
        let byte = (n & 0x7f) as u8;
        n >>= 7;
        out.push(byte | if n != 0 { 0x80 } else { 0 });
        if n == 0 {
            return;
        }
    }
}
