//! Where the command line's pictures go, and how each file is written: once.

use super::args::CliArgs;
use crate::error::{Result, SdError};
use crate::records::image_file_name;
use std::path::{Path, PathBuf};

/// Where pictures go: the file --output names, or a directory (--output's, else /outputs
/// when it exists, as under Bacalhau, else the current directory).
enum OutputTarget {
    File(PathBuf),
    Dir(PathBuf),
}

fn output_target(args: &CliArgs) -> OutputTarget {
    match &args.output {
        Some(p) if p.is_dir() => OutputTarget::Dir(p.clone()),
        Some(p) => OutputTarget::File(p.clone()),
        None if Path::new("/outputs").is_dir() => OutputTarget::Dir(PathBuf::from("/outputs")),
        None => OutputTarget::Dir(PathBuf::new()),
    }
}

/// The PNG and its sidecar: an explicit file, or `sd-<seed>-<hash of parameters>.png` in the
/// output directory. The name depends only on the parameters: a rerun writes the same bytes
/// to the same name.
pub fn output_paths(args: &CliArgs, num_images: usize, seed: u64, parameters: &str) -> (PathBuf, PathBuf) {
    let png = match output_target(args) {
        OutputTarget::File(p) if num_images > 1 => {
            let stem = p.file_stem().unwrap_or_default().to_string_lossy().into_owned();
            let ext = p.extension().map(|e| e.to_string_lossy().into_owned()).unwrap_or_else(|| "png".into());
            p.with_file_name(format!("{stem}-{seed}.{ext}"))
        }
        OutputTarget::File(p) => p,
        OutputTarget::Dir(dir) => dir.join(image_file_name(seed, parameters)),
    };
    let json = png.with_extension("json");
    (png, json)
}

/// Previews are named before the picture's parameters hash is known: from --output's stem
/// when it names a file, else `sd-<seed>`, beside the picture.
pub fn preview_base(args: &CliArgs, seed: u64) -> (PathBuf, String) {
    match output_target(args) {
        OutputTarget::File(p) => (
            p.parent().map(Path::to_path_buf).unwrap_or_default(),
            p.file_stem().unwrap_or_default().to_string_lossy().into_owned(),
        ),
        OutputTarget::Dir(dir) => (dir, format!("sd-{seed}")),
    }
}

/// Fails early (before minutes of work) when the output's directory does not exist.
pub fn check_output_dir(args: &CliArgs) -> Result<()> {
    let Some(out) = &args.output else { return Ok(()) };
    if out.is_dir() {
        return Ok(());
    }
    let parent = out.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    if !parent.is_dir() {
        return Err(SdError::output(format!(
            "--output {}: directory {} does not exist (create it; under wasmtime, map it with --dir)",
            out.display(),
            parent.display()
        )));
    }
    Ok(())
}

/// Creates and writes a file in one go: Bacalhau's output mount allows nothing else
/// (no rename, no reopen), and a failed run must leave no file behind.
pub fn write_once(path: &Path, bytes: &[u8]) -> Result<()> {
    use std::io::Write;
    let fail = |e: std::io::Error| {
        SdError::output(format!(
            "cannot write {} ({e}); check that the directory exists and is writable (under wasmtime, map it with --dir HOST::GUEST)",
            path.display()
        ))
    };
    let mut file = std::fs::File::create(path).map_err(fail)?;
    if let Err(e) = file.write_all(bytes).and_then(|_| file.flush()) {
        drop(file);
        let _ = std::fs::remove_file(path);
        return Err(fail(e));
    }
    Ok(())
}
