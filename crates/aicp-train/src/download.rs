//! Downloading dataset files: mirrors tried in order, each file checked against its published
//! MD5 digest, shown with a progress bar, and written so that an interrupted or corrupt download
//! never leaves a file behind under the final name.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use indicatif::{ProgressBar, ProgressStyle};
use md5::{Digest, Md5};

/// A file to download and the MD5 digest (lowercase hex) it must have.
#[derive(Debug, Clone, Copy)]
pub struct RemoteFile {
    pub name: &'static str,
    pub md5: &'static str,
}

/// Downloads `file` into `dir` from the first mirror that serves it intact and returns its
/// path. A mirror that fails (unreachable, an HTTP error, a dropped connection, a wrong
/// checksum) is logged at debug and the next one tried; the error lists every mirror's failure.
pub fn fetch(file: &RemoteFile, mirrors: &[String], dir: &Path) -> anyhow::Result<PathBuf> {
    std::fs::create_dir_all(dir)
        .map_err(|e| anyhow::anyhow!("cannot create data directory {}: {e}", dir.display()))?;
    let client = reqwest::blocking::Client::builder()
        .connect_timeout(Duration::from_secs(15))
        // Applies to each read, so a stalled mirror is abandoned without capping a slow one.
        .timeout(Duration::from_secs(60))
        .user_agent(concat!("aicp/", env!("CARGO_PKG_VERSION")))
        .build()?;
    let mut failures = Vec::new();
    for mirror in mirrors {
        let url = format!("{}/{}", mirror.trim_end_matches('/'), file.name);
        match download_verified(&client, &url, file, dir) {
            Ok(path) => return Ok(path),
            Err(e) => {
                // Said once, in the error, when no mirror serves the file.
                tracing::debug!("download of {url} failed: {e:#}");
                failures.push(format!("  {url}: {e:#}"));
            }
        }
    }
    anyhow::bail!(
        "could not download {} from any mirror:\n{}",
        file.name,
        failures.join("\n")
    )
}

fn download_verified(
    client: &reqwest::blocking::Client,
    url: &str,
    file: &RemoteFile,
    dir: &Path,
) -> anyhow::Result<PathBuf> {
    let mut response = client.get(url).send()?.error_for_status()?;
    let progress = ProgressBar::with_draw_target(
        response.content_length(),
        indicatif::ProgressDrawTarget::stderr(),
    )
    .with_style(
        ProgressStyle::with_template(
            "{msg} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
        )?
        .progress_chars("=> "),
    )
    .with_message(file.name);

    // The temporary file lives beside the target so the final rename is atomic; it is deleted
    // on every early return.
    let mut partial = tempfile::Builder::new()
        .prefix(&format!(".{}.", file.name))
        .suffix(".part")
        .tempfile_in(dir)?;
    let mut hasher = Md5::new();
    let mut buffer = vec![0u8; 64 * 1024];
    loop {
        let n = response.read(&mut buffer)?;
        if n == 0 {
            break;
        }
        hasher.update(&buffer[..n]);
        partial.write_all(&buffer[..n])?;
        progress.inc(n as u64);
    }
    progress.finish_and_clear();

    let digest = format!("{:x}", hasher.finalize());
    if digest != file.md5 {
        anyhow::bail!(
            "checksum mismatch: expected MD5 {}, got {digest} ({} bytes received)",
            file.md5,
            progress.position()
        );
    }
    partial.as_file().sync_all()?;
    let target = dir.join(file.name);
    partial.persist(&target).map_err(|e| {
        anyhow::anyhow!("cannot move download to {}: {}", target.display(), e.error)
    })?;
    tracing::info!("downloaded {url} -> {}", target.display());
    Ok(target)
}
