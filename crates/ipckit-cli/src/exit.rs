//! Maps errors to the documented exit codes and prints them as one sentence on stderr.

use std::process::ExitCode;

/// Exit code for a non-blocking operation that would have had to wait.
pub const WOULD_BLOCK: u8 = 3;
/// Exit code for a timed operation that ran out of time.
pub const TIMED_OUT: u8 = 4;

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
    let code = match err.downcast_ref::<ipckit::Error>() {
        Some(ipckit::Error::Full) | Some(ipckit::Error::Empty) => WOULD_BLOCK,
        Some(ipckit::Error::Timeout) => TIMED_OUT,
        _ => 1,
    };
    eprintln!("ipckit: {err:#}");
    ExitCode::from(code)
}
