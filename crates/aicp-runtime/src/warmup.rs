//! Warm-up at load, so that the first request does not pay for lazy initialisation (and, on
//! tract at concrete shapes, for the plan of its shape). A model.toml may declare samples, after
//! Triton's `model_warmup`: each must run on every instance, or the load fails with the reason.
//! Without any, one sample of zeros of each input's declared type is run, best effort: zeros are
//! not every model's valid input (a OneHot depth, a Range's step), and such a model still
//! serves, with the failure noted.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::Path;

use aicp_core::{
    DataType, Input, ModelSignature, Tensor, TensorData, TensorSpec, WarmupData, WarmupInput,
    WarmupSample, panic_message,
};
use aicp_engine::Runnable;
use rand::Rng;

/// The most values one sample of a model's input may declare: 2^26, 256 MiB as FP32, far past
/// any request body a server takes (`--max-body-bytes`). A model file or warm-up sample that
/// declares more is refused at load, before anything allocates it (a crafted file could
/// otherwise declare terabytes and take the server down at its warm-up).
pub const MAX_SAMPLE_VALUES: usize = 1 << 26;

/// The largest warm-up file read: 256 MiB.
const MAX_FILE_BYTES: u64 = 256 << 20;

/// The warm-up of one model version, prepared once and run on each of its instances.
pub(crate) enum Warmup {
    /// The model.toml's samples, in its order: each must run.
    Declared(Vec<(String, Vec<Input>)>),
    /// Zeros of each input's declared type (variable dimensions as 1), best effort; `Err` when
    /// no such sample can be made (an input of open rank), saying why.
    Zeros(std::result::Result<Vec<Input>, String>),
}

impl Warmup {
    /// The warm-up of a model with `signature`: its model.toml's `samples`, whose files are
    /// read from `dir` (the model.toml's directory), or zeros. A declared sample that does not
    /// fit the model, or whose file is missing, is an error, and the load's.
    pub(crate) fn prepare(
        samples: &[WarmupSample],
        signature: &ModelSignature,
        dir: Option<&Path>,
    ) -> std::result::Result<Self, String> {
        if samples.is_empty() {
            return Ok(Self::Zeros(zeros(signature)));
        }
        samples
            .iter()
            .map(|sample| {
                let inputs = declared(sample, signature, dir)
                    .map_err(|e| format!("warm-up sample {:?}: {e}", sample.name))?;
                Ok((sample.name.clone(), inputs))
            })
            .collect::<std::result::Result<_, String>>()
            .map(Self::Declared)
    }

    /// Runs the warm-up on one instance. `Err(Fatal)` fails the load; `Err(Note)` is a note
    /// on the served model, and so is `Err(Panicked)`, whose instance must be replaced.
    pub(crate) fn run(&self, runnable: &mut dyn Runnable) -> std::result::Result<(), Failure> {
        let declared = matches!(self, Self::Declared(_));
        catch_unwind(AssertUnwindSafe(|| self.run_samples(runnable))).unwrap_or_else(|panic| {
            let why = format!("the engine panicked: {}", panic_message(&*panic));
            Err(if declared {
                Failure::Fatal(format!("a warm-up sample failed: {why}"))
            } else {
                Failure::Panicked(format!("warm-up inference failed: {why}"))
            })
        })
    }

    fn run_samples(&self, runnable: &mut dyn Runnable) -> std::result::Result<(), Failure> {
        match self {
            Self::Declared(samples) => {
                for (name, inputs) in samples {
                    runnable.run(inputs.clone()).map_err(|e| {
                        Failure::Fatal(format!("warm-up sample {name:?} failed: {}", e.message))
                    })?;
                }
                Ok(())
            }
            Self::Zeros(inputs) => {
                let failed = |why: &str| Failure::Note(format!("warm-up inference failed: {why}"));
                let inputs = inputs.as_ref().map_err(|why| failed(why))?;
                runnable
                    .run(inputs.clone())
                    .map(|_| ())
                    .map_err(|e| failed(&e.message))
            }
        }
    }
}

/// Why a warm-up failed, and what that does to the load.
#[derive(Debug)]
pub(crate) enum Failure {
    /// A declared sample failed: the model is not served.
    Fatal(String),
    /// The built-in sample of zeros failed: the model serves, with this noted.
    Note(String),
    /// The built-in sample made the engine panic (integer zeros divided by zeros): the model
    /// serves, with this noted, on an instance loaded again, since the one that panicked may
    /// have been left half-way.
    Panicked(String),
}

/// The shape of one sample of `spec` as the built-in warm-up feeds it (variable dimensions as
/// 1), and its number of values; `None` when the model leaves the input's rank open.
pub(crate) fn sample_shape(spec: &TensorSpec) -> Option<(Vec<usize>, Option<usize>)> {
    let shape: Vec<usize> = spec
        .shape
        .as_ref()?
        .iter()
        .map(|d| d.unwrap_or(1))
        .collect();
    let values = shape.iter().try_fold(1usize, |n, &d| n.checked_mul(d));
    Some((shape, values))
}

/// One sample of zeros of each input (their sizes were checked at load).
fn zeros(signature: &ModelSignature) -> std::result::Result<Vec<Input>, String> {
    signature
        .inputs
        .iter()
        .map(|spec| {
            let (shape, values) = sample_shape(spec).ok_or_else(|| {
                format!(
                    "input {:?} declares no shape to make a sample of (declare one in \
                     model.toml's [[warmup]])",
                    spec.name
                )
            })?;
            let data =
                TensorData::zeros(spec.datatype, values.unwrap_or(0)).map_err(|e| e.message)?;
            Ok(Input::from(Tensor { shape, data }))
        })
        .collect()
}

/// The inputs of a declared sample, in the model's input order.
fn declared(
    sample: &WarmupSample,
    signature: &ModelSignature,
    dir: Option<&Path>,
) -> std::result::Result<Vec<Input>, String> {
    if let Some(unknown) = sample
        .inputs
        .keys()
        .find(|name| !signature.inputs.iter().any(|spec| &spec.name == *name))
    {
        let known: Vec<&str> = signature.inputs.iter().map(|s| s.name.as_str()).collect();
        return Err(format!(
            "the model has no input {unknown:?} (its inputs: {})",
            known.join(", ")
        ));
    }
    signature
        .inputs
        .iter()
        .map(|spec| {
            let input = sample
                .inputs
                .get(&spec.name)
                .ok_or_else(|| format!("no value for input {:?}", spec.name))?;
            let tensor =
                tensor_of(input, spec, dir).map_err(|e| format!("input {:?}: {e}", spec.name))?;
            Ok(Input::from(tensor))
        })
        .collect()
}

/// The tensor one declared input stands for, checked against the model's `spec`.
fn tensor_of(
    input: &WarmupInput,
    spec: &TensorSpec,
    dir: Option<&Path>,
) -> std::result::Result<Tensor, String> {
    let datatype = DataType::parse(&input.datatype).map_err(|e| e.message)?;
    if datatype != spec.datatype {
        return Err(format!(
            "the model takes {}, the sample gives {datatype}",
            spec.datatype
        ));
    }
    let shape = input.shape.clone();
    if let Some(dims) = &spec.shape {
        let fits = dims.len() == shape.len()
            && dims
                .iter()
                .zip(&shape)
                .all(|(d, n)| d.is_none_or(|d| d == *n));
        if !fits {
            return Err(format!(
                "shape {shape:?} does not fit the model's {:?}",
                spec.display_shape()
            ));
        }
    }
    let values = shape
        .iter()
        .try_fold(1usize, |n, &d| n.checked_mul(d))
        .filter(|&n| n <= MAX_SAMPLE_VALUES)
        .ok_or_else(|| format!("shape {shape:?} has more than {MAX_SAMPLE_VALUES} values"))?;
    let data = match (&input.file, input.data) {
        (Some(_), Some(_)) => return Err("give data or file, not both".into()),
        (Some(file), None) => {
            let dir = dir.ok_or("a warm-up file needs a model.toml to be beside")?;
            let data = read_file(dir, file, datatype)?;
            if data.len() != values {
                return Err(format!(
                    "file {file:?} holds {} values, shape {shape:?} has {values}",
                    data.len()
                ));
            }
            data
        }
        (None, None | Some(WarmupData::Zero)) => {
            TensorData::zeros(datatype, values).map_err(|e| e.message)?
        }
        (None, Some(WarmupData::Random)) => random(datatype, values),
    };
    Ok(Tensor { shape, data })
}

/// Reads a warm-up file, `name` relative to `dir`, refusing any path that leads outside it.
fn read_file(
    dir: &Path,
    name: &str,
    datatype: DataType,
) -> std::result::Result<TensorData, String> {
    let path = aicp_core::metadata::file_inside(dir, name)?;
    let unreadable = |e: std::io::Error| format!("file {name:?}: {e}");
    let size = std::fs::metadata(&path).map_err(unreadable)?.len();
    if size > MAX_FILE_BYTES {
        return Err(format!(
            "file {name:?} has {size} bytes, more than the {MAX_FILE_BYTES} a warm-up file may"
        ));
    }
    let bytes = std::fs::read(&path).map_err(unreadable)?;
    TensorData::from_le_bytes(datatype, &bytes).map_err(|e| format!("file {name:?}: {}", e.message))
}

/// `len` random values of `datatype`: floats in [0, 1), integers in [0, 100) (valid token ids
/// and indices for most models), booleans, and BYTES of 8 lowercase letters.
fn random(datatype: DataType, len: usize) -> TensorData {
    let floats = || {
        (0..len)
            .map(|_| rand::rng().random::<f32>())
            .collect::<Vec<_>>()
    };
    macro_rules! ints {
        ($variant:ident) => {
            TensorData::$variant((0..len).map(|_| rand::rng().random_range(0..100)).collect())
        };
    }
    match datatype {
        DataType::Bool => TensorData::Bool((0..len).map(|_| rand::rng().random()).collect()),
        DataType::U8 => ints!(U8),
        DataType::U16 => ints!(U16),
        DataType::U32 => ints!(U32),
        DataType::U64 => ints!(U64),
        DataType::I8 => ints!(I8),
        DataType::I16 => ints!(I16),
        DataType::I32 => ints!(I32),
        DataType::I64 => ints!(I64),
        DataType::F16 | DataType::BF16 | DataType::F32 | DataType::F64 => {
            TensorData::float_as(floats(), datatype).expect("values in [0, 1) fit every float type")
        }
        DataType::Bytes | DataType::Other => TensorData::Bytes(
            (0..len)
                .map(|_| {
                    (0..8)
                        .map(|_| rand::rng().random_range(b'a'..=b'z'))
                        .collect()
                })
                .collect(),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn signature() -> ModelSignature {
        ModelSignature {
            inputs: vec![
                TensorSpec {
                    name: "ids".into(),
                    datatype: DataType::I64,
                    shape: Some(vec![None, None]),
                },
                TensorSpec {
                    name: "scale".into(),
                    datatype: DataType::F32,
                    shape: Some(vec![]),
                },
            ],
            outputs: Vec::new(),
        }
    }

    fn input(datatype: &str, shape: &[usize]) -> WarmupInput {
        WarmupInput {
            datatype: datatype.into(),
            shape: shape.to_vec(),
            ..WarmupInput::default()
        }
    }

    fn sample(inputs: &[(&str, WarmupInput)]) -> WarmupSample {
        WarmupSample {
            name: "s".into(),
            inputs: inputs
                .iter()
                .map(|(name, input)| (name.to_string(), input.clone()))
                .collect::<BTreeMap<_, _>>(),
        }
    }

    fn prepared(samples: &[WarmupSample], dir: Option<&Path>) -> Result<Vec<Input>, String> {
        match Warmup::prepare(samples, &signature(), dir)? {
            Warmup::Declared(mut samples) => Ok(samples.remove(0).1),
            Warmup::Zeros(_) => panic!("declared samples make a declared warm-up"),
        }
    }

    #[test]
    fn declared_samples_make_typed_inputs_in_the_models_order() {
        let mut ids = input("INT64", &[2, 5]);
        ids.data = Some(WarmupData::Random);
        let inputs = prepared(
            &[sample(&[("scale", input("FP32", &[])), ("ids", ids)])],
            None,
        )
        .unwrap();
        let tensors: Vec<Tensor> = inputs.into_iter().map(Input::into_tensor).collect();
        assert_eq!(tensors[0].shape, vec![2, 5]);
        let TensorData::I64(ids) = &tensors[0].data else {
            panic!("INT64 expected, got {:?}", tensors[0].datatype())
        };
        assert!(ids.iter().all(|id| (0..100).contains(id)), "{ids:?}");
        assert_eq!(tensors[1].data, TensorData::F32(vec![0.0]));
    }

    #[test]
    fn a_sample_that_does_not_fit_the_model_is_refused_with_the_reason() {
        let cases = [
            (
                sample(&[
                    ("ids", input("INT32", &[1, 4])),
                    ("scale", input("FP32", &[])),
                ]),
                "the model takes INT64, the sample gives INT32",
            ),
            (
                sample(&[("ids", input("INT64", &[4])), ("scale", input("FP32", &[]))]),
                "shape [4] does not fit the model's [-1, -1]",
            ),
            (
                sample(&[("ids", input("INT64", &[1, 4]))]),
                "no value for input \"scale\"",
            ),
            (
                sample(&[
                    ("ids", input("INT64", &[1, 4])),
                    ("scale", input("FP32", &[])),
                    ("mask", input("INT64", &[1, 4])),
                ]),
                "the model has no input \"mask\" (its inputs: ids, scale)",
            ),
            (
                sample(&[
                    ("ids", input("INT64", &[1 << 20, 1 << 20])),
                    ("scale", input("FP32", &[])),
                ]),
                "more than 67108864 values",
            ),
        ];
        for (sample, expected) in cases {
            let error = prepared(&[sample], None).unwrap_err();
            assert!(error.starts_with("warm-up sample \"s\": "), "{error}");
            assert!(
                error.contains(expected),
                "{error:?} should say {expected:?}"
            );
        }
    }

    #[test]
    fn a_sample_file_is_read_from_inside_the_model_directory_only() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("model");
        std::fs::create_dir(&dir).unwrap();
        let ids: Vec<u8> = [3i64, 7].iter().flat_map(|v| v.to_le_bytes()).collect();
        std::fs::write(dir.join("ids.bin"), &ids).unwrap();
        std::fs::write(root.path().join("secret.bin"), &ids).unwrap();
        std::os::unix::fs::symlink(root.path().join("secret.bin"), dir.join("link.bin")).unwrap();
        let with_file = |file: &str, shape: &[usize]| {
            let mut ids = input("INT64", shape);
            ids.file = Some(file.into());
            prepared(
                &[sample(&[("ids", ids), ("scale", input("FP32", &[]))])],
                Some(&dir),
            )
        };
        let inputs = with_file("ids.bin", &[1, 2]).unwrap();
        let ids = inputs.into_iter().next().unwrap().into_tensor();
        assert_eq!(ids.data, TensorData::I64(vec![3, 7]));

        for (file, expected) in [
            ("../secret.bin", "without .. or a root"),
            ("/etc/passwd", "without .. or a root"),
            ("link.bin", "leads outside the model's directory"),
            ("missing.bin", "No such file"),
        ] {
            let error = with_file(file, &[1, 2]).unwrap_err();
            assert!(error.contains(expected), "{file}: {error:?}");
        }
        let error = with_file("ids.bin", &[1, 3]).unwrap_err();
        assert!(
            error.contains("holds 2 values, shape [1, 3] has 3"),
            "{error}"
        );
    }

    #[test]
    fn random_data_of_every_type_has_the_length_asked_for() {
        for name in [
            "BOOL", "UINT8", "UINT16", "UINT32", "UINT64", "INT8", "INT16", "INT32", "INT64",
            "FP16", "BF16", "FP32", "FP64", "BYTES",
        ] {
            let datatype = DataType::parse(name).unwrap();
            let data = random(datatype, 5);
            assert_eq!(data.datatype(), datatype);
            assert_eq!(data.len(), 5);
        }
    }
}
