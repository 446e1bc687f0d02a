//! Argument parsing, password handling and dispatch. Commands live one per file.

mod backup;
mod browse;
mod check;
mod init;
mod output;
mod restore;

use std::io::IsTerminal;
use std::path::PathBuf;

use anyhow::{Context, Result, anyhow};
use cairn::Repository;
use clap::{Parser, Subcommand};

pub use output::Output;

/// Encrypted, deduplicating backups.
#[derive(Parser, Debug)]
#[command(name = "cairn", version, about, max_term_width = 100)]
pub struct Cli {
    /// Repository location: a path, local:PATH or swift:CONTAINER[:/PREFIX].
    #[arg(short = 'r', long = "repo", env = "CAIRN_REPOSITORY", global = true)]
    repo: Option<String>,
    /// Read the password from this file (first line).
    #[arg(long, env = "CAIRN_PASSWORD_FILE", global = true)]
    password_file: Option<PathBuf>,
    /// Run this shell command and use its output as the password.
    #[arg(long, env = "CAIRN_PASSWORD_COMMAND", global = true)]
    password_command: Option<String>,
    /// Backend option KEY=VALUE (repeatable): swift.connections, swift.storage-policy,
    /// swift.page-limit, retry.attempts, retry.max-delay.
    #[arg(short = 'o', long = "option", value_name = "KEY=VALUE", global = true)]
    options: Vec<String>,
    /// Machine-readable JSON output.
    #[arg(long, global = true)]
    json: bool,
    /// Print only errors.
    #[arg(short, long, global = true)]
    quiet: bool,
    /// Print more detail (repeat for more).
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    verbose: u8,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Create a new repository.
    Init(init::InitArgs),
    /// Back up files and directories (only what changed is stored).
    Backup(backup::BackupArgs),
    /// List snapshots.
    Snapshots(browse::SnapshotsArgs),
    /// List the files in a snapshot.
    Ls(browse::LsArgs),
    /// Restore a snapshot, or part of it.
    Restore(restore::RestoreArgs),
    /// Verify the repository's integrity.
    Check(check::CheckArgs),
    /// Print a decrypted repository object.
    Cat(browse::CatArgs),
    /// Show sizes and deduplication.
    Stats(browse::StatsArgs),
}

/// Settings every command shares.
pub struct Global {
    repo: Option<String>,
    options: Vec<(String, String)>,
    password_file: Option<PathBuf>,
    password_command: Option<String>,
    rt: tokio::runtime::Handle,
}

impl Global {
    fn location(&self) -> Result<&str> {
        self.repo.as_deref().ok_or_else(|| anyhow!("no repository given: use -r/--repo or set CAIRN_REPOSITORY"))
    }

    /// The password from a file, a command, the environment or a prompt (in that
    /// order: an explicit file or command wins over `CAIRN_PASSWORD`).
    fn password(&self, confirm: bool) -> Result<Vec<u8>> {
        let p = self.password_source(confirm)?;
        if p.is_empty() {
            return Err(anyhow!("an empty password is not allowed"));
        }
        Ok(p)
    }

    fn password_source(&self, confirm: bool) -> Result<Vec<u8>> {
        if let Some(f) = &self.password_file {
            let s = std::fs::read(f).with_context(|| format!("reading password file {}", f.display()))?;
            return Ok(first_line(s));
        }
        if let Some(cmd) = &self.password_command {
            let out = std::process::Command::new("sh")
                .arg("-c")
                .arg(cmd)
                .stderr(std::process::Stdio::inherit())
                .output()
                .context("running the password command")?;
            if !out.status.success() {
                return Err(anyhow!("the password command failed ({})", out.status));
            }
            return Ok(first_line(out.stdout));
        }
        if let Ok(p) = std::env::var("CAIRN_PASSWORD") {
            return Ok(p.into_bytes());
        }
        if std::io::stdin().is_terminal() {
            let p = rpassword::prompt_password("enter repository password: ").context("reading the password")?;
            if confirm {
                let again = rpassword::prompt_password("enter the password again: ").context("reading the password")?;
                if again != p {
                    return Err(anyhow!("the passwords do not match"));
                }
            }
            return Ok(p.into_bytes());
        }
        Err(anyhow!("no password given: set CAIRN_PASSWORD, CAIRN_PASSWORD_FILE or CAIRN_PASSWORD_COMMAND"))
    }

    /// Opens the repository.
    fn open(&self) -> Result<Repository> {
        let backend = cairn::backend::open(self.location()?, &self.options)?;
        let password = self.password(false)?;
        Ok(Repository::open(backend, self.rt.clone(), &password)?)
    }
}

fn first_line(mut s: Vec<u8>) -> Vec<u8> {
    if let Some(i) = s.iter().position(|&b| b == b'\n') {
        s.truncate(i);
    }
    if s.last() == Some(&b'\r') {
        s.pop();
    }
    s
}

/// Runs the parsed command; returns the exit code.
pub fn run(cli: Cli, rt: tokio::runtime::Handle) -> Result<i32> {
    let out = Output::new(cli.json, cli.quiet, cli.verbose);
    let mut options = Vec::new();
    for o in &cli.options {
        let (k, v) = o.split_once('=').ok_or_else(|| anyhow!("-o {o:?}: expected KEY=VALUE"))?;
        options.push((k.trim().to_string(), v.trim().to_string()));
    }
    let g = Global {
        repo: cli.repo,
        options,
        password_file: cli.password_file,
        password_command: cli.password_command,
        rt,
    };
    match cli.command {
        Command::Init(a) => init::run(&g, &out, a),
        Command::Backup(a) => backup::run(&g, &out, a),
        Command::Snapshots(a) => browse::snapshots(&g, &out, a),
        Command::Ls(a) => browse::ls(&g, &out, a),
        Command::Restore(a) => restore::run(&g, &out, a),
        Command::Check(a) => check::run(&g, &out, a),
        Command::Cat(a) => browse::cat(&g, &out, a),
        Command::Stats(a) => browse::stats(&g, &out, a),
    }
}

/// One line for the user: the error and its causes.
pub fn describe(e: &anyhow::Error) -> String {
    let mut s = e.to_string();
    for cause in e.chain().skip(1) {
        let c = cause.to_string();
        if !s.contains(&c) {
            s.push_str(": ");
            s.push_str(&c);
        }
    }
    s.replace('\n', " ")
}

/// Whether the error is only stdout having been closed by the reader (`| head`).
pub fn is_broken_pipe(e: &anyhow::Error) -> bool {
    e.chain().any(|c| c.downcast_ref::<std::io::Error>().is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe))
}

/// The documented exit code for an error.
pub fn exit_code(e: &anyhow::Error) -> i32 {
    e.chain().find_map(|c| c.downcast_ref::<cairn::Error>()).map_or(1, cairn::Error::exit_code)
}

/// Parses a size such as `512K`, `1M`, `8MiB` or `4096` into bytes.
pub fn parse_size(s: &str) -> Result<u64> {
    let t = s.trim();
    let digits = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (n, unit) = t.split_at(digits);
    let n: u64 = n.parse().map_err(|_| anyhow!("invalid size {s:?}"))?;
    let mult = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" | "kib" => 1 << 10,
        "m" | "mb" | "mib" => 1 << 20,
        "g" | "gb" | "gib" => 1 << 30,
        "t" | "tb" | "tib" => 1 << 40,
        _ => return Err(anyhow!("invalid size unit in {s:?}")),
    };
    n.checked_mul(mult).ok_or_else(|| anyhow!("size {s:?} is too large"))
}
