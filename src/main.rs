//! The `cairn` command: parses arguments, runs one command, maps errors to exit codes.

mod cli;

use std::process::ExitCode;

fn main() -> ExitCode {
    let args = match <cli::Cli as clap::Parser>::try_parse() {
        Ok(a) => a,
        Err(e) => {
            let _ = e.print();
            // Usage errors exit 1 like every other error (restic's convention).
            return ExitCode::from(if e.use_stderr() { 1 } else { 0 });
        }
    };
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("cairn: cannot start the async runtime: {e}");
            return ExitCode::from(1);
        }
    };
    rt.spawn(async {
        if tokio::signal::ctrl_c().await.is_ok() {
            eprintln!("\ncairn: interrupted");
            std::process::exit(130);
        }
    });
    let code = match cli::run(args, rt.handle().clone()) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("cairn: {}", cli::describe(&e));
            cli::exit_code(&e)
        }
    };
    rt.shutdown_background();
    ExitCode::from(code as u8)
}
