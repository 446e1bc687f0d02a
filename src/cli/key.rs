//! `cairn key`: list, add, remove and change the passwords (key files) of a
//! repository.

use std::io::{IsTerminal, Write};
use std::path::PathBuf;

use anyhow::{Context, Result, anyhow};
use cairn::Repository;
use cairn::crypto::KdfParams;
use cairn::repo::keys::KeyInfo;
use clap::{Args, Subcommand};

use super::{Global, Output, first_line};

#[derive(Args, Debug)]
pub struct KeyArgs {
    #[command(subcommand)]
    command: KeyCommand,
}

#[derive(Subcommand, Debug)]
enum KeyCommand {
    /// List the key files; `*` marks the one the password opened.
    List,
    /// Add a password: a new key file for the same repository.
    Add(NewKeyArgs),
    /// Remove a key file, so that its password no longer opens the repository.
    Remove {
        /// Key ID or unique prefix (see `cairn key list`).
        id: String,
    },
    /// Change the password: add a key for the new one, then remove the key in use.
    Passwd(NewKeyArgs),
}

#[derive(Args, Debug)]
struct NewKeyArgs {
    /// Read the new password from this file (first line). Otherwise
    /// CAIRN_NEW_PASSWORD, or a prompt on a terminal.
    #[arg(long, value_name = "FILE")]
    new_password_file: Option<PathBuf>,
    /// Argon2id memory for the new key, in KiB (default: as the key in use).
    #[arg(long, value_name = "KiB")]
    kdf_memory: Option<u32>,
    /// Argon2id passes for the new key (default: as the key in use).
    #[arg(long, value_name = "N")]
    kdf_iterations: Option<u32>,
}

pub fn run(g: &Global, out: &Output, a: KeyArgs) -> Result<i32> {
    match a.command {
        KeyCommand::List => list(g, out),
        KeyCommand::Add(n) => add(g, out, &n),
        KeyCommand::Remove { id } => remove(g, out, &id),
        KeyCommand::Passwd(n) => passwd(g, out, &n),
    }
}

fn key_json(k: &KeyInfo) -> serde_json::Value {
    let mut v = serde_json::json!({
        "id": k.id,
        "short_id": k.id.short(),
        "current": k.current,
        "damaged": k.file.is_err(),
    });
    match &k.file {
        Ok(f) => {
            v["created"] = serde_json::to_value(f.created).expect("times serialize");
            v["hostname"] = f.hostname.clone().into();
            v["username"] = f.username.clone().into();
            v["kdf"] = serde_json::json!({
                "algorithm": f.kdf.algorithm,
                "version": f.kdf.version,
                "memory_kib": f.kdf.memory_kib,
                "iterations": f.kdf.iterations,
                "parallelism": f.kdf.parallelism,
            });
        }
        Err(e) => v["error"] = e.to_string().into(),
    }
    v
}

fn list(g: &Global, out: &Output) -> Result<i32> {
    let repo = g.open()?;
    let keys = repo.keys()?;
    if out.json {
        out.json(&keys.iter().map(key_json).collect::<Vec<_>>());
        return Ok(0);
    }
    let mut w = std::io::stdout().lock();
    writeln!(w, "   {:<8}  {:<19}  {:<16}  {:<12}  KDF", "ID", "Created", "Host", "User")?;
    writeln!(w, "{}", "-".repeat(90))?;
    for k in &keys {
        let mark = if k.current { '*' } else { ' ' };
        match &k.file {
            Ok(f) => writeln!(
                w,
                "{mark}  {:<8}  {:<19}  {:<16}  {:<12}  {} m={} KiB t={} p={}",
                k.id.short(),
                f.created.with_timezone(&chrono::Local).format("%Y-%m-%d %H:%M:%S"),
                f.hostname,
                f.username,
                f.kdf.algorithm,
                f.kdf.memory_kib,
                f.kdf.iterations,
                f.kdf.parallelism
            )?,
            Err(e) => writeln!(w, "{mark}  {:<8}  damaged: {e}", k.id.short())?,
        }
    }
    writeln!(w, "{} keys", keys.len())?;
    Ok(0)
}

/// The new password: from `--new-password-file`, `CAIRN_NEW_PASSWORD`, or a
/// prompt (asked twice) on a terminal. Empty is refused.
fn new_password(a: &NewKeyArgs) -> Result<Vec<u8>> {
    let p = if let Some(f) = &a.new_password_file {
        first_line(std::fs::read(f).with_context(|| format!("reading new password file {}", f.display()))?)
    } else {
        match std::env::var("CAIRN_NEW_PASSWORD") {
            Ok(p) => p.into_bytes(),
            Err(std::env::VarError::NotUnicode(_)) => return Err(anyhow!("CAIRN_NEW_PASSWORD is not valid UTF-8")),
            Err(std::env::VarError::NotPresent) if std::io::stdin().is_terminal() => {
                let p = rpassword::prompt_password("enter new password: ").context("reading the new password")?;
                let again =
                    rpassword::prompt_password("enter the new password again: ").context("reading the new password")?;
                if again != p {
                    return Err(anyhow!("the new passwords do not match"));
                }
                p.into_bytes()
            }
            Err(std::env::VarError::NotPresent) => {
                return Err(anyhow!("no new password given: use --new-password-file or set CAIRN_NEW_PASSWORD"));
            }
        }
    };
    if p.is_empty() {
        return Err(anyhow!("an empty password is not allowed"));
    }
    Ok(p)
}

/// The KDF cost of the new key: the key in use's, with the options applied.
fn new_kdf(repo: &Repository, a: &NewKeyArgs) -> Result<KdfParams> {
    let mut kdf = repo.current_kdf().unwrap_or_default();
    kdf.memory_kib = a.kdf_memory.unwrap_or(kdf.memory_kib);
    kdf.iterations = a.kdf_iterations.unwrap_or(kdf.iterations);
    kdf.validate().map_err(|_| {
        anyhow!("--kdf-memory must be 8..=4194304 KiB (at least 8 per lane) and --kdf-iterations 1..=100")
    })?;
    Ok(kdf)
}

fn add(g: &Global, out: &Output, a: &NewKeyArgs) -> Result<i32> {
    let repo = g.open()?;
    let kdf = new_kdf(&repo, a)?;
    let password = new_password(a)?;
    let id = repo.add_key(&password, kdf).context("adding the key")?;
    if out.json {
        out.json(&serde_json::json!({"message_type": "key_added", "id": id, "short_id": id.short()}));
    } else {
        out.info(format!("added key {}", id.short()));
    }
    Ok(0)
}

fn remove(g: &Global, out: &Output, prefix: &str) -> Result<i32> {
    let repo = g.open()?;
    let id = repo.find_key(prefix)?;
    repo.remove_key(&id)?;
    if out.json {
        out.json(&serde_json::json!({"message_type": "key_removed", "id": id, "short_id": id.short()}));
    } else {
        out.info(format!("removed key {}", id.short()));
    }
    Ok(0)
}

fn passwd(g: &Global, out: &Output, a: &NewKeyArgs) -> Result<i32> {
    let mut repo = g.open()?;
    let kdf = new_kdf(&repo, a)?;
    let password = new_password(a)?;
    let (added, removed) = repo.change_password(&password, kdf)?;
    if out.json {
        out.json(&serde_json::json!({"message_type": "password_changed", "added": added, "removed": removed}));
    } else {
        out.info(format!("changed the password: added key {}, removed key {}", added.short(), removed.short()));
    }
    Ok(0)
}
