//! Where the command line's pictures go, and how each file is written: never over an existing
//! file, never through a symbolic link, and whole or not at all where the host allows it.
//!
//! Two kinds of host: most (native, wasmtime) can rename, so a file is written under a temporary
//! name and published whole; Bacalhau's output mount is write-once (no rename, no unlink, an
//! existing file reopens read-only), so there a file is written in place and read back. The
//! kind is told by a rename that must fail (of a file that does not exist), not by a flag.

use super::args::CliArgs;
use crate::error::{Result, SdError};
use crate::records::image_file_name;
use crate::request::GenerateRequest;
use std::io::Write;
use std::path::{Path, PathBuf};

/// Where pictures go: the file --output names, or a directory (--output's, else /outputs
/// when it exists, as under Bacalhau, else the current directory).
enum OutputTarget {
    File(PathBuf),
    Dir(PathBuf),
}

fn output_target(args: &CliArgs) -> OutputTarget {
    match &args.output {
        Some(p) if is_dir(p) => OutputTarget::Dir(p.clone()),
        Some(p) => OutputTarget::File(p.clone()),
        None if Path::new("/outputs").is_dir() => OutputTarget::Dir(PathBuf::from("/outputs")),
        None => OutputTarget::Dir(PathBuf::new()),
    }
}

/// The PNG an explicit --output file names for the picture of `seed`.
fn file_for_seed(p: &Path, num_images: usize, seed: u64) -> PathBuf {
    if num_images <= 1 {
        return p.to_path_buf();
    }
    let stem = p.file_stem().unwrap_or_default().to_string_lossy().into_owned();
    let ext = p.extension().map(|e| e.to_string_lossy().into_owned()).unwrap_or_else(|| "png".into());
    p.with_file_name(format!("{stem}-{seed}.{ext}"))
}

/// The PNG and its sidecar: an explicit file, or `sd-<seed>-<hash>.png` in the output
/// directory, the hash over the parameters text and the content of every input (picture, mask,
/// latents): a rerun with the same parameters and inputs names the same bytes the same way.
pub fn output_paths(args: &CliArgs, request: &GenerateRequest, seed: u64, parameters: &str) -> (PathBuf, PathBuf) {
    let png = match output_target(args) {
        OutputTarget::File(p) => file_for_seed(&p, request.num_images, seed),
        OutputTarget::Dir(dir) => dir.join(image_file_name(seed, parameters, request)),
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

/// Refuses, before minutes of work, an --output that cannot be written as asked: a missing
/// directory, a directory name that is not one, a file name the sidecar would collide with
/// (anything but `.png`), a file with --prompts (every line would go to it), or a file (or
/// batch file) that exists already.
pub fn check_output_dir(args: &CliArgs) -> Result<()> {
    let Some(out) = &args.output else { return Ok(()) };
    if is_dir(out) {
        return Ok(());
    }
    let refuse = |why: String| Err(SdError::output(format!("--output {}: {why}", out.display())));
    let text = out.to_string_lossy();
    if text.ends_with('/') || text.ends_with("/.") || text.is_empty() {
        return refuse("names a directory that does not exist (create it; under wasmtime, map it with --dir)".into());
    }
    let parent = out.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    if !is_dir(parent) {
        return refuse(format!(
            "directory {} does not exist (create it; under wasmtime, map it with --dir)",
            parent.display()
        ));
    }
    if args.prompts_file.is_some() {
        return refuse(
            "with --prompts, --output must be an existing directory (each line writes its own files)".into(),
        );
    }
    if !out.extension().is_some_and(|e| e.eq_ignore_ascii_case("png")) {
        return refuse("a picture file must end in .png (its JSON sidecar is written beside it with .json)".into());
    }
    let seeds = (0..args.request.num_images as u64).map(|i| args.request.seed.wrapping_add(i));
    for png in seeds.map(|seed| file_for_seed(out, args.request.num_images, seed)) {
        refuse_existing(&png)?;
        refuse_existing(&png.with_extension("json"))?;
    }
    Ok(())
}

/// What is at `path` (not following a last symbolic link), found by listing its directory, never
/// by asking for the path itself: Bacalhau's output mount (its `touchfs`, under wazero's fs.FS
/// adapter) creates an empty file for any missing name that is opened *or stat-ed*, so asking
/// would plant the very file asked about. Where the directory cannot be listed (a WASI
/// preopen's parent, e.g. `/`), the path is asked directly.
fn lookup(path: &Path) -> Option<std::fs::FileType> {
    let name = path.file_name()?;
    let dir = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    match std::fs::read_dir(dir) {
        Ok(entries) => entries.flatten().find(|e| e.file_name() == name).and_then(|e| e.file_type().ok()),
        Err(_) => std::fs::symlink_metadata(path).ok().map(|m| m.file_type()),
    }
}

/// Whether `path` is a directory (through a symbolic link too), without creating it (see
/// [`lookup`]).
fn is_dir(path: &Path) -> bool {
    match lookup(path) {
        Some(kind) if kind.is_symlink() => path.is_dir(),
        Some(kind) => kind.is_dir(),
        None => path.file_name().is_none() && path.is_dir(), // "/", ".", "..": ask directly
    }
}

/// sd.wasm never overwrites a file and never writes through a symbolic link (Bacalhau's
/// engine follows host links; one planted in the output directory could point anywhere).
fn refuse_existing(path: &Path) -> Result<()> {
    let Some(found) = lookup(path) else { return Ok(()) };
    let what = if found.is_symlink() {
        "it is a symbolic link (sd.wasm never writes through one)"
    } else {
        "it exists already (sd.wasm never overwrites a file: move it away or choose another --output)"
    };
    Err(SdError::output(format!("cannot write {}: {what}", path.display())))
}

/// What one run wrote, so that a failure can take it back where the host allows it.
#[derive(Debug, Default)]
pub struct Written {
    pub files: Vec<PathBuf>,
}

impl Written {
    /// Writes a new file (see [`write_new`]) and remembers it.
    pub fn write(&mut self, path: &Path, bytes: &[u8]) -> Result<()> {
        let existed = lookup(path).is_some();
        let written = write_new(path, bytes);
        // A failed write on a write-once mount can leave the file: it is this run's too.
        if written.is_ok() || (!existed && lookup(path).is_some()) {
            self.files.push(path.to_path_buf());
        }
        written
    }

    /// The run failed: removes what it wrote, and says (on stderr, and in the error for the
    /// exit summary) which files stay because the host cannot remove them (Bacalhau's
    /// write-once mount).
    pub fn take_back(&mut self, error: SdError) -> SdError {
        let (removed, left): (Vec<PathBuf>, Vec<PathBuf>) =
            self.files.drain(..).partition(|f| std::fs::remove_file(f).is_ok());
        let list = |files: &[PathBuf]| files.iter().map(|f| f.display().to_string()).collect::<Vec<_>>().join(", ");
        if !removed.is_empty() {
            eprintln!("note: removed the {} file(s) this failed run had written: {}", removed.len(), list(&removed));
        }
        if left.is_empty() {
            return error;
        }
        eprintln!("note: this failed run left {} file(s) that this host cannot remove: {}", left.len(), list(&left));
        let message = format!("{} (files left, as this host cannot remove them: {})", error.message, list(&left));
        SdError { message, ..error }
    }
}

/// Writes a file that must not exist yet. Where the host can rename, under a temporary name
/// first, then published whole (a reader never sees a partial file); on a write-once mount,
/// in place, then read back to verify.
pub fn write_new(path: &Path, bytes: &[u8]) -> Result<()> {
    let fail = |e: std::io::Error| write_error(path, e);
    refuse_existing(path)?;
    let dir = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    if !renames_allowed(dir) {
        return write_in_place(path, bytes);
    }
    let name = path.file_name().unwrap_or_default().to_string_lossy();
    let temp = dir.join(format!(".{name}.{}.partial", crate::cli::clock_seed()));
    if let Err(e) = create_and_write(&temp, bytes) {
        let _ = std::fs::remove_file(&temp);
        return Err(fail(e));
    }
    let published = publish(&temp, path);
    let _ = std::fs::remove_file(&temp);
    published
}

/// Moves a whole temporary file to its name without replacing anything: a hard link fails
/// when the name exists; a host without links gets a rename after one more check.
fn publish(temp: &Path, path: &Path) -> Result<()> {
    match std::fs::hard_link(temp, path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            Err(refuse_existing(path).err().unwrap_or_else(|| write_error(path, e)))
        }
        Err(_) => {
            refuse_existing(path)?;
            std::fs::rename(temp, path).map_err(|e| {
                SdError::output(format!("cannot write {} (renaming its temporary file: {e})", path.display()))
            })
        }
    }
}

/// Whether the directory's host can rename: renaming a file that is not there fails with
/// "not found" where renames work, and otherwise on a write-once mount.
fn renames_allowed(dir: &Path) -> bool {
    let probe = dir.join(".sd-wasm-rename-probe");
    if lookup(&probe).is_some() {
        return false; // cannot probe without touching a file that is there: write in place
    }
    matches!(std::fs::rename(&probe, dir.join(".sd-wasm-rename-probe-to")), Err(e) if e.kind() == std::io::ErrorKind::NotFound)
}

fn create_and_write(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let mut file = std::fs::OpenOptions::new().write(true).create_new(true).open(path)?;
    file.write_all(bytes)?;
    file.flush()?;
    // Some hosts (wazero's mounts) have no sync; the rename or read-back still checks the bytes.
    let _ = file.sync_all();
    Ok(())
}

fn write_error(path: &Path, e: std::io::Error) -> SdError {
    SdError::output(format!(
        "cannot write {} ({e}); check that the directory exists and is writable (under wasmtime, map it with --dir HOST::GUEST)",
        path.display()
    ))
}

/// Write-once mount: create, write, then read back — such a mount reopens an existing file
/// read-only rather than failing, and a short write cannot be undone there.
fn write_in_place(path: &Path, bytes: &[u8]) -> Result<()> {
    create_and_write(path, bytes).map_err(|e| write_error(path, e))?;
    let back = std::fs::read(path).map_err(|e| write_error(path, e))?;
    if back != bytes {
        return Err(SdError::output(format!(
            "cannot write {}: reading it back gave {} bytes that differ from the {} written",
            path.display(),
            back.len(),
            bytes.len()
        )));
    }
    Ok(())
}
