//! Calibration samples: what a model is fed while its activations are measured. Each
//! [`Sample`] holds a tensor for every input of the model, in the model's order, at its own
//! shape, so models of any input types and of dynamic dimensions are calibrated as they run.
//!
//! Files ([`read`]):
//! - `.npy`: one array, for a model of one input;
//! - `.npz`: one array per input, by the input's name (`np.savez(f, input_ids=..., ...)`);
//! - `.json`: an array of samples, each the model's one input as nested arrays, or an object
//!   of input name to nested arrays;
//! - a directory of such files, read in name order: one `.npz` per shape, for a model whose
//!   samples differ in shape.
//!
//! An array whose rank is the input's is a batch, split along its first dimension into samples
//! of one; an array one rank short (JSON's usual sample) is one sample, given a batch of one.
//! Every sample is checked against the model's inputs before any work.

use std::io::Read;
use std::path::Path;

use aicp_core::{DataType, ModelSignature, Tensor, TensorData, TensorSpec};

/// One calibration sample: a tensor for each of the model's inputs, in the model's order.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample(pub Vec<Tensor>);

/// The samples in the file or directory at `path`, for a model of `signature`, checked.
pub fn read(path: &Path, signature: &ModelSignature) -> anyhow::Result<Vec<Sample>> {
    let in_file = |file: &Path, e: anyhow::Error| anyhow::anyhow!("{}: {e}", file.display());
    let samples = if path.is_dir() {
        let mut files: Vec<_> = std::fs::read_dir(path)
            .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", path.display()))?
            .flatten()
            .map(|entry| entry.path())
            .filter(|file| {
                matches!(
                    file.extension().and_then(|e| e.to_str()),
                    Some("npy" | "npz" | "json")
                )
            })
            .collect();
        files.sort();
        anyhow::ensure!(
            !files.is_empty(),
            "{}: no .npy, .npz or .json files of samples",
            path.display()
        );
        let mut samples = Vec::new();
        for file in files {
            samples.extend(read_file(&file, signature).map_err(|e| in_file(&file, e))?);
        }
        samples
    } else {
        read_file(path, signature).map_err(|e| in_file(path, e))?
    };
    anyhow::ensure!(!samples.is_empty(), "{}: no samples", path.display());
    Ok(samples)
}

fn read_file(path: &Path, signature: &ModelSignature) -> anyhow::Result<Vec<Sample>> {
    let bytes = std::fs::read(path).map_err(|e| anyhow::anyhow!("cannot read it: {e}"))?;
    let arrays = match path.extension().and_then(|e| e.to_str()) {
        Some("npy") => {
            let [input] = signature.inputs.as_slice() else {
                anyhow::bail!(
                    "a .npy file holds one array, and the model takes {} inputs ({}): give a \
                     .npz of one array per input name",
                    signature.inputs.len(),
                    names(&signature.inputs)
                );
            };
            vec![(input.name.clone(), npy_array(&bytes)?)]
        }
        Some("npz") => npz_arrays(&bytes)?,
        Some("json") => return json_samples(&bytes, signature),
        _ => anyhow::bail!("expected a .npy, .npz or .json file, or a directory of them"),
    };
    split(arrays, signature, 0)
}

fn names(specs: &[TensorSpec]) -> String {
    specs
        .iter()
        .map(|s| format!("{:?}", s.name))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The arrays of a file, one per input by name, as samples (numbered from `first` in errors):
/// split along the first dimension when each array has its input's rank, else the file's one
/// sample.
fn split(
    mut arrays: Vec<(String, Tensor)>,
    signature: &ModelSignature,
    first: usize,
) -> anyhow::Result<Vec<Sample>> {
    if let Some((name, _)) = arrays
        .iter()
        .find(|(name, _)| !signature.inputs.iter().any(|s| &s.name == name))
    {
        anyhow::bail!(
            "it holds an array {name:?}, and the model has no such input; its inputs: {}",
            names(&signature.inputs)
        );
    }
    let mut ordered = Vec::with_capacity(signature.inputs.len());
    for spec in &signature.inputs {
        let at = arrays
            .iter()
            .position(|(name, _)| name == &spec.name)
            .ok_or_else(|| {
                anyhow::anyhow!(
                    "it has no array for the model's input {:?} (its inputs: {})",
                    spec.name,
                    names(&signature.inputs)
                )
            })?;
        let (_, tensor) = arrays.swap_remove(at);
        ordered.push(fit(spec, tensor)?);
    }
    let batched = ordered.iter().zip(&signature.inputs).all(|(tensor, spec)| {
        spec.shape
            .as_ref()
            .is_none_or(|d| d.len() == tensor.shape.len())
    }) && signature.inputs.iter().all(TensorSpec::varies_first);
    let rows: Vec<usize> = ordered
        .iter()
        .map(|t| t.shape.first().copied().unwrap_or(1))
        .collect();
    if !batched || rows.iter().all(|&r| r == 1) {
        let sample = Sample(ordered);
        check(&sample, signature, first)?;
        return Ok(vec![sample]);
    }
    anyhow::ensure!(
        rows.iter().all(|&r| r == rows[0]),
        "its arrays disagree on how many samples they hold (their first dimensions: {rows:?})"
    );
    let samples: Vec<Sample> = (0..rows[0])
        .map(|row| Sample(ordered.iter().map(|t| t.rows(row, row + 1)).collect()))
        .collect();
    for (index, sample) in samples.iter().enumerate() {
        check(sample, signature, first + index)?;
    }
    Ok(samples)
}

/// `tensor` for input `spec`: its values converted where the conversion loses nothing a
/// calibration needs (float64 and 8-bit values to float32, int32 to int64), and given a batch
/// of one when it is one rank short of the input.
fn fit(spec: &TensorSpec, tensor: Tensor) -> anyhow::Result<Tensor> {
    let Tensor { mut shape, data } = tensor;
    let given = data.datatype();
    let data = match (spec.datatype, data) {
        (want, data) if data.datatype() == want => data,
        (DataType::F32, TensorData::F64(v)) => {
            TensorData::F32(v.into_iter().map(|x| x as f32).collect())
        }
        (DataType::F32, TensorData::U8(v)) => {
            TensorData::F32(v.into_iter().map(f32::from).collect())
        }
        (DataType::I64, TensorData::I32(v)) => {
            TensorData::I64(v.into_iter().map(i64::from).collect())
        }
        _ => anyhow::bail!(
            "input {:?}: the model takes {}, the samples hold {given}",
            spec.name,
            spec.datatype
        ),
    };
    if let Some(dims) = &spec.shape {
        let values = data.len();
        if dims.len() == shape.len() + 1 {
            shape.insert(0, 1);
        } else if dims.len() != shape.len()
            && let Some(per_sample) = spec.sample_elements().filter(|&n| n > 0)
            && values.is_multiple_of(per_sample)
        {
            // Flat values, whole samples of a fixed shape: `[784]` for `[N, 1, 28, 28]`.
            shape = std::iter::once(values / per_sample)
                .chain(dims.iter().skip(1).map(|d| d.unwrap_or(1)))
                .collect();
        }
    }
    if let TensorData::F32(values) = &data {
        anyhow::ensure!(
            values.iter().all(|v| v.is_finite()),
            "input {:?}: a calibration value is NaN or infinite",
            spec.name
        );
    }
    Ok(Tensor { shape, data })
}

/// Checks sample `index` against the model's inputs: each of the input's rank, with the size
/// of every dimension the model fixes.
pub fn check(sample: &Sample, signature: &ModelSignature, index: usize) -> anyhow::Result<()> {
    for (tensor, spec) in sample.0.iter().zip(&signature.inputs) {
        let Some(dims) = &spec.shape else {
            continue;
        };
        let fits = dims.len() == tensor.shape.len()
            && dims
                .iter()
                .zip(&tensor.shape)
                .all(|(want, have)| want.is_none_or(|w| w == *have));
        anyhow::ensure!(
            fits,
            "sample {index}: input {:?} is shaped {:?}, and the model takes {:?}",
            spec.name,
            tensor.shape,
            spec.display_shape()
        );
    }
    Ok(())
}

/// A `.npy` array as a tensor of its own type.
fn npy_array(bytes: &[u8]) -> anyhow::Result<Tensor> {
    npy_tensor(npyz::NpyFile::new(bytes).map_err(|e| anyhow::anyhow!("not a .npy file: {e}"))?)
}

fn npy_tensor<R: Read>(file: npyz::NpyFile<R>) -> anyhow::Result<Tensor> {
    let shape: Vec<usize> = file.shape().iter().map(|&d| d as usize).collect();
    anyhow::ensure!(
        file.order() == npyz::Order::C,
        "the array is in Fortran order; save it in C order (np.ascontiguousarray)"
    );
    let descr = file.dtype().descr();
    let data = match descr.trim_matches('\'').trim_start_matches(['<', '|', '=']) {
        "f4" => TensorData::F32(file.into_vec()?),
        "f8" => TensorData::F64(file.into_vec()?),
        "u1" => TensorData::U8(file.into_vec()?),
        "i4" => TensorData::I32(file.into_vec()?),
        "i8" => TensorData::I64(file.into_vec()?),
        "b1" => TensorData::Bool(file.into_vec::<u8>()?.into_iter().map(|b| b != 0).collect()),
        other => anyhow::bail!(
            "an array holds {other:?} values; expected float32, float64, uint8, int32, int64 \
             or bool (little-endian)"
        ),
    };
    Tensor::new(shape, data).map_err(|e| anyhow::anyhow!("{}", e.message))
}

/// A `.npz` archive's arrays, by name.
fn npz_arrays(bytes: &[u8]) -> anyhow::Result<Vec<(String, Tensor)>> {
    let mut archive = npyz::npz::NpzArchive::new(std::io::Cursor::new(bytes))
        .map_err(|e| anyhow::anyhow!("not a .npz archive: {e}"))?;
    let names: Vec<String> = archive.array_names().map(str::to_string).collect();
    let mut arrays = Vec::with_capacity(names.len());
    for name in names {
        let file = archive
            .by_name(&name)?
            .ok_or_else(|| anyhow::anyhow!("array {name:?} is listed but missing"))?;
        let tensor = npy_tensor(file).map_err(|e| anyhow::anyhow!("array {name:?}: {e}"))?;
        arrays.push((name, tensor));
    }
    Ok(arrays)
}

/// A JSON array of samples: each the one input's values as nested arrays, or an object of
/// input name to nested arrays.
fn json_samples(bytes: &[u8], signature: &ModelSignature) -> anyhow::Result<Vec<Sample>> {
    let value: serde_json::Value =
        serde_json::from_slice(bytes).map_err(|e| anyhow::anyhow!("not JSON: {e}"))?;
    let serde_json::Value::Array(items) = value else {
        anyhow::bail!("expected a JSON array of samples");
    };
    let mut samples = Vec::with_capacity(items.len());
    for (index, item) in items.iter().enumerate() {
        let named: Vec<(String, &serde_json::Value)> = match (item, signature.inputs.as_slice()) {
            (serde_json::Value::Object(map), _) => {
                map.iter().map(|(k, v)| (k.clone(), v)).collect()
            }
            (values, [input]) => vec![(input.name.clone(), values)],
            _ => anyhow::bail!(
                "sample {index}: the model takes {} inputs ({}); give each sample as an object \
                 of input name to values",
                signature.inputs.len(),
                names(&signature.inputs)
            ),
        };
        let mut arrays = Vec::with_capacity(named.len());
        for (name, values) in named {
            let datatype = signature
                .inputs
                .iter()
                .find(|s| s.name == name)
                .map_or(DataType::F32, |s| s.datatype);
            let (data, shape) = TensorData::from_json(datatype, &values.to_string())
                .map_err(|e| anyhow::anyhow!("sample {index}, input {name:?}: {}", e.message))?;
            arrays.push((name, Tensor { shape, data }));
        }
        samples.append(&mut split(arrays, signature, samples.len())?);
    }
    Ok(samples)
}

#[cfg(test)]
mod tests {
    use aicp_core::TensorSpec;

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

    fn spec(name: &str, datatype: DataType, dims: &[Option<usize>]) -> TensorSpec {
        TensorSpec {
            name: name.into(),
            datatype,
            shape: Some(dims.to_vec()),
        }
    }

    fn one_input(dims: &[Option<usize>]) -> ModelSignature {
        ModelSignature {
            inputs: vec![spec("x", DataType::F32, dims)],
            outputs: Vec::new(),
        }
    }

    #[test]
    fn a_npy_batch_is_split_into_samples_of_one_and_bytes_become_floats() {
        let floats: Vec<u8> = [0.5f32, 1.0, 0.0, 0.25]
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect();
        let signature = one_input(&[None, Some(2)]);
        let (_dir, path) = file("x.npy", &npy("<f4", "(2, 2)", &floats));
        let samples = read(&path, &signature).unwrap();
        assert_eq!(samples.len(), 2);
        assert_eq!(
            samples[1].0[0],
            Tensor::new(vec![1, 2], vec![0.0f32, 0.25]).unwrap()
        );
        let (_dir, path) = file("x.npy", &npy("|u1", "(2, 2)", &[0, 255, 1, 2]));
        let samples = read(&path, &signature).unwrap();
        assert_eq!(
            samples[0].0[0],
            Tensor::new(vec![1, 2], vec![0.0f32, 255.0]).unwrap()
        );
        let (_dir, path) = file("x.npy", &npy("<i2", "(1,)", &[0; 2]));
        let err = read(&path, &signature).unwrap_err().to_string();
        assert!(err.contains("expected float32, float64, uint8"), "{err}");
    }

    #[test]
    fn samples_that_do_not_fit_the_model_are_refused_naming_the_input() {
        let signature = one_input(&[None, Some(3)]);
        let (_dir, path) = file("x.json", b"[[0.5, 1]]");
        let err = read(&path, &signature).unwrap_err().to_string();
        assert!(
            err.contains("input \"x\" is shaped [1, 2], and the model takes [-1, 3]"),
            "{err}"
        );
        let two = ModelSignature {
            inputs: vec![
                spec("ids", DataType::I64, &[None, None]),
                spec("mask", DataType::I64, &[None, None]),
            ],
            outputs: Vec::new(),
        };
        let (_dir, path) = file("x.json", b"[{\"ids\": [1, 2, 3]}]");
        let err = read(&path, &two).unwrap_err().to_string();
        assert!(
            err.contains("no array for the model's input \"mask\""),
            "{err}"
        );
        let (_dir, path) = file(
            "x.json",
            b"[{\"ids\": [1, 2], \"mask\": [1, 1], \"x\": [0]}]",
        );
        let err = read(&path, &two).unwrap_err().to_string();
        assert!(err.contains("holds an array \"x\""), "{err}");
        let (_dir, path) = file("x.json", b"[{\"ids\": [1.5], \"mask\": [1]}]");
        assert!(read(&path, &two).is_err());
        let (_dir, path) = file("x.csv", b"1,2");
        let err = read(&path, &signature).unwrap_err().to_string();
        assert!(err.contains("expected a .npy, .npz or .json file"), "{err}");
    }

    #[test]
    fn json_samples_of_several_inputs_keep_their_own_shapes() {
        let two = ModelSignature {
            inputs: vec![
                spec("ids", DataType::I64, &[None, None]),
                spec("mask", DataType::I64, &[None, None]),
            ],
            outputs: Vec::new(),
        };
        let (_dir, path) = file(
            "x.json",
            b"[{\"mask\": [1, 1], \"ids\": [5, 6]}, {\"ids\": [7, 8, 9], \"mask\": [1, 1, 0]}]",
        );
        let samples = read(&path, &two).unwrap();
        assert_eq!(samples.len(), 2);
        assert_eq!(
            samples[0].0[0],
            Tensor::new(vec![1, 2], vec![5i64, 6]).unwrap()
        );
        assert_eq!(samples[1].0[1].shape, [1, 3]);
    }
}
