//! The repository's `scripts/` helpers that some harnesses and `deai calibrate` drive
//! (llama.cpp through llama-cpp-python, headless Chromium through selenium).

use anyhow::{bail, Context, Result};
use std::path::{Path, PathBuf};

/// The path of a helper script in the repository's `scripts/` folder.
pub(crate) fn script_path(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../scripts")
        .join(name)
}

/// The path of a helper script in `scripts/`, or an error if it is missing.
pub fn helper_script(name: &str) -> Result<PathBuf> {
    let path = script_path(name);
    if !path.is_file() {
        bail!(
            "{} not found: run deai from a checkout of its repository",
            path.display()
        );
    }
    Ok(path)
}

/// Run a helper script of `scripts/` (`py script INPUT_JSON`) and return the last line it
/// printed, which is its JSON answer; on failure, the tail of its stderr.
pub fn run_python_helper(
    py: &Path,
    script: &str,
    input: &serde_json::Value,
    what: &str,
) -> Result<String> {
    let script = helper_script(script)?;
    let out = std::process::Command::new(py)
        .arg(&script)
        .arg(input.to_string())
        .output()
        .with_context(|| format!("running {} {}", py.display(), script.display()))?;
    if !out.status.success() {
        let tail: Vec<String> = String::from_utf8_lossy(&out.stderr)
            .lines()
            .rev()
            .take(5)
            .map(str::to_string)
            .collect();
        bail!("{what} failed: {}", tail.join(" | "));
    }
    Ok(String::from_utf8_lossy(&out.stdout)
        .lines()
        .last()
        .unwrap_or("")
        .to_string())
}
