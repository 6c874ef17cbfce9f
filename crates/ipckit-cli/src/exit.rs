//! Maps errors to the documented exit codes and prints them as one sentence on stderr.

use std::process::ExitCode;

/// Exit code for a non-blocking operation that would have had to wait.
pub const WOULD_BLOCK: u8 = 3;
/// Exit code for a timed operation that ran out of time.
pub const TIMED_OUT: u8 = 4;

/// A usage error found after parsing (an unknown mechanism name...): exit code 2.
#[derive(Debug)]
pub struct Usage(pub String);

impl std::fmt::Display for Usage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Usage {}

/// Builds a usage error.
pub fn usage(message: String) -> anyhow::Error {
    Usage(message).into()
}

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
    if err.downcast_ref::<Usage>().is_some() {
        eprintln!("ipckit: {err:#}");
        return ExitCode::from(2);
    }
    let code = match err.downcast_ref::<ipckit::Error>() {
        Some(ipckit::Error::Full) | Some(ipckit::Error::Empty) => WOULD_BLOCK,
        Some(ipckit::Error::Timeout) => TIMED_OUT,
        _ => 1,
    };
    eprintln!("ipckit: {err:#}");
    ExitCode::from(code)
}
