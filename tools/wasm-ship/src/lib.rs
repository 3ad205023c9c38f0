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
//! 2. Hot innermost loops unrolled ([`sd_wasm_unroll`]). With `WithCloseOnContextDone(true)`
//!    wazero v1.12.0 leaves machine code for Go at every loop header to check whether the module
//!    was closed — tens of nanoseconds per iteration, which tripled a UNet evaluation. Unrolling
//!    runs that check once per several iterations.
//! 3. Loads of marked functions (hand-written kernels, [`MARKER`]) reshaped for wazero's
//!    amd64 backend: constant address adds folded into offsets, `v128.load32_splat` as
//!    `f32.load` + `f32x4.splat` ([`wazero_addressing`] says why); and a marked loop that walks
//!    pointers through loads run as whole passes, each step's loads at constant offsets from
//!    the pass's pointers, so that wazero checks bounds once per pointer per pass
//!    (`passes.rs`).
//! 4. The `name` section replaced by one holding only the module name: Bacalhau's tracing
//!    wrapper rejects modules without one, never reads function names (≈2 MB of sd.wasm), and
//!    refuses local modules over 10 MB.

mod passes;

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
    /// Innermost loops unrolled (see [`Unroll`]).
    pub loops_unrolled: usize,
    /// Loads of marked functions rewritten for wazero (see [`Unroll::marked_factor`]).
    pub loads_rewritten: usize,
    /// Of the unrolled loops, those also run as whole passes (see `passes.rs`).
    pub loops_in_passes: usize,
}

/// Rewrites `module` as described in the crate docs; `module_name` goes into the new `name`
/// section (an empty `module_name` keeps the original one, function names and all: for profiling).
pub fn ship(module: &[u8], module_name: &str, unroll: Unroll) -> Result<(Vec<u8>, Report), Error> {
    let (shipped, report) = transform(module, Some((module_name, unroll)))?;
    // The rewrite must leave a valid module; check before anyone runs it.
    Validator::new_with_features(WasmFeatures::all()).validate_all(&shipped)?;
    Ok((shipped, report))
}

/// Counts what [`ship`] would change, without changing anything.
pub fn inspect(module: &[u8]) -> Result<Report, Error> {
    transform(module, None).map(|(_, report)| report)
}

fn transform(module: &[u8], rewrite_as: Option<(&str, Unroll)>) -> Result<(Vec<u8>, Report), Error> {
    let unroll = rewrite_as.map_or(Unroll { factor: 1, marked_factor: 1, marked_passes: &[], max_body_bytes: 0, functions: &[], callees: &[] }, |(_, u)| u);
    let names = function_names(module)?;
    let mut func_index = imported_functions(module)?;
    let hot_callees = names.iter().filter(|(_, n)| unroll.callees.iter().any(|c| n.contains(c))).map(|(&i, _)| i).collect();
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
                let name = names.get(&func_index);
                let marked = name.is_some_and(|n| n.contains(MARKER));
                let choice = LoopChoice {
                    factor: if marked { unroll.marked_factor } else { unroll.factor },
                    max_body_bytes: unroll.max_body_bytes,
                    every_loop: marked || name.is_some_and(|name| unroll.functions.iter().any(|f| name.contains(f))),
                    hot_callees: &hot_callees,
                    addressing: marked && unroll.marked_factor > 1,
                    passes: if marked { unroll.marked_passes } else { &[] },
                };
                func_index += 1;
                let new_body = rewrite_body(module, body, &mut func, &choice, &mut report)?;
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
            Payload::CustomSection(c) if c.name() == "name" && rewrite_as.is_some_and(|(n, _)| !n.is_empty()) => {
                report.name_section_bytes = (c.range().end - c.range().start) as usize;
            }
            _ => {
                if let Some((id, range)) = payload.as_section() {
                    push_section(&mut out, id, &module[range.start as usize..range.end as usize]);
                }
            }
        }
    }
    if let Some((name, _)) = rewrite_as.filter(|(n, _)| !n.is_empty()) {
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

/// Function index → name, from the `name` section (empty without one).
fn function_names(module: &[u8]) -> Result<std::collections::HashMap<u32, String>, Error> {
    let mut names = std::collections::HashMap::new();
    for payload in Parser::new(0).parse_all(module) {
        if let Payload::CustomSection(c) = payload? {
            if let wasmparser::KnownCustom::Name(reader) = c.as_known() {
                for sub in reader {
                    if let wasmparser::Name::Function(map) = sub? {
                        for naming in map {
                            let naming = naming?;
                            names.insert(naming.index, naming.name.to_string());
                        }
                    }
                }
            }
        }
    }
    Ok(names)
}

/// Number of imported functions (defined functions are numbered after them).
fn imported_functions(module: &[u8]) -> Result<u32, Error> {
    let mut n = 0;
    for payload in Parser::new(0).parse_all(module) {
        if let Payload::ImportSection(reader) = payload? {
            for import in reader.into_imports() {
                if matches!(import?.ty, wasmparser::TypeRef::Func(_)) {
                    n += 1;
                }
            }
        }
    }
    Ok(n)
}

/// The function body with every float select replaced by
/// `local.set c; local.set b; local.set a; local.get c; if (result T) local.get a else local.get b end`
/// over three fresh locals per operand type.
fn rewrite_body(
    module: &[u8],
    body: &wasmparser::FunctionBody,
    func: &mut wasmparser::FuncValidator<wasmparser::ValidatorResources>,
    unroll: &LoopChoice,
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
    let ops = if unroll.addressing {
        let (ops, rewritten) = wazero_addressing(&ops)?;
        report.loads_rewritten += rewritten;
        ops
    } else {
        ops
    };
    let (ops, unrolled) = unroll_loops(&ops, unroll, &mut report.loops_in_passes)?;
    report.loops_unrolled += unrolled;
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

/// Which innermost loops to unroll, and how many copies of the body per pass through the loop
/// header. A loop is unrolled when it takes and leaves nothing on the stack, contains no other
/// loop, and its body is at most `max_body_bytes`. The loop
/// `loop L  BODY  end` becomes
/// `block EXIT  loop L  (block C  BODY'  br EXIT  end) × (factor-1)  BODY''  end  end`:
/// in each copy a branch to L (continue) now reaches the end of its `C`, i.e. the next copy; the
/// body falling off its end (the loop's exit) branches to EXIT; branches to labels outside the
/// loop are renumbered past the added blocks.
#[derive(Debug, Clone, Copy)]
pub struct Unroll {
    /// Copies of the body per pass through the loop header (1 = off).
    pub factor: usize,
    /// Copies for the loops of functions whose name carries [`MARKER`].
    pub marked_factor: usize,
    /// Pass lengths, longest first, for the marked loops `passes.rs` can run as whole passes
    /// (the steps left after them run the loop unrolled `marked_factor` times).
    pub marked_passes: &'static [usize],
    /// Only loops whose body is at most this many bytes.
    pub max_body_bytes: usize,
    /// Loops in functions whose name (from the `name` section, mangled) contains one of these…
    pub functions: &'static [&'static str],
    /// …and loops anywhere that call a function whose name contains one of these.
    pub callees: &'static [&'static str],
}

/// What sd.wasm ships with: 8 copies of the innermost loops, up to 600 bytes of body, of
/// - the functions `scripts/profile-wazero.py --write` listed in `hot-loops.txt`: those whose
///   loop headers made the most exits to Go under Bacalhau's engine (a profile, not a hand-kept
///   list; on 2026-12-03 the exit checks were 61 % of a UNet evaluation at 32×32 there);
/// - 32 copies in functions carrying the [`MARKER`]: sd-kernels' GEMM tile has a reduction
///   loop built both ways, rolled for wasmtime's Cranelift and marked for this
///   (crates/sd-kernels/src/mmm.rs says why). The check is a call, so every pass also spills
///   and reloads the tile's accumulators: 8 copies left it 2.4× slower than under wasmtime.
///   That loop runs as whole passes of 128 then 32 steps (`passes.rs`: no bounds checks inside
///   a pass); under wasi-runner on a Zen 1 EPYC an exit costs ~60 ns, as much as ~8 steps,
///   and passes of 128 made the tile alone 16 % faster than passes of 32 (2026-12-04);
/// - loops anywhere that call `half::f16::to_f32` (fp16 weights widened on every run).
///
/// First measured with a hand-kept list (tract's GEMM kernel, matrixmultiply, `contains`) on
/// the SD 1.5 UNet at a 16×16 latent: one evaluation 99.6 s → 39.0 s, load 145 s → 70 s.
pub fn sd_wasm_unroll() -> Unroll {
    static FUNCTIONS: std::sync::OnceLock<Vec<&'static str>> = std::sync::OnceLock::new();
    let functions = FUNCTIONS.get_or_init(|| {
        include_str!("hot-loops.txt").lines().filter(|l| !l.starts_with('#')).filter_map(|l| l.split_whitespace().nth(1)).collect()
    });
    Unroll { factor: 8, marked_factor: 32, marked_passes: &[128, 32], max_body_bytes: 600, functions, callees: &["binary163f166to_f32"] }
}

/// A function whose name contains this asks for its loops to be unrolled
/// ([`Unroll::marked_factor`] copies).
pub const MARKER: &str = "wasm_ship_unroll";

/// Which loops of one function body to unroll.
struct LoopChoice<'a> {
    factor: usize,
    max_body_bytes: usize,
    every_loop: bool,
    hot_callees: &'a std::collections::HashSet<u32>,
    /// Rewrite loads as [`wazero_addressing`] does (marked functions).
    addressing: bool,
    /// Whole-pass lengths for the loops that allow them (marked functions).
    passes: &'a [usize],
}

/// Loads reshaped for wazero v1.12.0's amd64 backend, in marked functions (hand-written
/// kernels whose pointers never wrap):
/// - `i32.const C; i32.add; LOAD offset=O` → `LOAD offset=O+C` (C ≥ 0, the load's only operand
///   the address): wazero checks bounds once per base value for the largest offset seen, so
///   loads from one pointer at constant offsets share a check. LLVM keeps the add because
///   `i32.add` wraps and the offset does not; Rust's pointer arithmetic never wraps.
/// - `v128.load32_splat` → `f32.load; f32x4.splat`: wazero lowers the first to a scalar load,
///   `pinsrd` and `pshufd`, the second to `insertps` from memory and `pshufd`.
fn wazero_addressing(expr: &[u8]) -> Result<(Vec<u8>, usize), Error> {
    let ops = operators(expr)?;
    let memarg = |out: &mut Vec<u8>, m: &wasmparser::MemArg, extra: u64| {
        leb(out, m.align as u64);
        leb(out, m.offset + extra);
    };
    let mut out = Vec::with_capacity(expr.len());
    let mut rewritten = 0;
    let mut i = 0;
    while i < ops.len() {
        let folded = match (&ops[i].0, ops.get(i + 1).map(|o| &o.0), ops.get(i + 2).map(|o| &o.0)) {
            (Operator::I32Const { value }, Some(Operator::I32Add), Some(load)) if *value >= 0 => {
                address_load(load).map(|(prefix, m)| (prefix, m, *value as u64))
            }
            _ => None,
        };
        let (op, extra, skip) = match folded {
            Some((_, _, c)) => (&ops[i + 2].0, c, 3),
            None => (&ops[i].0, 0, 1),
        };
        match (op, address_load(op)) {
            (Operator::V128Load32Splat { memarg: m }, _) => {
                out.push(0x2a); // f32.load
                memarg(&mut out, m, extra);
                out.extend_from_slice(&[0xfd, 0x13]); // f32x4.splat
                rewritten += 1;
            }
            (_, Some((prefix, m))) if skip == 3 => {
                out.extend_from_slice(prefix);
                memarg(&mut out, &m, extra);
                rewritten += 1;
            }
            _ => out.extend_from_slice(&expr[ops[i].1..ops[i].2]),
        }
        i += skip;
    }
    Ok((out, rewritten))
}

/// An expression's operators, each with its byte range in `expr`.
fn operators(expr: &[u8]) -> Result<Vec<(Operator<'_>, usize, usize)>, Error> {
    let mut reader = wasmparser::OperatorsReader::new(wasmparser::BinaryReader::new(expr, 0));
    let mut ops = Vec::new();
    while !reader.eof() {
        let (op, start) = reader.read_with_offset()?;
        ops.push((op, start as usize, reader.original_position() as usize));
    }
    Ok(ops)
}

/// The opcode bytes and memarg of a load whose only operand is its address (the loads marked
/// kernels use); None for anything else.
fn address_load(op: &Operator) -> Option<(&'static [u8], wasmparser::MemArg)> {
    Some(match op {
        Operator::I32Load { memarg } => (&[0x28], *memarg),
        Operator::F32Load { memarg } => (&[0x2a], *memarg),
        Operator::V128Load { memarg } => (&[0xfd, 0x00], *memarg),
        Operator::V128Load32Splat { memarg } => (&[0xfd, 0x09], *memarg),
        Operator::V128Load64Splat { memarg } => (&[0xfd, 0x0a], *memarg),
        _ => return None,
    })
}

/// Unrolls the chosen loops of one function body (see [`Unroll`]); returns the new expression
/// and how many loops were unrolled.
fn unroll_loops(expr: &[u8], unroll: &LoopChoice, in_passes: &mut usize) -> Result<(Vec<u8>, usize), Error> {
    if unroll.factor < 2 {
        return Ok((expr.to_vec(), 0));
    }
    let ops = operators(expr)?;
    // Innermost candidate loops: (index of `loop`, index of its `end`).
    struct Frame {
        start: usize,
        candidate_loop: bool,
        contains_loop: bool,
        branches_ok: bool,
        calls_hot: bool,
    }
    let mut stack: Vec<Frame> = Vec::new();
    let mut loops: Vec<(usize, usize)> = Vec::new();
    for (i, (op, _, _)) in ops.iter().enumerate() {
        match op {
            Operator::Block { .. } | Operator::If { .. } | Operator::Loop { .. } | Operator::Try { .. } | Operator::TryTable { .. } => {
                let candidate_loop = matches!(op, Operator::Loop { blockty: wasmparser::BlockType::Empty });
                if matches!(op, Operator::Loop { .. }) {
                    for f in stack.iter_mut() {
                        f.contains_loop = true;
                    }
                }
                stack.push(Frame { start: i, candidate_loop, contains_loop: false, branches_ok: true, calls_hot: false });
            }
            Operator::End => {
                if let Some(f) = stack.pop() {
                    let body_bytes = ops[i].1 - ops[f.start].2;
                    let chosen = unroll.every_loop || f.calls_hot;
                    if chosen && f.candidate_loop && !f.contains_loop && f.branches_ok && body_bytes <= unroll.max_body_bytes {
                        loops.push((f.start, i));
                    }
                    if let Some(parent) = stack.last_mut() {
                        parent.calls_hot |= f.calls_hot;
                    }
                }
            }
            Operator::Br { .. } | Operator::BrIf { .. } | Operator::BrTable { .. } => {}
            Operator::Call { function_index } if unroll.hot_callees.contains(function_index) => {
                if let Some(f) = stack.last_mut() {
                    f.calls_hot = true;
                }
            }
            op if is_other_branch(op) => {
                for f in stack.iter_mut() {
                    f.branches_ok = false;
                }
            }
            _ => {}
        }
    }
    loops.sort();
    let mut out = Vec::with_capacity(expr.len());
    let mut i = 0;
    let mut next = loops.iter().peekable();
    while i < ops.len() {
        match next.peek() {
            Some(&&(start, end)) if start == i => {
                next.next();
                let body = &ops[start + 1..end];
                let unrolled = unrolled(expr, body, unroll.factor);
                match unroll.addressing.then(|| passes::whole_passes(expr, body, unroll.passes, &unrolled)).flatten() {
                    Some(passes) => {
                        out.extend_from_slice(&passes);
                        *in_passes += 1;
                    }
                    None => out.extend_from_slice(&unrolled),
                }
                i = end + 1;
            }
            _ => {
                out.extend_from_slice(&expr[ops[i].1..ops[i].2]);
                i += 1;
            }
        }
    }
    Ok((out, loops.len()))
}

/// `loop L  BODY  end` unrolled as [`Unroll`] describes.
fn unrolled(expr: &[u8], body: &[(Operator, usize, usize)], factor: usize) -> Vec<u8> {
    let mut out = vec![0x02, 0x40, 0x03, 0x40]; // block EXIT, loop L
    for _ in 1..factor {
        out.extend_from_slice(&[0x02, 0x40]); // block C
        copy_body(expr, body, 2, &mut out);
        out.extend_from_slice(&[0x0c, 0x02, 0x0b]); // br EXIT, end C
    }
    copy_body(expr, body, 1, &mut out);
    out.extend_from_slice(&[0x0b, 0x0b]); // end L, end EXIT
    out
}

/// Branch-like operators other than br/br_if/br_table (exceptions, GC casts, tail calls are
/// not produced for this target; a loop that has one is left alone).
fn is_other_branch(op: &Operator) -> bool {
    matches!(
        op,
        Operator::BrOnNull { .. }
            | Operator::BrOnNonNull { .. }
            | Operator::BrOnCast { .. }
            | Operator::BrOnCastFail { .. }
            | Operator::Delegate { .. }
            | Operator::Rethrow { .. }
    )
}

/// Copies a loop body, adding `shift` to branch depths that leave the body.
fn copy_body(expr: &[u8], body: &[(Operator, usize, usize)], shift: u32, out: &mut Vec<u8>) {
    let mut depth = 0u32; // blocks opened inside the body
    let outside = |d: u32, depth: u32| if d > depth { d + shift } else { d };
    for (op, start, end) in body {
        match op {
            Operator::Block { .. } | Operator::If { .. } | Operator::Loop { .. } | Operator::Try { .. } | Operator::TryTable { .. } => {
                depth += 1;
                out.extend_from_slice(&expr[*start..*end]);
            }
            Operator::End => {
                depth -= 1;
                out.push(0x0b);
            }
            Operator::Br { relative_depth } => {
                out.push(0x0c);
                leb(out, outside(*relative_depth, depth) as u64);
            }
            Operator::BrIf { relative_depth } => {
                out.push(0x0d);
                leb(out, outside(*relative_depth, depth) as u64);
            }
            Operator::BrTable { targets } => {
                out.push(0x0e);
                leb(out, targets.len() as u64);
                for t in targets.targets() {
                    leb(out, outside(t.expect("br_table target"), depth) as u64);
                }
                leb(out, outside(targets.default(), depth) as u64);
            }
            _ => out.extend_from_slice(&expr[*start..*end]),
        }
    }
}

#[cfg(test)]
mod tests {
    /// The load rewrite, byte for byte: a constant add folded into a v128.load's offset, a
    /// load32_splat (after a folded add) as f32.load + f32x4.splat, a negative add left alone.
    #[test]
    fn loads_are_rewritten_for_wazero() {
        #[rustfmt::skip]
        let expr = [
            0x20, 0, 0x41, 16, 0x6a, 0xfd, 0x00, 0, 4, 0x1a,  // local.get 0; i32.const 16; i32.add; v128.load offset=4; drop
            0x20, 0, 0x41, 8, 0x6a, 0xfd, 0x09, 2, 0, 0x1a,   // local.get 0; i32.const 8; i32.add; v128.load32_splat; drop
            0x20, 0, 0x41, 0x7c, 0x6a, 0x2a, 2, 0, 0x1a,      // local.get 0; i32.const -4; i32.add; f32.load; drop
            0x0b,
        ];
        #[rustfmt::skip]
        let want = [
            0x20, 0, 0xfd, 0x00, 0, 20, 0x1a,                 // local.get 0; v128.load offset=20; drop
            0x20, 0, 0x2a, 2, 8, 0xfd, 0x13, 0x1a,            // local.get 0; f32.load offset=8; f32x4.splat; drop
            0x20, 0, 0x41, 0x7c, 0x6a, 0x2a, 2, 0, 0x1a,
            0x0b,
        ];
        let (got, rewritten) = super::wazero_addressing(&expr).unwrap();
        assert_eq!(got, want);
        assert_eq!(rewritten, 2);
    }

    /// hot-loops.txt (scripts/profile-wazero.py --write) parses into names that survive a
    /// rebuild: mangled, without the hash suffix.
    #[test]
    fn the_profiled_list_names_functions_without_their_hash() {
        let unroll = super::sd_wasm_unroll();
        assert!(unroll.functions.len() >= 10, "{:?}", unroll.functions);
        for name in unroll.functions {
            assert!(name.starts_with("_ZN") || name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'), "{name}");
            assert!(!name.ends_with('E') || !name.contains("17h"), "{name} still has its hash");
        }
        assert!(unroll.marked_factor > unroll.factor);
    }
}
