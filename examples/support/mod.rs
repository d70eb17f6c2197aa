//! Shared by the demo and the benchmark (included with `#[path]`; not an example of its own).

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};

/// Builds the `dlr-poller` binary in the calling example's own profile and returns its path.
pub fn poller_binary() -> Result<PathBuf> {
    let exe = std::env::current_exe()?;
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .context("cannot locate the target directory")?;
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut build = Command::new(cargo);
    build.args(["build", "--quiet", "--bin", "dlr-poller"]);
    if !cfg!(debug_assertions) {
        build.arg("--release");
    }
    let status = build.status().context("building dlr-poller")?;
    if !status.success() {
        bail!("building dlr-poller failed");
    }
    Ok(profile_dir.join(format!("dlr-poller{}", std::env::consts::EXE_SUFFIX)))
}
