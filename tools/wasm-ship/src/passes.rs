//! Whole passes for a marked loop that walks pointers through loads (the GEMM tile's
//! reduction), so that wazero checks bounds once per pointer per pass instead of once per step.
//!
//! wazero v1.12.0 skips a bounds check when the same SSA value was already checked for an
//! offset at least as far (`memOpSetup` in its frontend). A loop body that advances its
//! pointers (`local.set`) makes new values every step, so a plain unrolled copy checks each
//! pointer again on every step. A pass instead reads every step's values at constant offsets
//! from the pointers as they were at the top of the pass, after one load of each pointer's
//! furthest address (the *probe*), and advances the pointers and the count once at its end.
//!
//! The loop must be (after [`crate::wazero_addressing`]): straight-line code without stores,
//! calls or branches, ending in `local.get N; i32.const -D; i32.add; local.tee N; br_if 0` (a
//! count down to zero); every local that is a load's address is either never set in the body
//! or a *walking pointer*: set once, by `local.get L; i32.const C; i32.add; local.set L`
//! (C > 0), after all of its loads. Then
//!
//! ```text
//! loop L BODY end
//! ```
//! becomes
//! ```text
//! block EXIT
//!   loop F                               ;; for each pass length P, longest first:
//!     local.get N; i32.const P·D; i32.ge_u
//!     if                                 ;; at least a whole pass left
//!       probes; P copies of BODY, offsets shifted, without the adds and the count
//!       L += P·C (each pointer); N -= P·D
//!       local.get N; br_if F             ;; more left: next pass
//!       br EXIT
//!     end
//!   end                                  ;; less than P left: the next length
//!   REMAINDER                            ;; the original loop, unrolled as other marked loops
//! end
//! ```
//! The same loads in the same order with the same values, the same arithmetic, the same final
//! locals; only the address arithmetic moved into the offsets. Like the rest of the addressing
//! rewrite it assumes a pointer plus its offsets does not wrap (true of Rust pointers into
//! one allocation). The probe reads an address the pass reads anyway.

use crate::{address_load, leb};
use wasmparser::Operator;

/// A decoded operator with its byte range in the expression.
type Op<'a> = (Operator<'a>, usize, usize);

/// The replacement for `loop … end` (`body` is what lies between them): whole passes of each
/// of `lengths` copies in turn (longest first), then `remainder` (the loop unrolled the
/// ordinary way); or None when the loop is not of the shape the module docs describe.
pub(crate) fn whole_passes(expr: &[u8], body: &[Op], lengths: &[usize], remainder: &[u8]) -> Option<Vec<u8>> {
    let shape = Shape::of(body)?;
    let mut out = vec![0x02, 0x40]; // block EXIT
    for &length in lengths {
        passes_of(expr, body, &shape, length, &mut out)?;
    }
    out.extend_from_slice(remainder);
    out.push(0x0b); // end EXIT
    Some(out)
}

/// `loop F  if (N ≥ length·D)  PASS  br_if F  br EXIT  end  end`, inside EXIT: falls through
/// once less than a whole pass is left.
fn passes_of(expr: &[u8], body: &[Op], shape: &Shape, length: usize, out: &mut Vec<u8>) -> Option<()> {
    let length = length as u64;
    out.extend_from_slice(&[0x03, 0x40]); // loop F
    local(out, 0x20, shape.count);
    i32_const(out, shape.count_step as i64 * length as i64);
    out.extend_from_slice(&[0x4f, 0x04, 0x40]); // i32.ge_u, if
    for p in &shape.pointers {
        let Some(furthest) = p.furthest else { continue };
        let (prefix, m) = address_load(&body[furthest].0)?;
        local(out, 0x20, p.local);
        out.extend_from_slice(prefix);
        leb(out, m.align as u64);
        leb(out, m.offset + p.step as u64 * (length - 1));
        out.push(0x1a); // drop
    }
    for copy in 0..length {
        let mut i = 0;
        while i < shape.counted_from {
            if shape.increments.contains(&i) {
                i += 4;
                continue;
            }
            let (op, start, end) = &body[i];
            let walked = match (op, body.get(i + 1).and_then(|next| address_load(&next.0))) {
                (Operator::LocalGet { local_index }, Some(load)) => {
                    shape.pointers.iter().find(|p| p.local == *local_index).map(|p| (p.step, load))
                }
                _ => None,
            };
            out.extend_from_slice(&expr[*start..*end]);
            if let Some((step, (prefix, m))) = walked {
                out.extend_from_slice(prefix);
                leb(out, m.align as u64);
                leb(out, m.offset + step as u64 * copy);
                i += 2;
            } else {
                i += 1;
            }
        }
    }
    for p in &shape.pointers {
        local(out, 0x20, p.local);
        i32_const(out, p.step as i64 * length as i64);
        out.push(0x6a); // i32.add
        local(out, 0x21, p.local);
    }
    local(out, 0x20, shape.count);
    i32_const(out, -(shape.count_step as i64 * length as i64));
    out.push(0x6a);
    local(out, 0x22, shape.count); // local.tee
    out.extend_from_slice(&[0x0d, 1, 0x0c, 2, 0x0b, 0x0b]); // br_if F, br EXIT, end (if), end F
    Some(())
}

/// A walking pointer: a local advanced by `step` bytes once per pass through the body.
struct Pointer {
    local: u32,
    step: u32,
    /// Index in the body of its load reaching furthest (offset + size); None if it has no load.
    furthest: Option<usize>,
}

/// What [`whole_passes`] needs to know of a loop body.
struct Shape {
    pointers: Vec<Pointer>,
    /// Body indices where a pointer's four-operator add starts.
    increments: Vec<usize>,
    /// The count local and how much one pass through the body takes from it.
    count: u32,
    count_step: u32,
    /// Body index where the count's five operators start (the body's end).
    counted_from: usize,
}

impl Shape {
    fn of(body: &[Op]) -> Option<Shape> {
        let ops: Vec<&Operator> = body.iter().map(|o| &o.0).collect();
        let counted_from = ops.len().checked_sub(5)?;
        let (count, count_step) = match &ops[counted_from..] {
            [Operator::LocalGet { local_index: a }, Operator::I32Const { value }, Operator::I32Add, Operator::LocalTee { local_index: b }, Operator::BrIf { relative_depth: 0 }]
                if a == b && *value < 0 =>
            {
                (*a, value.unsigned_abs())
            }
            _ => return None,
        };
        // The pointers' adds first: a pointer is known by its add, which follows its loads.
        let mut pointers: Vec<Pointer> = Vec::new();
        let mut increments = Vec::new();
        for i in 0..counted_from.saturating_sub(3) {
            if let [Operator::LocalGet { local_index: got }, Operator::I32Const { value }, Operator::I32Add, Operator::LocalSet { local_index: set }] = &ops[i..i + 4] {
                if got == set && *value > 0 && *set != count {
                    if pointers.iter().any(|p| p.local == *set) {
                        return None; // advanced twice
                    }
                    pointers.push(Pointer { local: *set, step: *value as u32, furthest: None });
                    increments.push(i);
                }
            }
        }
        let advanced_at = |local: u32| pointers.iter().position(|p| p.local == local).map(|k| increments[k]);
        let mut reach = vec![0u64; pointers.len()];
        let mut furthest: Vec<Option<usize>> = vec![None; pointers.len()];
        let mut invariant_bases = Vec::new();
        let mut set_in_body = Vec::new();
        let mut i = 0;
        while i < counted_from {
            if increments.contains(&i) {
                i += 4;
                continue;
            }
            match ops[i] {
                Operator::LocalGet { local_index } => {
                    let load = ops.get(i + 1).and_then(|next| address_load(next).map(|(_, m)| m.offset + load_size(next).unwrap_or(16)));
                    match (advanced_at(*local_index), load) {
                        _ if *local_index == count => return None,
                        (Some(at), Some(end)) if i < at => {
                            let k = pointers.iter().position(|p| p.local == *local_index)?;
                            if furthest[k].is_none() || end > reach[k] {
                                furthest[k] = Some(i + 1);
                                reach[k] = end;
                            }
                            i += 2;
                            continue;
                        }
                        (Some(_), _) => return None, // a pointer read other than as a load's address before its add
                        (None, Some(_)) => {
                            invariant_bases.push(*local_index);
                            i += 2;
                            continue;
                        }
                        (None, None) => {}
                    }
                }
                Operator::LocalSet { local_index } | Operator::LocalTee { local_index } => {
                    if *local_index == count || advanced_at(*local_index).is_some() {
                        return None;
                    }
                    set_in_body.push(*local_index);
                }
                op if address_load(op).is_some() => return None, // an address computed in the body
                Operator::Block { .. } | Operator::Loop { .. } | Operator::If { .. } | Operator::Else | Operator::End => return None,
                Operator::Br { .. } | Operator::BrIf { .. } | Operator::BrTable { .. } | Operator::Return => return None,
                Operator::Call { .. } | Operator::CallIndirect { .. } => return None,
                op if is_store_or_other_memory(op) => return None,
                _ => {}
            }
            i += 1;
        }
        if invariant_bases.iter().any(|b| set_in_body.contains(b)) || furthest.iter().all(Option::is_none) {
            return None;
        }
        for (p, f) in pointers.iter_mut().zip(furthest) {
            p.furthest = f;
        }
        Some(Shape { pointers, increments, count, count_step, counted_from })
    }
}

/// Bytes read by a load [`address_load`] accepts.
fn load_size(op: &Operator) -> Option<u64> {
    Some(match op {
        Operator::I32Load { .. } | Operator::F32Load { .. } | Operator::V128Load32Splat { .. } => 4,
        Operator::V128Load64Splat { .. } => 8,
        Operator::V128Load { .. } => 16,
        _ => return None,
    })
}

/// Memory operators other than the loads [`address_load`] accepts: stores, other loads,
/// `memory.*`. A body with any of them is left alone.
fn is_store_or_other_memory(op: &Operator) -> bool {
    use Operator::*;
    matches!(
        op,
        I32Store { .. } | I64Store { .. } | F32Store { .. } | F64Store { .. } | I32Store8 { .. } | I32Store16 { .. }
            | I64Store8 { .. } | I64Store16 { .. } | I64Store32 { .. } | V128Store { .. } | V128Store8Lane { .. }
            | V128Store16Lane { .. } | V128Store32Lane { .. } | V128Store64Lane { .. } | I64Load { .. } | F64Load { .. }
            | I32Load8S { .. } | I32Load8U { .. } | I32Load16S { .. } | I32Load16U { .. } | I64Load8S { .. }
            | I64Load8U { .. } | I64Load16S { .. } | I64Load16U { .. } | I64Load32S { .. } | I64Load32U { .. }
            | V128Load8x8S { .. } | V128Load8x8U { .. } | V128Load16x4S { .. } | V128Load16x4U { .. }
            | V128Load32x2S { .. } | V128Load32x2U { .. } | V128Load8Splat { .. } | V128Load16Splat { .. }
            | V128Load32Zero { .. } | V128Load64Zero { .. } | V128Load8Lane { .. } | V128Load16Lane { .. }
            | V128Load32Lane { .. } | V128Load64Lane { .. } | MemoryGrow { .. } | MemorySize { .. } | MemoryCopy { .. }
            | MemoryFill { .. } | MemoryInit { .. }
    )
}

fn local(out: &mut Vec<u8>, opcode: u8, index: u32) {
    out.push(opcode);
    leb(out, index as u64);
}

fn i32_const(out: &mut Vec<u8>, value: i64) {
    out.push(0x41);
    let mut v = value;
    loop {
        let byte = (v & 0x7f) as u8;
        v >>= 7;
        let done = (v == 0 && byte & 0x40 == 0) || (v == -1 && byte & 0x40 != 0);
        out.push(if done { byte } else { byte | 0x80 });
        if done {
            break;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode(expr: &[u8]) -> Vec<Op<'_>> {
        crate::operators(expr).unwrap()
    }

    /// A loop body: pointer 0 read at offsets 8 (16 bytes) and 0 (4 bytes) and advanced by 16,
    /// local 1 read at offset 4 and never set, local 2 counted down by 1; `extra` goes before
    /// the count.
    fn body(extra: &[u8]) -> Vec<u8> {
        #[rustfmt::skip]
        let mut b = vec![
            0x20, 0, 0xfd, 0x00, 4, 8, 0x1a,  // local.get 0; v128.load offset=8; drop
            0x20, 0, 0x2a, 2, 0, 0x1a,        // local.get 0; f32.load offset=0; drop
            0x20, 1, 0x2a, 2, 4, 0x1a,        // local.get 1; f32.load offset=4; drop
            0x20, 0, 0x41, 16, 0x6a, 0x21, 0, // local.get 0; i32.const 16; i32.add; local.set 0
        ];
        b.extend_from_slice(extra);
        b.extend_from_slice(&[0x20, 2, 0x41, 0x7f, 0x6a, 0x22, 2, 0x0d, 0]); // local.get 2; i32.const -1; i32.add; local.tee 2; br_if 0
        b
    }

    /// Two copies per pass, byte for byte: one probe at the furthest address of the pass
    /// (offset 8 + 16 of 16 bytes), the second copy's pointer loads 16 further, the invariant
    /// load unchanged, one add per pass, then the remainder as given.
    #[test]
    fn a_walking_loop_becomes_passes() {
        let b = body(&[]);
        let remainder = [0xaa];
        let got = whole_passes(&b, &decode(&b), &[2], &remainder).expect("the loop has the shape");
        #[rustfmt::skip]
        let want = [
            0x02, 0x40, 0x03, 0x40,                     // block EXIT, loop F
            0x20, 2, 0x41, 2, 0x4f, 0x04, 0x40,         // local.get 2; i32.const 2; i32.ge_u; if
            0x20, 0, 0xfd, 0x00, 4, 24, 0x1a,           // probe
            0x20, 0, 0xfd, 0x00, 4, 8, 0x1a, 0x20, 0, 0x2a, 2, 0, 0x1a, 0x20, 1, 0x2a, 2, 4, 0x1a,
            0x20, 0, 0xfd, 0x00, 4, 24, 0x1a, 0x20, 0, 0x2a, 2, 16, 0x1a, 0x20, 1, 0x2a, 2, 4, 0x1a,
            0x20, 0, 0x41, 32, 0x6a, 0x21, 0,           // local 0 += 32
            0x20, 2, 0x41, 0x7e, 0x6a, 0x22, 2,         // local 2 -= 2 (tee)
            0x0d, 1, 0x0c, 2, 0x0b, 0x0b,               // br_if F; br EXIT; end if; end F
            0xaa,                                       // the remainder
            0x0b,                                       // end EXIT
        ];
        assert_eq!(got, want);
    }

    /// Two lengths: passes of 4 (probe 3 × 16 further), then of 2 (the level the test above
    /// checks byte for byte), then the remainder, all inside one EXIT block.
    #[test]
    fn longer_passes_come_first() {
        let b = body(&[]);
        let ops = decode(&b);
        let two = whole_passes(&b, &ops, &[2], &[0xaa]).unwrap();
        let both = whole_passes(&b, &ops, &[4, 2], &[0xaa]).unwrap();
        #[rustfmt::skip]
        let four_head = [
            0x02, 0x40, 0x03, 0x40, 0x20, 2, 0x41, 4, 0x4f, 0x04, 0x40,
            0x20, 0, 0xfd, 0x00, 4, 56, 0x1a,           // probe: offset 8 + 3 × 16
        ];
        assert_eq!(both[..four_head.len()], four_head);
        assert!(both.ends_with(&two[2..]), "the passes of 2 and the remainder follow those of 4");
        let four_level = both.len() - two.len(); // the loop of passes of 4, `end F` included
        assert_eq!(both[2 + four_level - 2..2 + four_level], [0x0b, 0x0b]);
    }

    /// Loops the rewrite would get wrong are left to the plain unroll.
    #[test]
    fn other_loops_are_left_alone() {
        #[rustfmt::skip]
        let refused: [&[u8]; 5] = [
            &[0x20, 0, 0x2a, 2, 0, 0x1a],             // a load from the pointer after its add
            &[0x20, 0, 0x1a],                         // the pointer read other than as an address
            &[0x20, 1, 0x43, 0, 0, 0, 0, 0x38, 2, 0], // a store (local 1; f32.const 0; f32.store)
            &[0x41, 0, 0x21, 1],                      // the invariant base set in the body
            &[0x20, 2, 0x1a],                         // the count read in the body
        ];
        for extra in refused {
            let b = body(extra);
            assert!(whole_passes(&b, &decode(&b), &[2], &[]).is_none(), "{extra:x?}");
        }
        let b = body(&[0x41, 0, 0x21, 3]); // another local set: fine
        assert!(whole_passes(&b, &decode(&b), &[2], &[]).is_some());
    }
}
