//! The `cairn` command: parses arguments, runs one command, maps errors to exit codes.

mod cli;

use std::process::ExitCode;

/// Fixes glibc's mmap threshold at 4 MiB. By default glibc raises it to the size of
/// the largest block freed so far (up to 32 MiB), after which the multi-MiB pack and
/// read buffers that worker threads allocate and free stay in per-thread arenas:
/// measured on a 1 GiB backup, peak memory fell from ~140 MiB to ~80 MiB.
#[allow(unsafe_code)]
fn tune_allocator() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only sets an allocator parameter; it is called once, before
    // any other thread exists.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 4 << 20);
    }
}

fn main() -> ExitCode {
    tune_allocator();
    let args = match <cli::Cli as clap::Parser>::try_parse() {
        Ok(a) => a,
        Err(e) => {
            let _ = e.print();
            // Usage errors exit 1 like every other error (restic's convention).
            return ExitCode::from(if e.use_stderr() { 1 } else { 0 });
        }
    };
    let rt = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("cairn: cannot start the async runtime: {e}");
            return ExitCode::from(1);
        }
    };
    // First Ctrl-C (or SIGTERM): stop at the next safe point, releasing locks and
    // leaving the repository consistent. Second: exit at once.
    rt.spawn(async {
        use tokio::signal::unix::{SignalKind, signal};
        let (Ok(mut int), Ok(mut term)) = (signal(SignalKind::interrupt()), signal(SignalKind::terminate())) else {
            return;
        };
        let mut first = true;
        loop {
            tokio::select! {
                _ = int.recv() => {},
                _ = term.recv() => {},
            }
            if !first {
                std::process::exit(130);
            }
            first = false;
            eprintln!("\ncairn: interrupted, stopping (interrupt again to exit at once)");
            cairn::interrupt();
        }
    });
    let code = match cli::run(args, rt.handle().clone()) {
        Ok(code) => code,
        Err(e) if cli::is_broken_pipe(&e) => 0,
        Err(e) => {
            eprintln!("cairn: {}", cli::describe(&e));
            cli::exit_code(&e)
        }
    };
    // Let uploads that are under way finish (or clean up their temporary files).
    rt.shutdown_timeout(std::time::Duration::from_secs(10));
    ExitCode::from(code as u8)
}
