//! Where a trained model is written: a new version directory in a model repository
//! (`models/<name>/<version>/model.onnx`, never replacing a version that exists), or an explicit
//! `PATH.onnx`. Files appear whole: each is written under a temporary name and renamed.

use std::io::Write;
use std::path::{Path, PathBuf};

/// Where to write a model.
#[derive(Debug, Clone)]
pub enum Destination {
    /// `models_dir/<name>/<next free version>/model.onnx`, metadata in
    /// `models_dir/<name>/model.toml`.
    Repository { models_dir: PathBuf, name: String },
    /// This exact `.onnx` path, metadata beside it as `<stem>.toml`.
    File(PathBuf),
}

/// The files of one written model.
#[derive(Debug, Clone)]
pub struct ModelFiles {
    pub onnx: Vec<u8>,
    pub metadata_toml: String,
    pub report_json: String,
    pub plot_png: Vec<u8>,
}

/// Where each file went.
#[derive(Debug, Clone)]
pub struct Written {
    pub model: PathBuf,
    /// `None` when a `model.toml` already existed and was kept.
    pub metadata: Option<PathBuf>,
    pub report: PathBuf,
    pub plot: PathBuf,
    pub version: Option<u64>,
}

pub use aicp_core::validate_model_name;

impl Destination {
    /// Writes the model's files and returns where they went.
    pub fn write(&self, files: &ModelFiles) -> anyhow::Result<Written> {
        match self {
            Self::Repository { models_dir, name } => {
                validate_model_name(name)?;
                write_version(&models_dir.join(name), files)
            }
            Self::File(path) => write_file(path, files),
        }
    }

    /// The version the next model will get, when writing into a repository.
    pub fn next_version(&self) -> anyhow::Result<Option<u64>> {
        match self {
            Self::Repository { models_dir, name } => {
                Ok(Some(next_free_version(&models_dir.join(name))?))
            }
            Self::File(_) => Ok(None),
        }
    }
}

/// The version after the highest numbered one in `model_dir` (1 when there is none).
pub fn next_free_version(model_dir: &Path) -> anyhow::Result<u64> {
    let entries = match std::fs::read_dir(model_dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(1),
        Err(e) => anyhow::bail!("cannot read {}: {e}", model_dir.display()),
    };
    let highest = entries
        .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse::<u64>().ok())
        .max()
        .unwrap_or(0);
    Ok(highest + 1)
}

fn write_version(model_dir: &Path, files: &ModelFiles) -> anyhow::Result<Written> {
    let written = write_new_version(
        model_dir,
        &[
            ("model.onnx", &files.onnx),
            ("training_report.json", files.report_json.as_bytes()),
            ("training_report.png", &files.plot_png),
        ],
        &files.metadata_toml,
    )?;
    Ok(Written {
        model: written.dir.join("model.onnx"),
        metadata: written.metadata,
        report: written.dir.join("training_report.json"),
        plot: written.dir.join("training_report.png"),
        version: Some(written.version),
    })
}

/// A version directory [`write_new_version`] made.
#[derive(Debug, Clone)]
pub struct NewVersion {
    pub dir: PathBuf,
    pub version: u64,
    /// The model's `model.toml`, when it was written (`None`: one existed and was kept).
    pub metadata: Option<PathBuf>,
}

/// Writes `files` (name, contents) as the next free version of the model in `model_dir`, all
/// at once, and `metadata_toml` as its `model.toml` unless one exists.
pub fn write_new_version(
    model_dir: &Path,
    files: &[(&str, &[u8])],
    metadata_toml: &str,
) -> anyhow::Result<NewVersion> {
    std::fs::create_dir_all(model_dir)
        .map_err(|e| anyhow::anyhow!("cannot create {}: {e}", model_dir.display()))?;
    // Everything is written into a hidden staging directory first, so a model server watching
    // the repository never sees a version without all its files.
    let staging = tempfile::Builder::new()
        .prefix(".staging-")
        .tempdir_in(model_dir)?;
    // A temporary directory is private; a model is read by servers running as other users.
    #[cfg(unix)]
    std::fs::set_permissions(
        staging.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )?;
    for (name, bytes) in files {
        std::fs::write(staging.path().join(name), bytes)?;
    }

    // Another process may take a version between our scan and our rename: then take the next.
    let mut version = next_free_version(model_dir)?;
    let dir = loop {
        let candidate = model_dir.join(version.to_string());
        if !candidate.exists() {
            match std::fs::rename(staging.path(), &candidate) {
                Ok(()) => break candidate,
                Err(e) if candidate.exists() => {
                    tracing::debug!("version {version} was taken meanwhile: {e}");
                }
                Err(e) => anyhow::bail!("cannot create {}: {e}", candidate.display()),
            }
        }
        version += 1;
    };
    let metadata_path = model_dir.join("model.toml");
    let metadata = write_new(&metadata_path, metadata_toml.as_bytes())?.then_some(metadata_path);
    Ok(NewVersion {
        dir,
        version,
        metadata,
    })
}

fn write_file(path: &Path, files: &ModelFiles) -> anyhow::Result<Written> {
    if path.extension().and_then(|e| e.to_str()) != Some("onnx") {
        anyhow::bail!("--output must name an .onnx file, got {}", path.display());
    }
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    std::fs::create_dir_all(&dir)
        .map_err(|e| anyhow::anyhow!("cannot create {}: {e}", dir.display()))?;
    let stem = path
        .file_stem()
        .and_then(|s| s.to_str())
        .ok_or_else(|| anyhow::anyhow!("--output {} has no file name", path.display()))?;
    let metadata = path.with_extension("toml");
    let report_path = dir.join(format!("{stem}.training_report.json"));
    let plot = dir.join(format!("{stem}.training_report.png"));
    replace(path, &files.onnx)?;
    replace(&metadata, files.metadata_toml.as_bytes())?;
    replace(&report_path, files.report_json.as_bytes())?;
    replace(&plot, &files.plot_png)?;
    Ok(Written {
        model: path.to_path_buf(),
        metadata: Some(metadata),
        report: report_path,
        plot,
        version: None,
    })
}

/// Writes `path` whole (temporary file, then rename), replacing what was there.
fn replace(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    temp_beside(path, bytes)?
        .persist(path)
        .map_err(|e| anyhow::anyhow!("cannot write {}: {}", path.display(), e.error))?;
    Ok(())
}

/// Writes `path` whole unless it exists; returns whether it was written.
fn write_new(path: &Path, bytes: &[u8]) -> anyhow::Result<bool> {
    match temp_beside(path, bytes)?.persist_noclobber(path) {
        Ok(_) => Ok(true),
        Err(e) if path.exists() => {
            drop(e);
            Ok(false)
        }
        Err(e) => anyhow::bail!("cannot write {}: {}", path.display(), e.error),
    }
}

fn temp_beside(path: &Path, bytes: &[u8]) -> anyhow::Result<tempfile::NamedTempFile> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let mut builder = tempfile::Builder::new();
    builder.prefix(".aicp-");
    // Temporary files are private by default; a model is read by servers running as other users.
    #[cfg(unix)]
    builder.permissions(std::os::unix::fs::PermissionsExt::from_mode(0o644));
    let mut file = builder.tempfile_in(dir)?;
    file.write_all(bytes)?;
    file.as_file().sync_all()?;
    Ok(file)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_count_up_from_the_highest_existing_one() {
        let dir = tempfile::tempdir().unwrap();
        let model = dir.path().join("m");
        assert_eq!(next_free_version(&model).unwrap(), 1);
        for v in ["1", "7", "notes", ".staging-x"] {
            std::fs::create_dir_all(model.join(v)).unwrap();
        }
        assert_eq!(next_free_version(&model).unwrap(), 8);
    }
}
