//! The headless subcommands (contract in DESIGN.md).

/// Runs the command line; returns the process exit code.
pub fn main() -> i32 {
    eprintln!("convscope: no subcommands yet");
    2
}
