//! ONNX models the tests serve beside the bundled ones, written with the same graph builders
//! the product uses ([`aicp_engine::onnx_build`]): a model slow enough to hold an engine
//! instance busy, a flat-input model that ends in Softmax, models with several inputs and with
//! a fixed batch, and hostile files. Each is small, deterministic and written in milliseconds.

use std::path::{Path, PathBuf};

use aicp_engine::onnx_build::{Dim, f32_tensor, int_attr, node, value_info};
use prost::Message;
use tract_onnx::pb;
use tract_onnx::pb::tensor_proto::{DataLocation, DataType};

use crate::bundled_model;

/// A model of `nodes` over `inputs` to `outputs`, at opset 13 (IR version 8, which every
/// current runtime reads).
fn model(
    name: &str,
    nodes: Vec<pb::NodeProto>,
    inputs: Vec<pb::ValueInfoProto>,
    outputs: Vec<pb::ValueInfoProto>,
    initializer: Vec<pb::TensorProto>,
) -> pb::ModelProto {
    pb::ModelProto {
        ir_version: 8,
        opset_import: vec![pb::OperatorSetIdProto {
            domain: String::new(),
            version: 13,
        }],
        producer_name: "aicp-testkit".into(),
        graph: Some(pb::GraphProto {
            name: name.into(),
            node: nodes,
            input: inputs,
            output: outputs,
            initializer,
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn floats(name: &str, dims: &[Dim]) -> pb::ValueInfoProto {
    value_info(name, DataType::Float, dims)
}

fn write(path: &Path, model: &pb::ModelProto) {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).unwrap();
    }
    std::fs::write(path, model.encode_to_vec()).unwrap();
}

fn bundled(name: &str) -> pb::ModelProto {
    pb::ModelProto::decode(std::fs::read(bundled_model(name)).unwrap().as_slice()).unwrap()
}

/// Width of the slow model's rows.
pub const SLOW_WIDTH: usize = 512;

/// Writes model `slow` version 1 into `root`: `y = x @ W @ W ... @ W` (128 times, `W` the
/// 512x512 identity, stored once) over `x` shaped `[N, 512]`. About 67 MFLOP a sample, so a
/// batch of 1024 holds one core for about half a second; the output equals the input.
pub fn slow(root: &Path) -> PathBuf {
    const LAYERS: usize = 128;
    let mut identity = vec![0.0; SLOW_WIDTH * SLOW_WIDTH];
    identity
        .iter_mut()
        .step_by(SLOW_WIDTH + 1)
        .for_each(|v| *v = 1.0);
    let nodes = (0..LAYERS)
        .map(|i| {
            let from = if i == 0 {
                "x".into()
            } else {
                format!("h{}", i - 1)
            };
            let to = if i == LAYERS - 1 {
                "y".into()
            } else {
                format!("h{i}")
            };
            node("MatMul", &to, &[&from, "w"], &to, Vec::new())
        })
        .collect();
    let rows = [Dim::Named("N"), Dim::Fixed(SLOW_WIDTH)];
    let slow = model(
        "slow",
        nodes,
        vec![floats("x", &rows)],
        vec![floats("y", &rows)],
        vec![f32_tensor("w", &[SLOW_WIDTH, SLOW_WIDTH], &identity)],
    );
    let path = root.join("slow/1/model.onnx");
    write(&path, &slow);
    path
}

/// Writes the bundled MNIST MLP changed to take `[N, 784]` (its Flatten removed) and to end
/// in Softmax, its output renamed `probabilities`: a server must reshape `[N, 1, 28, 28]`
/// requests to it and must not apply softmax a second time.
pub fn flat_softmax(path: &Path) {
    let mut model = bundled("mnist");
    let graph = model.graph.as_mut().unwrap();
    let flatten = graph
        .node
        .iter()
        .position(|n| n.op_type == "Flatten")
        .unwrap();
    let flattened = graph.node.remove(flatten).output[0].clone();
    for node in &mut graph.node {
        for name in node.input.iter_mut().filter(|n| **n == flattened) {
            *name = "input".into();
        }
        for name in node.output.iter_mut().filter(|n| *n == "logits") {
            *name = "raw_logits".into();
        }
    }
    graph.input[0] = floats("input", &[Dim::Named("N"), Dim::Fixed(784)]);
    graph.node.push(node(
        "Softmax",
        "softmax",
        &["raw_logits"],
        "probabilities",
        vec![int_attr("axis", 1)],
    ));
    graph.output[0].name = "probabilities".into();
    write(path, &model);
}

/// Writes two small models into `root`:
/// - `two_inputs.onnx`: `sum = a + 2 * b` and `diff = a - b` over `a`, `b` shaped `[N, 3]`:
///   several named inputs and outputs, batched;
/// - `fixed.onnx`: `y = 2 * x` over `x` shaped `[1, 3]`: a fixed first dimension, not batched.
pub fn two_inputs(root: &Path) {
    let two = || f32_tensor("two", &[], &[2.0]);
    let rows = [Dim::Named("N"), Dim::Fixed(3)];
    let two_inputs = model(
        "two_inputs",
        vec![
            node("Mul", "twice", &["b", "two"], "twice_b", Vec::new()),
            node("Add", "sum", &["a", "twice_b"], "sum", Vec::new()),
            node("Sub", "diff", &["a", "b"], "diff", Vec::new()),
        ],
        vec![floats("a", &rows), floats("b", &rows)],
        vec![floats("sum", &rows), floats("diff", &rows)],
        vec![two()],
    );
    write(&root.join("two_inputs.onnx"), &two_inputs);
    let one_row = [Dim::Fixed(1), Dim::Fixed(3)];
    let fixed = model(
        "fixed",
        vec![node("Mul", "twice", &["x", "two"], "y", Vec::new())],
        vec![floats("x", &one_row)],
        vec![floats("y", &one_row)],
        vec![two()],
    );
    write(&root.join("fixed.onnx"), &fixed);
}

/// Every element type the protocols carry, as ONNX names it and as the protocols do.
pub const TYPES: [(DataType, &str); 14] = [
    (DataType::Bool, "BOOL"),
    (DataType::Uint8, "UINT8"),
    (DataType::Uint16, "UINT16"),
    (DataType::Uint32, "UINT32"),
    (DataType::Uint64, "UINT64"),
    (DataType::Int8, "INT8"),
    (DataType::Int16, "INT16"),
    (DataType::Int32, "INT32"),
    (DataType::Int64, "INT64"),
    (DataType::Float16, "FP16"),
    (DataType::Bfloat16, "BF16"),
    (DataType::Float, "FP32"),
    (DataType::Double, "FP64"),
    (DataType::String, "BYTES"),
];

/// Writes, for each of [`TYPES`], a model `echo_<name>` (`echo_fp32`, ...) into `root`:
/// `y = Identity(x)` over `x` of that type shaped `[N, 3]`, batched. And three models of odd
/// shapes: `scalar`, `y = Identity(x)` over an INT64 scalar; `constant`, no inputs, an FP32
/// output `[2]` (`[1.5, -2]`); `open_rank`, `y = Identity(x)` over FP32 of no declared shape.
pub fn echoes(root: &Path) {
    let identity = || vec![node("Identity", "identity", &["x"], "y", Vec::new())];
    let rows = [Dim::Named("N"), Dim::Fixed(3)];
    for (onnx_type, name) in TYPES {
        let echo = model(
            "echo",
            identity(),
            vec![value_info("x", onnx_type, &rows)],
            vec![value_info("y", onnx_type, &rows)],
            Vec::new(),
        );
        write(
            &root.join(format!("echo_{}.onnx", name.to_lowercase())),
            &echo,
        );
    }
    let scalar = model(
        "scalar",
        identity(),
        vec![value_info("x", DataType::Int64, &[])],
        vec![value_info("y", DataType::Int64, &[])],
        Vec::new(),
    );
    write(&root.join("scalar.onnx"), &scalar);
    let constant = model(
        "constant",
        vec![node("Identity", "identity", &["c"], "y", Vec::new())],
        Vec::new(),
        vec![floats("y", &[Dim::Fixed(2)])],
        vec![f32_tensor("c", &[2], &[1.5, -2.0])],
    );
    write(&root.join("constant.onnx"), &constant);
    let unshaped = |name: &str| pb::ValueInfoProto {
        name: name.into(),
        r#type: Some(pb::TypeProto {
            value: Some(pb::type_proto::Value::TensorType(pb::type_proto::Tensor {
                elem_type: DataType::Float as i32,
                shape: None,
            })),
            ..Default::default()
        }),
        ..Default::default()
    };
    let open_rank = model(
        "open_rank",
        identity(),
        vec![unshaped("x")],
        vec![unshaped("y")],
        Vec::new(),
    );
    write(&root.join("open_rank.onnx"), &open_rank);
}

/// The hostile models [`hostile`] writes.
pub const HOSTILE: [&str; 8] = [
    "ext_absolute",
    "ext_parent",
    "ext_link",
    "huge_dims",
    "huge_relu",
    "truncated",
    "empty",
    "garbage",
];

/// Writes hostile model files into the model directory `models`, each a bare `NAME.onnx`
/// beside a `NAME.toml` that pins it to `backend` (`tract` or `onnxruntime`), all derived from
/// the bundled MNIST MLP (names in [`HOSTILE`]):
/// - `ext_absolute`: a weight stored as external data at an absolute path (`/etc/passwd`);
/// - `ext_parent`: external data at `../secret.bin`, a file that exists beside `models`;
/// - `ext_link`: external data in `weights.bin`, a symbolic link to a file in `outside`;
/// - `huge_dims`: an input declared `[N, 2^40, 28, 28]`, an output `[N, 2^40, 2^40]`;
/// - `huge_relu`: a model that would run, whose one sample is 2^40 values (4 TiB);
/// - `truncated`: the first half of the model's bytes; `empty`: none; `garbage`: random bytes.
pub fn hostile(models: &Path, outside: &Path, backend: &str) {
    let source = bundled("mnist");
    let weight = &source.graph.as_ref().unwrap().initializer[0];
    let weight_bytes = weight.dims.iter().product::<i64>() as usize * 4;
    let with_external_weight = |location: &str, length: usize| {
        let mut model = source.clone();
        let tensor = &mut model.graph.as_mut().unwrap().initializer[0];
        tensor.raw_data.clear();
        tensor.float_data.clear();
        tensor.data_location = Some(DataLocation::External as i32);
        tensor.external_data = [
            ("location", location.to_string()),
            ("offset", "0".into()),
            ("length", length.to_string()),
        ]
        .into_iter()
        .map(|(key, value)| pb::StringStringEntryProto {
            key: key.into(),
            value,
        })
        .collect();
        model
    };
    let save =
        |name: &str, model: &pb::ModelProto| write(&models.join(format!("{name}.onnx")), model);

    save("ext_absolute", &with_external_weight("/etc/passwd", 16));
    let beside = models.parent().unwrap().join("secret.bin");
    std::fs::write(beside, vec![0u8; weight_bytes]).unwrap();
    save(
        "ext_parent",
        &with_external_weight("../secret.bin", weight_bytes),
    );
    let linked = outside.join("linked.bin");
    std::fs::write(&linked, vec![0u8; weight_bytes]).unwrap();
    std::os::unix::fs::symlink(&linked, models.join("weights.bin")).unwrap();
    save(
        "ext_link",
        &with_external_weight("weights.bin", weight_bytes),
    );

    let huge = 1usize << 40;
    let mut huge_dims = source.clone();
    let graph = huge_dims.graph.as_mut().unwrap();
    graph.input[0] = floats(
        "input",
        &[
            Dim::Named("N"),
            Dim::Fixed(huge),
            Dim::Fixed(28),
            Dim::Fixed(28),
        ],
    );
    graph.output[0] = floats(
        "logits",
        &[Dim::Named("N"), Dim::Fixed(huge), Dim::Fixed(huge)],
    );
    save("huge_dims", &huge_dims);
    let huge_rows = [Dim::Named("N"), Dim::Fixed(huge)];
    let relu = model(
        "huge",
        vec![node("Relu", "relu", &["x"], "y", Vec::new())],
        vec![floats("x", &huge_rows)],
        vec![floats("y", &huge_rows)],
        Vec::new(),
    );
    save("huge_relu", &relu);

    let whole = std::fs::read(bundled_model("mnist")).unwrap();
    std::fs::write(models.join("truncated.onnx"), &whole[..whole.len() / 2]).unwrap();
    std::fs::write(models.join("empty.onnx"), b"").unwrap();
    std::fs::write(models.join("garbage.onnx"), noise(100_000, 7)).unwrap();
    for name in HOSTILE {
        std::fs::write(
            models.join(format!("{name}.toml")),
            format!("backend = \"{backend}\"\n"),
        )
        .unwrap();
    }
}

/// A directory holding `models/`, the bundled MLP (with its `model.toml`) beside [`hostile`]'s
/// files for `backend`, and `outside/`, which some of them point into. The model directory is
/// `models/` inside it.
pub fn hostile_repository(backend: &str) -> tempfile::TempDir {
    let root = tempfile::tempdir().unwrap();
    let (models, outside) = (root.path().join("models"), root.path().join("outside"));
    std::fs::create_dir_all(&outside).unwrap();
    std::fs::create_dir_all(&models).unwrap();
    crate::install_with_metadata(&models, "mnist");
    hostile(&models, &outside, backend);
    root
}

/// Checks a repository index (`POST /v2/repository/index`) of a directory that [`hostile`]
/// wrote into: each hostile model is unavailable with a reason, and the reasons of those with
/// external data outside the directory say so. Prints each reason, under `engine`'s name.
pub fn assert_hostile_refused(index: &serde_json::Value, engine: &str) {
    let entries = index.as_array().expect("the index is a list");
    let entry = |name: &str| {
        entries
            .iter()
            .find(|e| e["name"] == name)
            .unwrap_or_else(|| panic!("{name} is not in the index: {index}"))
    };
    for name in HOSTILE {
        let entry = entry(name);
        let reason = entry["reason"].as_str().unwrap_or_default();
        assert_eq!(entry["state"], "UNAVAILABLE", "{engine}: {name}: {entry}");
        assert!(
            !reason.is_empty(),
            "{engine}: {name} has no reason: {entry}"
        );
        println!("{engine}: {name}: {reason}");
    }
    for name in ["ext_absolute", "ext_parent", "ext_link"] {
        let reason = entry(name)["reason"].as_str().unwrap().to_lowercase();
        assert!(
            ["outside", "external data", "location"]
                .iter()
                .any(|word| reason.contains(word)),
            "{engine}: {name}: the reason does not name the external data: {reason}"
        );
    }
}

/// `len` bytes of deterministic noise (xorshift64 from `seed`).
fn noise(len: usize, seed: u64) -> Vec<u8> {
    let mut state = seed.max(1);
    (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state >> 56) as u8
        })
        .collect()
}

/// The fixtures are models, and compute what their documentation says: run by tract here, and
/// checked by the `onnx` package's full checker in the full lane (which has the test
/// virtualenv), as the Python scripts that wrote them before did.
#[cfg(test)]
mod tests {
    use tract_onnx::prelude::*;

    use super::*;

    /// Runs the model at `path` on `inputs` (shape, values); its outputs' values.
    fn run(path: &Path, inputs: &[(&[usize], Vec<f32>)]) -> Vec<Vec<f32>> {
        let mut model = tract_onnx::onnx().model_for_path(path).unwrap();
        for (i, (shape, _)) in inputs.iter().enumerate() {
            model.set_input_fact(i, f32::fact(*shape).into()).unwrap();
        }
        let plan = model.into_optimized().unwrap().into_runnable().unwrap();
        let values = inputs
            .iter()
            .map(|(shape, data)| Tensor::from_shape(shape, data).unwrap().into_tvalue())
            .collect();
        plan.run(values)
            .unwrap()
            .iter()
            .map(|t| {
                t.to_plain_array_view::<f32>()
                    .unwrap()
                    .iter()
                    .copied()
                    .collect()
            })
            .collect()
    }

    #[test]
    fn the_slow_model_gives_back_its_input() {
        let dir = tempfile::tempdir().unwrap();
        let path = slow(dir.path());
        let x: Vec<f32> = (0..2 * SLOW_WIDTH).map(|i| i as f32 / 100.0).collect();
        assert_eq!(run(&path, &[(&[2, SLOW_WIDTH], x.clone())]), [x]);
    }

    #[test]
    fn the_flat_model_takes_rows_and_gives_probabilities() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("flat.onnx");
        flat_softmax(&path);
        let image = crate::digits(1).remove(0).0;
        let [probabilities] = run(&path, &[(&[1, 784], image)]).try_into().unwrap();
        assert_eq!(probabilities.len(), 10);
        let sum: f32 = probabilities.iter().sum();
        assert!((sum - 1.0).abs() < 1e-5, "{probabilities:?}");
    }

    #[test]
    fn the_two_input_and_fixed_models_compute_their_sums() {
        let dir = tempfile::tempdir().unwrap();
        two_inputs(dir.path());
        let a = vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0];
        let b = vec![0.5; 6];
        let outputs = run(
            &dir.path().join("two_inputs.onnx"),
            &[(&[2, 3], a), (&[2, 3], b)],
        );
        assert_eq!(
            outputs,
            [
                vec![2.0, 3.0, 4.0, 5.0, 6.0, 7.0],
                vec![0.5, 1.5, 2.5, 3.5, 4.5, 5.5]
            ]
        );
        let fixed = run(&dir.path().join("fixed.onnx"), &[(&[1, 3], vec![1.0; 3])]);
        assert_eq!(fixed, [vec![2.0; 3]]);
    }

    #[test]
    #[ignore = "full lane (scripts/test.sh): the onnx package from the test virtualenv"]
    fn the_fixtures_pass_the_onnx_full_checker() {
        let dir = tempfile::tempdir().unwrap();
        let mut files = vec![slow(dir.path()), dir.path().join("flat.onnx")];
        flat_softmax(&files[1]);
        two_inputs(dir.path());
        files.extend(["two_inputs.onnx", "fixed.onnx"].map(|name| dir.path().join(name)));
        let python = std::env::var_os("AICP_TEST_PYTHON").expect(
            "AICP_TEST_PYTHON names the test virtualenv's python (scripts/test.sh sets it)",
        );
        let script = "import sys, onnx\n\
            for path in sys.argv[1:]:\n    onnx.checker.check_model(onnx.load(path), full_check=True)";
        let out = std::process::Command::new(python)
            .args(["-c", script])
            .args(&files)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}
