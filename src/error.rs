//! One error type for the whole pipeline. Its kind decides the process exit code, so a
//! script (or a Bacalhau job) can tell a bad flag from a broken model dir from a runtime fault.

use std::fmt;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// A flag or value the user gave is wrong.
    Usage,
    /// The model directory is missing, incomplete, corrupt, or does not fit the pipeline.
    Model,
    /// Inference or decoding failed while running.
    Runtime,
    /// The output could not be written.
    Output,
    /// The caller's cancel hook asked to stop.
    Cancelled,
}

impl ErrorKind {
    pub fn exit_code(self) -> i32 {
        match self {
            ErrorKind::Usage => 2,
            ErrorKind::Model => 3,
            ErrorKind::Runtime => 4,
            ErrorKind::Output => 5,
            ErrorKind::Cancelled => 130,
        }
    }
}

#[derive(Debug, Clone)]
pub struct SdError {
    pub kind: ErrorKind,
    /// The text, with request fields marked `«key»`: front ends word them ([`SdError::worded`]).
    pub message: String,
}

impl SdError {
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        SdError { kind, message: message.into() }
    }
    pub fn usage(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Usage, message)
    }
    pub fn model(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Model, message)
    }
    pub fn runtime(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Runtime, message)
    }
    pub fn output(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Output, message)
    }
    /// A bad value of request field `key`: "«key» must be …", unless `detail` already marks
    /// the fields it speaks of.
    pub fn field(key: &str, detail: &str) -> Self {
        if detail.contains('«') {
            Self::usage(detail)
        } else {
            Self::usage(format!("«{key}» {detail}"))
        }
    }
    /// The message with each `«key»` replaced by the front end's name for that field.
    pub fn worded(&self, name: impl Fn(&str) -> String) -> String {
        word(&self.message, name)
    }
    /// Prefixes where the error happened ("--prompts line 3: …"), keeping kind and fields.
    pub fn context(mut self, at: impl fmt::Display) -> Self {
        self.message = format!("{at}: {}", self.message);
        self
    }
}

impl fmt::Display for SdError {
    /// Fields named by their keys, as the library and the JSON request spell them.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.worded(|key| key.to_string()))
    }
}

impl std::error::Error for SdError {}

pub type Result<T> = std::result::Result<T, SdError>;

/// `text` with each request field marked `«key»` replaced by `name(key)`: errors and warnings
/// name fields this way, and each front end words them in its own terms.
pub fn word(text: &str, name: impl Fn(&str) -> String) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(start) = rest.find('«') {
        let Some(len) = rest[start..].find('»') else { break };
        out.push_str(&rest[..start]);
        out.push_str(&name(&rest[start + '«'.len_utf8()..start + len]));
        rest = &rest[start + len + '»'.len_utf8()..];
    }
    out.push_str(rest);
    out
}

/// Formats an error chain (tract's anyhow errors carry context layers) on one line.
pub fn chain(err: &dyn std::fmt::Debug) -> String {
    format!("{err:?}").replace('\n', " ").split_whitespace().collect::<Vec<_>>().join(" ")
}

/// The text of a panic's payload (panics carry a &str or a String), for front ends' panic hooks.
pub fn panic_message(info: &std::panic::PanicHookInfo) -> String {
    let payload = info.payload();
    payload
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_default()
}

/// Running out of memory ends as one `error:` line and exit 4, not as a wasm trap: std aborts
/// (`unreachable`) when an allocation fails, and its hook to change that is unstable. The
/// command line installs this allocator ([`ExitOnOom`]); allocations that handle failure
/// themselves (the memory probe, input pictures) run inside [`fallible`], where a failure is
/// returned to them.
pub struct ExitOnOom;

/// What every out-of-memory message advises.
pub const MORE_MEMORY: &str =
    "give the module more memory (Bacalhau: --memory 4GiB; wasmtime: -W max-memory-size=4294967296) or use a smaller size";

use std::alloc::GlobalAlloc;

static FALLIBLE: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

/// Runs `f` with failed allocations returned to it (as `try_reserve` errors) instead of ending the process.
pub fn fallible<T>(f: impl FnOnce() -> T) -> T {
    use std::sync::atomic::Ordering::SeqCst;
    FALLIBLE.fetch_add(1, SeqCst);
    let result = f();
    FALLIBLE.fetch_sub(1, SeqCst);
    result
}

impl ExitOnOom {
    fn check(ptr: *mut u8, size: usize) -> *mut u8 {
        if ptr.is_null() && FALLIBLE.load(std::sync::atomic::Ordering::SeqCst) == 0 {
            use std::io::Write;
            // No allocation from here on: write! formats straight into unbuffered stderr.
            let _ = writeln!(std::io::stderr(), "error: out of memory (an allocation of {size} bytes failed): {MORE_MEMORY}");
            std::process::exit(ErrorKind::Runtime.exit_code());
        }
        ptr
    }
}

unsafe impl GlobalAlloc for ExitOnOom {
    unsafe fn alloc(&self, layout: std::alloc::Layout) -> *mut u8 {
        Self::check(std::alloc::System.alloc(layout), layout.size())
    }
    unsafe fn alloc_zeroed(&self, layout: std::alloc::Layout) -> *mut u8 {
        Self::check(std::alloc::System.alloc_zeroed(layout), layout.size())
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: std::alloc::Layout) {
        std::alloc::System.dealloc(ptr, layout)
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: std::alloc::Layout, new_size: usize) -> *mut u8 {
        Self::check(std::alloc::System.realloc(ptr, layout, new_size), new_size)
    }
}
