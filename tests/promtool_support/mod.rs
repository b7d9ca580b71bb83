//! Prometheus's own checker, `promtool` (Debian's `prometheus` package, installed by
//! `scripts/bootstrap --tests`): the `/metrics` exposition and the shipped alert rules and scrape
//! configuration are checked by it, not by our reading of the formats.
#![allow(dead_code)]

use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};

/// The promtool binary: `VITRINE_PROMTOOL`, else `promtool` on the PATH.
pub fn promtool() -> String {
    let bin = std::env::var("VITRINE_PROMTOOL").unwrap_or_else(|_| "promtool".into());
    match Command::new(&bin).arg("--version").output() {
        Ok(o) if o.status.success() => bin,
        _ => panic!(
            "promtool is not installed: these tests check metrics and alert rules with Prometheus's \
             own tool. Run `scripts/bootstrap --tests` (installs Debian's prometheus package), \
             or set VITRINE_PROMTOOL to a promtool binary"
        ),
    }
}

/// What a promtool run said.
pub struct Report {
    pub success: bool,
    /// stdout and stderr together.
    pub output: String,
}

/// Runs `promtool ARGS` in `dir`, with `stdin` fed to it when given.
pub fn run(dir: &Path, args: &[&str], stdin: Option<&str>) -> Report {
    let mut child = Command::new(promtool())
        .args(args)
        .current_dir(dir)
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run promtool");
    if let Some(text) = stdin {
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(text.as_bytes())
            .expect("feed promtool");
    }
    let out = child.wait_with_output().expect("promtool");
    Report {
        success: out.status.success(),
        output: format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    }
}
