//! Maps errors to the documented exit codes and prints them as one sentence on stderr.

use std::process::ExitCode;

/// Exit code for a non-blocking operation that would have had to wait.
pub const WOULD_BLOCK: u8 = 3;
/// Exit code for a timed operation that ran out of time.
pub const TIMED_OUT: u8 = 4;

/// A command that left early and cleanly because it caught this signal (SIGINT, SIGTERM):
/// it exits with 128 + the signal's number, as a shell reports a process the signal ended,
/// and prints nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Interrupted(pub i32);

impl std::fmt::Display for Interrupted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "interrupted by signal {}", self.0)
    }
}

impl std::error::Error for Interrupted {}

/// Turns a command's result into the process exit code, printing the error if there is one.
/// A closed stdout (`BrokenPipe`, as with `ipckit recv ... | head`) counts as success.
pub fn report(result: anyhow::Result<()>) -> ExitCode {
    let err = match result {
        Ok(()) => return ExitCode::SUCCESS,
        Err(err) => err,
    };
    if let Some(io) = err.downcast_ref::<std::io::Error>() {
        if io.kind() == std::io::ErrorKind::BrokenPipe {
            return ExitCode::SUCCESS;
        }
    }
    if let Some(Interrupted(sig)) = err.downcast_ref::<Interrupted>() {
        return ExitCode::from(u8::try_from(128 + sig).unwrap_or(1));
    }
    let code = match err.downcast_ref::<ipckit::Error>() {
        Some(ipckit::Error::Full) | Some(ipckit::Error::Empty) => WOULD_BLOCK,
        Some(ipckit::Error::Timeout) => TIMED_OUT,
        _ => 1,
    };
    eprintln!("ipckit: {err:#}");
    ExitCode::from(code)
}
