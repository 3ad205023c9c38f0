//! How much memory a network needs, checked before loading it: a job with too little memory
//! (Bacalhau's default is 512 MB) should hear so in one line, with the flag that fixes it,
//! instead of trapping minutes into a load.

use crate::error::{Result, SdError};
use tract_onnx::pb;

const MIB: u64 = 1 << 20;
/// The largest probe piece: one wasm32 allocation must stay under 2 GiB.
const PROBE_CHUNK: usize = (1 << 31) - (1 << 20);
/// A large piece that cannot be had in one block is probed again in pieces of this size: the
/// loads themselves never ask for more than a few hundred MB at once, and the browser tab
/// refused the one ~2 GiB block that a full-size UNet's probe asks for (chromium, 2026-12-03:
/// SD-Turbo shapes failed with 0.46 GiB "more could be allocated", though the same memory in
/// 64 MiB pieces loaded and ran there the day before).
const SMALL_PIECE: usize = 64 << 20;

/// The probe's pieces: as few as one allocation allows, the smallest first. Under wazero
/// (Bacalhau) a memory.grow past the buffer's capacity copies all of linear memory into a new
/// buffer, whose capacity is exactly the new size when it more than doubles, else ~1.25× the
/// old one: 64 MiB pieces cost ~16 copies of up to 2.5 GB, 17 s of a UNet load there. Small
/// piece first, then the large one (which more than doubles memory): one copy of the small.
fn probe_pieces(needed: u64) -> Vec<usize> {
    let mut pieces = Vec::new();
    let mut left = needed;
    while left > PROBE_CHUNK as u64 {
        pieces.push(PROBE_CHUNK);
        left -= PROBE_CHUNK as u64;
    }
    if left > 0 {
        pieces.insert(0, left as usize);
    }
    pieces
}

/// Peak working memory of one UNet evaluation beyond its weights (batch 1 measured, scaled by the batch). Measured in
/// wasm32 on SD 1.5 shapes (docs/memory-and-speed.md): attention fused into MultiHeadAttention runs
/// as flash SDPA and needs little; exported MatMul/Softmax attention holds the score
/// tensors (heads × pixels² floats) of the largest self-attention. Small latents need a floor
/// that does not shrink with the picture, 3/8 of the weights' bytes (`weights`): measured
/// without the probe on SD 1.5 (1.72 GB of fp16 weights), 2026-12-03: 600, 583, 591 MB beyond
/// the weights at 16², 32², 48²; 527 MB at 64², 651 MB at 96². Below it the first run grew
/// memory, which costs ~10 s under wazero (a copy of all of it).
pub fn unet_working(proto: &pb::ModelProto, weights: u64, latent: &[usize; 4]) -> u64 {
    let (batch, pixels) = (latent[0] as u64, (latent[2] * latent[3]) as u64);
    let base = (256 * MIB + batch * pixels * 96 * 1024).max(weights / 8 * 3);
    let fused = proto
        .graph
        .iter()
        .flat_map(|g| &g.node)
        .any(|n| n.op_type == "MultiHeadAttention" || n.op_type == "Attention");
    if fused {
        base
    } else {
        base + batch * 2 * 8 * pixels * pixels * 4
    }
}

/// Peak working memory of the VAE decoder: a few full-resolution 128-channel tensors.
pub fn vae_working(latent: &[usize; 4], scale: u32) -> u64 {
    let out_pixels = (latent[2] * latent[3]) as u64 * (scale as u64).pow(2);
    64 * MIB + out_pixels * 128 * 4 * 6
}

pub const TEXT_ENCODER_WORKING: u64 = 128 * MIB;

/// Fails with a clear message when `needed` bytes cannot be allocated now. The probe's
/// memory is returned to the allocator at once and reused by the load. Linear memory never
/// shrinks, so the first, largest probe of a job (the UNet's, asked for before any network
/// loads) sizes it for the whole job: under wazero each growth copies all of it.
pub fn ensure(what: &str, needed: u64) -> Result<()> {
    if cfg!(target_pointer_width = "32") && needed >= 4 << 30 {
        return Err(SdError::model(format!(
            "{what} needs about {:.1} GiB of memory, more than wasm32's 4 GiB address space: convert \
             the model with scripts/convert.py (fp16 weights at rest, fused attention) or use a \
             smaller size",
            needed as f64 / (1u64 << 30) as f64
        )));
    }
    // Natively the probe below proves nothing: Linux overcommits, so reserving succeeds and the
    // kernel kills the process once the pages are touched. Compare with what the machine has.
    if let Some(free) = free_system_memory() {
        if needed > free {
            return Err(SdError::runtime(format!(
                "{what} needs about {:.2} GiB of memory to load and run, but this machine has {:.2} GiB \
                 available: use a smaller size",
                needed as f64 / (1u64 << 30) as f64,
                free as f64 / (1u64 << 30) as f64
            )));
        }
    }
    // Reserved blocks, held until the probe is over (then returned to the allocator).
    let mut held: Vec<Vec<u8>> = Vec::new();
    let mut got = 0u64;
    let mut reserve = |want: usize| {
        let mut block = Vec::new();
        let ok = crate::error::fallible(|| block.try_reserve_exact(want)).is_ok();
        if ok {
            got += want as u64;
            held.push(block);
        }
        ok
    };
    for want in probe_pieces(needed) {
        let reserved = reserve(want)
            || (want > SMALL_PIECE && (0..want.div_ceil(SMALL_PIECE)).all(|i| reserve(SMALL_PIECE.min(want - i * SMALL_PIECE))));
        if !reserved {
            drop(reserve);
            return Err(SdError::runtime(format!(
                "{what} needs about {:.2} GiB of memory to load and run, but only {:.2} GiB more could be \
                 allocated: {}",
                needed as f64 / (1u64 << 30) as f64,
                got as f64 / (1u64 << 30) as f64,
                crate::error::MORE_MEMORY
            )));
        }
    }
    Ok(())
}

/// Memory the system can still give a native process (Linux: MemAvailable + SwapFree); `None` in
/// wasm, whose linear memory the probe measures exactly, and where the system does not say.
pub(crate) fn free_system_memory() -> Option<u64> {
    if !cfg!(target_os = "linux") {
        return None;
    }
    let meminfo = std::fs::read_to_string("/proc/meminfo").ok()?;
    Some((kib_field(&meminfo, "MemAvailable:")? + kib_field(&meminfo, "SwapFree:").unwrap_or(0)) * 1024)
}

/// The number after `key` in a Linux /proc text of "Key: N kB" lines (/proc/meminfo,
/// /proc/self/status).
fn kib_field(text: &str, key: &str) -> Option<u64> {
    let line = text.lines().find(|l| l.starts_with(key))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// The most memory this process has held: wasm32 linear memory never shrinks, so its
/// current size is the peak; natively, the peak resident set (Linux VmHWM).
pub fn peak_bytes() -> Option<u64> {
    #[cfg(target_arch = "wasm32")]
    {
        Some(core::arch::wasm32::memory_size(0) as u64 * 65536)
    }
    #[cfg(not(target_arch = "wasm32"))]
    {
        let status = std::fs::read_to_string("/proc/self/status").ok()?;
        kib_field(&status, "VmHWM:").map(|kb| kb * 1024)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every byte probed, no piece past one allocation's limit, the smallest piece first.
    #[test]
    fn the_probe_takes_few_pieces_the_smallest_first() {
        for needed in [1u64, 64 << 20, PROBE_CHUNK as u64, PROBE_CHUNK as u64 + 1, 2_637_889_536, 4 << 30] {
            let pieces = probe_pieces(needed);
            assert_eq!(pieces.iter().map(|&p| p as u64).sum::<u64>(), needed, "{needed}");
            assert!(pieces.iter().all(|&p| p <= PROBE_CHUNK && p > 0), "{needed}: {pieces:?}");
            assert!(pieces.windows(2).all(|w| w[0] <= w[1]), "{needed}: {pieces:?}");
            assert_eq!(pieces.len() as u64, needed.div_ceil(PROBE_CHUNK as u64), "{needed}: {pieces:?}");
        }
    }
}
