//! Progress on stderr, and previews written beside the output.

use super::outputs::Written;
use crate::codecs::png::{encode_png, RgbImage};
use crate::pipeline::{Event, Hooks};
use std::path::PathBuf;

pub struct StderrProgress {
    pub start: std::time::Instant,
    pub quiet: bool,
    pub verbose: bool,
    /// Where previews go: `<dir>/<stem>-step-<N>.png`.
    pub preview_base: Option<(PathBuf, String)>,
    /// Every file the run wrote (previews, then pictures): a failure takes them back.
    pub written: Written,
}

impl StderrProgress {
    pub fn new(quiet: bool, verbose: bool, preview_base: Option<(PathBuf, String)>) -> Self {
        StderrProgress { start: std::time::Instant::now(), quiet, verbose, preview_base, written: Written::default() }
    }

    fn write_preview(&mut self, index: usize, image: &RgbImage) {
        let Some((dir, stem)) = &self.preview_base else { return };
        let path = dir.join(format!("{stem}-step-{index:03}.png"));
        // A preview that cannot be written must not end a long run.
        let written = encode_png(image, "preview").and_then(|png| self.written.write(&path, &png));
        match written {
            Ok(()) if !self.quiet => eprintln!("preview: {}", path.display()),
            Ok(()) => {}
            Err(e) => eprintln!("warning: preview not written: {}", e.message),
        }
    }
}

impl Hooks for StderrProgress {
    fn event(&mut self, event: &Event) {
        match event {
            Event::Loading { network } if !self.quiet => eprintln!("loading {network}…"),
            Event::Loaded { network, seconds } => eprintln!("loaded {network} in {seconds:.2} s"),
            Event::Step { index, total, seconds, elapsed } if !self.quiet => {
                let eta = elapsed / *index as f64 * (*total - *index) as f64;
                eprintln!("step {index}/{total}  {seconds:.2} s  ETA {eta:.1} s");
            }
            Event::Warning(text) => eprintln!("warning: {}", crate::error::word(text, crate::request::flag_name)),
            Event::Preview { index, image } => self.write_preview(*index, image),
            Event::Tensor { name, stats } if self.verbose => eprintln!(
                "{name}: mean {:.4} std {:.4} min {:.4} max {:.4} non-finite {}",
                stats.mean, stats.std, stats.min, stats.max, stats.non_finite
            ),
            _ => {}
        }
    }
    fn now(&self) -> f64 {
        self.start.elapsed().as_secs_f64()
    }
}
