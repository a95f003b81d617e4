//! Finding the models in the model directory, and telling when their files change: each
//! model's [`Source`] (its directory or bare file, its metadata, its versions' files) and the
//! [`SourceStamp`] of those files. Only what lies inside the directory counts: links out of it
//! are skipped, so loading never reads outside the model directory.
//!
//! Layout (see docs/guide/model-directory.md):
//!
//! ```text
//! models/
//!   mnist/model.toml        optional metadata for every version of "mnist"
//!   mnist/1/model.onnx      version 1; the highest ready version is the default
//!   other.onnx              a bare file is version 1 of "other", metadata in other.toml
//!   digits_model.onnx       the seed's naming: served as "digits"
//! ```

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use aicp_core::{Error, Result, validate_model_name};

/// Where one model's files are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Source {
    /// Its directory, or its bare `.onnx` file.
    pub path: PathBuf,
    pub metadata: Option<PathBuf>,
    /// The other files beside model.toml in a model's directory (a tokenizer.json, warm-up
    /// samples): what model.toml may name, so a change to one reloads the model as a change
    /// to model.toml does.
    pub beside: Vec<PathBuf>,
    /// Each version's `.onnx` file.
    pub versions: BTreeMap<u64, PathBuf>,
}

/// What a file looked like: a rewrite changes its size or its modification time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct Stamp {
    len: u64,
    modified: Option<SystemTime>,
}

impl Stamp {
    fn of(path: &Path) -> Option<Self> {
        let metadata = std::fs::metadata(path).ok()?;
        Some(Self {
            len: metadata.len(),
            modified: metadata.modified().ok(),
        })
    }
}

/// What a model's files looked like: its metadata file (with the files beside it) and each
/// version's model file.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SourceStamp {
    metadata: (Option<Stamp>, u64),
    versions: BTreeMap<u64, Option<Stamp>>,
}

/// What one version depends on: the model's metadata file, a digest of the files beside it,
/// and its own model file.
pub(crate) type VersionStamp = ((Option<Stamp>, u64), Option<Stamp>);

impl SourceStamp {
    pub(crate) fn version(&self, version: u64) -> VersionStamp {
        (
            self.metadata,
            self.versions.get(&version).copied().flatten(),
        )
    }
}

impl Source {
    /// The size and modification time of each of its files now.
    pub fn stamp(&self) -> SourceStamp {
        let mut beside = std::hash::DefaultHasher::new();
        for file in &self.beside {
            std::hash::Hash::hash(&(file, Stamp::of(file)), &mut beside);
        }
        SourceStamp {
            metadata: (
                self.metadata.as_deref().and_then(Stamp::of),
                std::hash::Hasher::finish(&beside),
            ),
            versions: self
                .versions
                .iter()
                .map(|(&version, file)| (version, Stamp::of(file)))
                .collect(),
        }
    }
}

/// How loudly [`discover`] reports what it skips.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Report {
    Warn,
    Debug,
}

impl Report {
    fn skipping(self, path: &Path, why: impl std::fmt::Display) {
        match self {
            Self::Warn => tracing::warn!("skipping {}: {why}", path.display()),
            Self::Debug => tracing::debug!("skipping {}: {why}", path.display()),
        }
    }
}

/// The models in `dir`, by name. Only what lies inside `dir` counts: a symbolic link that leads
/// out of it is skipped (and reported), so loading never reads outside the model directory.
pub(crate) fn discover(dir: &Path, report: Report) -> Result<BTreeMap<String, Source>> {
    let read_error = |e: std::io::Error| {
        Error::invalid(format!(
            "cannot read model directory {}: {e}",
            dir.display()
        ))
    };
    let root = dir.canonicalize().map_err(read_error)?;
    let entries = std::fs::read_dir(dir).map_err(read_error)?;
    let mut paths: Vec<PathBuf> = entries.flatten().map(|e| e.path()).collect();
    // Directories first, so `mnist/` keeps the name "mnist" over a bare `mnist_model.onnx`.
    paths.sort_by_key(|p| (!p.is_dir(), p.clone()));
    let mut sources: BTreeMap<String, Source> = BTreeMap::new();
    for path in paths {
        let Some(file_name) = path.file_name().and_then(|n| n.to_str()) else {
            continue;
        };
        if file_name.starts_with('.') {
            continue;
        }
        if !inside(&root, &path) {
            report.skipping(&path, OUTSIDE);
            continue;
        }
        let found = if path.is_dir() {
            Some((file_name.to_string(), model_dir(&root, &path, report)))
        } else if let Some(stem) = file_name.strip_suffix(".onnx") {
            let name = match stem.strip_suffix("_model") {
                Some(short) if !short.is_empty() && !sources.contains_key(short) => short,
                _ => stem,
            };
            Some((name.to_string(), bare_file(&root, &path, stem, report)))
        } else {
            None
        };
        let Some((name, source)) = found else {
            continue;
        };
        if let Err(e) = validate_model_name(&name) {
            report.skipping(&path, e);
            continue;
        }
        if let Some(existing) = sources.get(&name) {
            let why = format!(
                "model {name:?} is already defined by {}",
                existing.path.display()
            );
            report.skipping(&path, why);
            continue;
        }
        sources.insert(name, source);
    }
    Ok(sources)
}

/// Whether `path`, with every symbolic link followed, lies inside `root` (canonical).
fn inside(root: &Path, path: &Path) -> bool {
    path.canonicalize().is_ok_and(|p| p.starts_with(root))
}

const OUTSIDE: &str = "it leads outside the model directory";

/// The file at `path` if it is a regular file inside `root`.
fn file_inside(root: &Path, path: PathBuf, report: Report) -> Option<PathBuf> {
    if !path.is_file() {
        return None;
    }
    if !inside(root, &path) {
        report.skipping(&path, OUTSIDE);
        return None;
    }
    Some(path)
}

/// A model directory: optional `model.toml`, version directories with a `model.onnx`.
fn model_dir(root: &Path, dir: &Path, report: Report) -> Source {
    let mut versions = BTreeMap::new();
    if let Ok(entries) = std::fs::read_dir(dir) {
        for entry in entries.flatten() {
            let Some(version) = entry
                .file_name()
                .to_str()
                .and_then(|n| n.parse::<u64>().ok())
            else {
                continue;
            };
            if let Some(file) = file_inside(root, entry.path().join("model.onnx"), report) {
                versions.insert(version, file);
            }
        }
    }
    let metadata = file_inside(root, dir.join("model.toml"), report);
    // Only a model with a model.toml names files beside it.
    let mut beside: Vec<PathBuf> = match &metadata {
        None => Vec::new(),
        Some(toml) => std::fs::read_dir(dir)
            .into_iter()
            .flatten()
            .flatten()
            .map(|entry| entry.path())
            .filter(|path| path != toml && path.is_file() && inside(root, path))
            // An editor's swap file or a copy's hidden part is not one model.toml names.
            .filter(|path| {
                path.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| !n.starts_with('.'))
            })
            .collect(),
    };
    beside.sort();
    Source {
        path: dir.to_path_buf(),
        metadata,
        beside,
        versions,
    }
}

/// A bare `.onnx` file: version 1, metadata in `<stem>.toml` beside it.
fn bare_file(root: &Path, file: &Path, stem: &str, report: Report) -> Source {
    Source {
        path: file.to_path_buf(),
        metadata: file_inside(root, file.with_file_name(format!("{stem}.toml")), report),
        beside: Vec::new(),
        versions: BTreeMap::from([(1, file.to_path_buf())]),
    }
}
