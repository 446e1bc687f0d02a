//! Argument parsing, password handling and dispatch. Commands live one per file.

mod backup;
mod browse;
mod check;
mod copy;
mod diff;
mod dump;
mod find;
mod forget;
mod init;
mod key;
mod output;
mod prune;
mod repair;
mod restore;
mod tag;

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
    /// Repository location: a path, local:PATH, swift:CONTAINER[:/PREFIX] or
    /// sftp:[USER@]HOST:PATH.
    #[arg(short = 'r', long = "repo", env = "CAIRN_REPOSITORY", global = true)]
    repo: Option<String>,
    /// Read the password from this file (first line).
    #[arg(long, env = "CAIRN_PASSWORD_FILE", global = true)]
    password_file: Option<PathBuf>,
    /// Run this shell command and use its output as the password.
    #[arg(long, env = "CAIRN_PASSWORD_COMMAND", global = true)]
    password_command: Option<String>,
    /// Backend option KEY=VALUE (repeatable): swift.connections, swift.storage-policy,
    /// swift.page-limit, sftp.args, sftp.command, sftp.connections, sftp.timeout,
    /// retry.attempts, retry.max-delay.
    #[arg(short = 'o', long = "option", value_name = "KEY=VALUE", global = true)]
    options: Vec<String>,
    /// Keep the local cache of remote repositories here (default
    /// $XDG_CACHE_HOME/cairn or ~/.cache/cairn).
    #[arg(long, env = "CAIRN_CACHE_DIR", global = true, value_name = "DIR")]
    cache_dir: Option<PathBuf>,
    /// Do not use or write the local cache.
    #[arg(long, global = true)]
    no_cache: bool,
    /// Memory for the index (40 bytes per blob); a larger index is kept as a
    /// sorted table on disk, in the cache.
    #[arg(long, env = "CAIRN_INDEX_MEMORY", global = true, value_name = "SIZE", default_value = "256M")]
    index_memory: String,
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
    /// Remove snapshots by a retention policy or by ID (data stays until prune).
    Forget(forget::ForgetArgs),
    /// Remove data that no snapshot uses and reclaim its space.
    Prune(prune::PruneArgs),
    /// Remove stale locks (those of processes that are gone); --remove-all for all.
    Unlock(prune::UnlockArgs),
    /// Show what changed between two snapshots.
    Diff(diff::DiffArgs),
    /// Find files by name across snapshots.
    Find(find::FindArgs),
    /// Write a file to stdout, or a directory as a tar or zip stream.
    Dump(dump::DumpArgs),
    /// Add, remove or set the tags of snapshots.
    Tag(tag::TagArgs),
    /// Manage the repository's passwords.
    Key(key::KeyArgs),
    /// Copy snapshots from another repository into this one.
    Copy(copy::CopyArgs),
    /// Repair a damaged repository (`repair index`).
    Repair(repair::RepairArgs),
}

/// A second repository to read from, with its own password settings.
#[derive(clap::Args, Debug, Default)]
pub struct FromRepo {
    /// The source repository.
    #[arg(long, env = "CAIRN_FROM_REPOSITORY", value_name = "LOCATION")]
    from_repo: Option<String>,
    /// Read the source repository's password from this file.
    #[arg(long, env = "CAIRN_FROM_PASSWORD_FILE", value_name = "FILE")]
    from_password_file: Option<PathBuf>,
    /// Run this command for the source repository's password.
    #[arg(long, env = "CAIRN_FROM_PASSWORD_COMMAND", value_name = "COMMAND")]
    from_password_command: Option<String>,
}

/// Settings every command shares.
pub struct Global {
    repo: Option<String>,
    options: Vec<(String, String)>,
    password_file: Option<PathBuf>,
    password_command: Option<String>,
    /// Where the cache of remote repositories lives (None: no cache).
    cache_base: Option<PathBuf>,
    /// Index memory budget in bytes.
    index_memory: usize,
    rt: tokio::runtime::Handle,
}

impl Global {
    fn location(&self) -> Result<&str> {
        self.repo.as_deref().ok_or_else(|| anyhow!("no repository given: use -r/--repo or set CAIRN_REPOSITORY"))
    }

    /// The password from a file, a command, the environment or a prompt (in that
    /// order: an explicit file or command wins over `CAIRN_PASSWORD`).
    fn password(&self, confirm: bool) -> Result<Vec<u8>> {
        password_from(
            self.password_file.as_deref(),
            self.password_command.as_deref(),
            "CAIRN_PASSWORD",
            "enter repository password: ",
            confirm,
        )
    }

    /// Opens the repository.
    fn open(&self) -> Result<Repository> {
        let location = self.location()?;
        let backend = cairn::backend::open(location, &self.options)?;
        let password = self.password(false)?;
        let mut repo = Repository::open(backend, self.rt.clone(), &password)?;
        self.attach_cache(&mut repo, location);
        Ok(repo)
    }

    /// Gives a remote repository its local cache of repository files (a local
    /// one needs none) and any repository the place for an index larger than
    /// the memory budget. A cache that cannot be made is a warning, not an error.
    fn attach_cache(&self, repo: &mut Repository, location: &str) {
        let dir = self.cache_base.as_ref().map(|b| cairn::cache::dir_of(b, &repo.config().id));
        if let Some(base) = &self.cache_base
            && (location.starts_with("swift:") || location.starts_with("sftp:"))
        {
            match cairn::cache::Cache::open(base, &repo.config().id) {
                Ok(c) => repo.set_cache(Some(c)),
                Err(e) => eprintln!("warning: no local cache ({}: {e})", base.display()),
            }
        }
        let settings = cairn::repo::IndexSettings { budget: self.index_memory, dir };
        repo.set_index_settings(settings);
    }

    /// Opens a second repository (the source of `copy`, `init
    /// --copy-chunker-params`), with its own password settings.
    fn open_from(&self, from: &FromRepo) -> Result<Repository> {
        let location = from.from_repo.as_deref().ok_or_else(|| anyhow!("no source repository: use --from-repo"))?;
        let backend = cairn::backend::open(location, &self.options)?;
        let password = password_from(
            from.from_password_file.as_deref(),
            from.from_password_command.as_deref(),
            "CAIRN_FROM_PASSWORD",
            "enter the source repository's password: ",
            false,
        )?;
        let mut repo = Repository::open(backend, self.rt.clone(), &password)
            .map_err(anyhow::Error::from)
            .with_context(|| format!("opening the source repository {location}"))?;
        self.attach_cache(&mut repo, location);
        Ok(repo)
    }
}

/// A password from `file`, `command`, the variable `env` or a prompt, in that
/// order; empty ones are refused.
pub fn password_from(
    file: Option<&std::path::Path>,
    command: Option<&str>,
    env: &str,
    prompt: &str,
    confirm: bool,
) -> Result<Vec<u8>> {
    let read = || -> Result<Vec<u8>> {
        if let Some(f) = file {
            let s = std::fs::read(f).with_context(|| format!("reading password file {}", f.display()))?;
            return Ok(first_line(s));
        }
        if let Some(cmd) = command {
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
        if let Ok(p) = std::env::var(env) {
            return Ok(p.into_bytes());
        }
        if std::io::stdin().is_terminal() {
            let p = rpassword::prompt_password(prompt).context("reading the password")?;
            if confirm {
                let again = rpassword::prompt_password("enter the password again: ").context("reading the password")?;
                if again != p {
                    return Err(anyhow!("the passwords do not match"));
                }
            }
            return Ok(p.into_bytes());
        }
        Err(anyhow!("no password given: set {env}, {env}_FILE or {env}_COMMAND"))
    };
    let p = read()?;
    if p.is_empty() {
        return Err(anyhow!("an empty password is not allowed"));
    }
    Ok(p)
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
        cache_base: if cli.no_cache { None } else { cli.cache_dir.or_else(cairn::cache::default_base) },
        index_memory: usize::try_from(parse_size(&cli.index_memory).context("--index-memory")?)
            .context("--index-memory")?,
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
        Command::Forget(a) => forget::run(&g, &out, a),
        Command::Prune(a) => prune::run(&g, &out, a),
        Command::Unlock(a) => prune::unlock(&g, &out, a),
        Command::Repair(a) => repair::run(&g, &out, a),
        Command::Diff(a) => diff::run(&g, &out, a),
        Command::Find(a) => find::run(&g, &out, a),
        Command::Dump(a) => dump::run(&g, &out, a),
        Command::Tag(a) => tag::run(&g, &out, a),
        Command::Key(a) => key::run(&g, &out, a),
        Command::Copy(a) => copy::run(&g, &out, a),
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

/// A reader's lease on `repo` (restore, check, dump, copy's source): reading
/// without one, on storage that cannot be written, is a warning naming `which`
/// repository ("" for the only one).
pub fn reader_lease(repo: &Repository, which: &str) -> Option<cairn::repo::lock::LeaseGuard> {
    let (lease, why) = repo.lock_reader();
    if let Some(w) = why {
        eprintln!("warning: {which}{w}");
    }
    lease
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
