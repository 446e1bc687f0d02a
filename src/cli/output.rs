//! Rendering: human text or JSON on stdout, warnings on stderr, a progress line on
//! a terminal.

use std::io::{IsTerminal, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use cairn::Progress;
use cairn::util::human_bytes;

/// How to print.
pub struct Output {
    /// JSON on stdout instead of text.
    pub json: bool,
    /// Only errors.
    pub quiet: bool,
    /// Extra detail.
    pub verbose: u8,
}

impl Output {
    pub fn new(json: bool, quiet: bool, verbose: u8) -> Output {
        Output { json, quiet, verbose }
    }

    /// A line of human output (suppressed by --quiet and --json).
    pub fn info(&self, msg: impl AsRef<str>) {
        if !self.quiet && !self.json {
            // A closed pipe (`| head`) is not an error worth a panic.
            let _ = writeln!(std::io::stdout().lock(), "{}", msg.as_ref());
        }
    }

    /// A JSON document on stdout.
    pub fn json(&self, v: &impl serde::Serialize) {
        let mut out = std::io::stdout().lock();
        let _ = serde_json::to_writer(&mut out, v);
        let _ = writeln!(out);
    }

    /// Whether a progress line should be drawn.
    pub fn show_progress(&self) -> bool {
        !self.quiet && !self.json && std::io::stderr().is_terminal()
    }

    /// Draws a progress line every 250 ms until `done` is set.
    pub fn progress_loop(&self, p: &Progress, done: &AtomicBool, verb: &str) {
        let start = Instant::now();
        while !done.load(Ordering::Relaxed) {
            std::thread::sleep(Duration::from_millis(250));
            let (bytes, files) = (p.bytes.load(Ordering::Relaxed), p.files.load(Ordering::Relaxed));
            let total = p.total_bytes.load(Ordering::Relaxed);
            let secs = start.elapsed().as_secs_f64().max(0.001);
            let rate = bytes as f64 / secs;
            let mut line = format!(
                "[{}] {verb} {files} files, {} ({}/s)",
                clock(secs),
                human_bytes(bytes),
                human_bytes(rate as u64)
            );
            if total > bytes && rate > 0.0 {
                let pct = bytes as f64 * 100.0 / total as f64;
                line.push_str(&format!(
                    " of {} {pct:.1}% ETA {}",
                    human_bytes(total),
                    clock((total - bytes) as f64 / rate)
                ));
            }
            eprint!("\r\x1b[2K{line}");
        }
        eprint!("\r\x1b[2K");
    }
}

fn clock(secs: f64) -> String {
    let s = secs as u64;
    format!("{}:{:02}:{:02}", s / 3600, s / 60 % 60, s % 60)
}

impl cairn::Report for Output {
    fn warn(&self, msg: &str) {
        if self.show_progress() {
            eprint!("\r\x1b[2K");
        }
        eprintln!("{msg}");
    }

    fn detail(&self, msg: &str) {
        if self.verbose > 0 {
            self.info(msg);
        }
    }
}

/// Runs `f` while drawing progress on a terminal.
pub fn with_progress<T>(out: &Output, p: &Progress, verb: &str, f: impl FnOnce() -> T) -> T {
    if !out.show_progress() {
        return f();
    }
    let done = AtomicBool::new(false);
    std::thread::scope(|s| {
        s.spawn(|| out.progress_loop(p, &done, verb));
        let r = f();
        done.store(true, Ordering::Relaxed);
        r
    })
}
