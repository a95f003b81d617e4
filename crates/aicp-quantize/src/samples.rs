//! Calibration inputs from a file: a NumPy `.npy` array, or a JSON array of samples, each the
//! model's input for one sample (nested arrays or flat numbers).

use std::path::Path;

/// The samples in the file at `path`, flattened, checked to be whole samples of
/// `sample_values` values each. `.npy` files may hold float32, float64 or uint8 values
/// (uint8 taken as they are: scale them yourself if the model wants otherwise).
pub fn read_samples(path: &Path, sample_values: usize) -> anyhow::Result<Vec<f32>> {
    let bytes =
        std::fs::read(path).map_err(|e| anyhow::anyhow!("cannot read {}: {e}", path.display()))?;
    let values = match path.extension().and_then(|e| e.to_str()) {
        Some("npy") => npy_values(&bytes),
        Some("json") => json_values(&bytes),
        _ => Err(anyhow::anyhow!("expected a .npy or .json file")),
    }
    .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
    anyhow::ensure!(
        !values.is_empty() && sample_values > 0 && values.len() % sample_values == 0,
        "{}: {} values are not whole samples of {sample_values} values each",
        path.display(),
        values.len()
    );
    anyhow::ensure!(
        values.iter().all(|v| v.is_finite()),
        "{}: a calibration value is NaN or infinite",
        path.display()
    );
    Ok(values)
}

fn npy_values(bytes: &[u8]) -> anyhow::Result<Vec<f32>> {
    let open = || npyz::NpyFile::new(bytes).map_err(|e| anyhow::anyhow!("not a .npy file: {e}"));
    let descr = open()?.dtype().descr();
    let values = match descr.trim_matches('\'').trim_start_matches(['<', '|', '=']) {
        "f4" => open()?.into_vec::<f32>()?,
        "f8" => open()?
            .into_vec::<f64>()?
            .into_iter()
            .map(|v| v as f32)
            .collect(),
        "u1" => open()?
            .into_vec::<u8>()?
            .into_iter()
            .map(f32::from)
            .collect(),
        other => anyhow::bail!(
            "the array holds {other:?} values; expected float32, float64 or uint8 (little-endian)"
        ),
    };
    Ok(values)
}

fn json_values(bytes: &[u8]) -> anyhow::Result<Vec<f32>> {
    let value: serde_json::Value =
        serde_json::from_slice(bytes).map_err(|e| anyhow::anyhow!("not JSON: {e}"))?;
    let serde_json::Value::Array(samples) = value else {
        anyhow::bail!("expected a JSON array of samples");
    };
    let mut values = Vec::new();
    for sample in &samples {
        flatten(sample, &mut values)?;
    }
    Ok(values)
}

fn flatten(value: &serde_json::Value, into: &mut Vec<f32>) -> anyhow::Result<()> {
    match value {
        serde_json::Value::Number(n) => {
            into.push(n.as_f64().unwrap_or(f64::NAN) as f32);
            Ok(())
        }
        serde_json::Value::Array(items) => items.iter().try_for_each(|v| flatten(v, into)),
        other => anyhow::bail!("expected numbers and arrays of numbers, found {other}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(name: &str, bytes: &[u8]) -> (tempfile::TempDir, std::path::PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(name);
        std::fs::write(&path, bytes).unwrap();
        (dir, path)
    }

    /// A version 1.0 `.npy` file, as NumPy writes it.
    fn npy(descr: &str, shape: &str, data: &[u8]) -> Vec<u8> {
        let mut header =
            format!("{{'descr': '{descr}', 'fortran_order': False, 'shape': {shape}, }}");
        while (10 + header.len() + 1) % 64 != 0 {
            header.push(' ');
        }
        header.push('\n');
        let mut bytes = b"\x93NUMPY\x01\x00".to_vec();
        bytes.extend((header.len() as u16).to_le_bytes());
        bytes.extend(header.as_bytes());
        bytes.extend(data);
        bytes
    }

    #[test]
    fn reads_npy_arrays_of_floats_and_bytes() {
        let floats: Vec<u8> = [0.5f32, 1.0, 0.0, 0.25]
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect();
        let (_dir, path) = file("x.npy", &npy("<f4", "(2, 2)", &floats));
        assert_eq!(read_samples(&path, 2).unwrap(), [0.5, 1.0, 0.0, 0.25]);
        let (_dir, path) = file("x.npy", &npy("|u1", "(2, 2)", &[0, 255, 1, 2]));
        assert_eq!(read_samples(&path, 2).unwrap(), [0.0, 255.0, 1.0, 2.0]);
        let (_dir, path) = file("x.npy", &npy("<i4", "(1,)", &[0; 4]));
        let err = read_samples(&path, 1).unwrap_err().to_string();
        assert!(err.contains("expected float32, float64 or uint8"), "{err}");
    }

    #[test]
    fn reads_json_samples_nested_or_flat_and_checks_their_size() {
        let (_dir, path) = file("x.json", b"[[[0.5, 1]], [0, 0.25]]");
        assert_eq!(read_samples(&path, 2).unwrap(), [0.5, 1.0, 0.0, 0.25]);
        let err = read_samples(&path, 3).unwrap_err().to_string();
        assert!(err.contains("4 values are not whole samples of 3"), "{err}");
        let (_dir, path) = file("x.json", b"{\"inputs\": []}");
        let err = read_samples(&path, 1).unwrap_err().to_string();
        assert!(err.contains("expected a JSON array of samples"), "{err}");
        let (_dir, path) = file("x.csv", b"1,2");
        let err = read_samples(&path, 1).unwrap_err().to_string();
        assert!(err.contains("expected a .npy or .json file"), "{err}");
    }
}
