//! The bundled models quantised with real calibration digits keep their accuracy on the
//! held-out digits.

use std::path::PathBuf;

use aicp_quantize::{Method, Options, Sample};
use aicp_testkit::bundled_model;
use tract_onnx::prelude::*;

/// `float` quantised with `options`, calibrated on tract with 1,000 real training digits.
fn quantize(float: &[u8], options: &Options) -> Vec<u8> {
    let engine = aicp_engine::tract::TractEngine;
    aicp_quantize::quantize(
        &engine,
        float,
        &signature_of(float),
        &training_digits(1000),
        options,
    )
    .unwrap()
    .model
}

/// The signature of the model in `bytes`.
fn signature_of(bytes: &[u8]) -> aicp_core::ModelSignature {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("model.onnx");
    std::fs::write(&path, bytes).unwrap();
    aicp_engine::onnx::inspect(&path).unwrap().signature
}

/// The first `count` real training digits, each a sample of a `[1, 1, 28, 28]` input.
fn training_digits(count: usize) -> Vec<Sample> {
    aicp_testkit::digits::training(count)
        .chunks(784)
        .map(|digit| {
            Sample(vec![
                aicp_core::Tensor::new(vec![1, 1, 28, 28], digit.to_vec()).unwrap(),
            ])
        })
        .collect()
}

/// The held-out digits, one after another, and their labels.
struct HeldOut {
    images: Vec<f32>,
    labels: Vec<u8>,
}

impl HeldOut {
    fn load() -> Self {
        let digits = aicp_testkit::digits(2000);
        Self {
            images: digits.iter().flat_map(|(p, _)| p.iter().copied()).collect(),
            labels: digits.iter().map(|(_, l)| *l).collect(),
        }
    }

    fn len(&self) -> usize {
        self.labels.len()
    }
}

/// The model's logits for the held-out digits, on tract.
fn logits(model: &[u8], data: &HeldOut) -> Vec<f32> {
    let plan = tract_onnx::onnx()
        .model_for_read(&mut &model[..])
        .unwrap()
        .into_optimized()
        .unwrap()
        .into_runnable()
        .unwrap();
    let input = Tensor::from_shape(&[data.len(), 1, 28, 28], &data.images).unwrap();
    let out = plan.run(tvec!(input.into_tvalue())).unwrap();
    let logits = out[0].to_plain_array_view::<f32>().unwrap();
    logits.iter().copied().collect()
}

fn accuracy(model: &[u8], data: &HeldOut) -> f64 {
    let right = logits(model, data)
        .chunks(10)
        .zip(&data.labels)
        .filter(|(row, l)| {
            (0..10).max_by(|&a, &b| row[a].total_cmp(&row[b])).unwrap() == usize::from(**l)
        })
        .count();
    right as f64 / data.len() as f64
}

fn check(name: &str, options: Options) {
    let data = HeldOut::load();
    let float = std::fs::read(bundled_model(name)).unwrap();
    let int8 = quantize(&float, &options);
    let (before, after) = (accuracy(&float, &data), accuracy(&int8, &data));
    println!(
        "{name} {options:?}: float {:.2}%, int8 {:.2}%, {} -> {} bytes",
        100.0 * before,
        100.0 * after,
        float.len(),
        int8.len()
    );
    assert!(before - after <= 0.005, "{name}: {before} -> {after}");
    assert!(
        int8.len() < float.len() / 3,
        "{} of {}",
        int8.len(),
        float.len()
    );
    if let Some(dir) = std::env::var_os("AICP_QUANTIZE_OUT") {
        let path = PathBuf::from(dir).join(format!(
            "{name}-{:?}-{}.onnx",
            options.method, options.per_channel
        ));
        std::fs::write(path, &int8).unwrap();
    }
}

#[test]
fn the_mlp_keeps_its_accuracy() {
    check("mnist", Options::default());
    check(
        "mnist",
        Options {
            method: Method::Percentile,
            per_channel: true,
            ..Options::default()
        },
    );
}

#[test]
fn the_cnn_keeps_its_accuracy() {
    check("mnist-cnn", Options::default());
    check(
        "mnist-cnn",
        Options {
            method: Method::Percentile,
            per_channel: true,
            ..Options::default()
        },
    );
}

/// With a bound the all-INT8 CNN misses, the operators most sensitive to INT8 stay in float:
/// some, not all; the model meets the bound on the calibration digits; and its float
/// operators read their own float weights.
#[test]
fn a_tight_bound_keeps_the_most_sensitive_operators_in_float() {
    use prost::Message;
    let float = std::fs::read(bundled_model("mnist-cnn")).unwrap();
    let signature = signature_of(&float);
    let samples = training_digits(64);
    let engine = aicp_engine::tract::TractEngine;
    let error_of = |model: &[u8]| {
        let proto = tract_onnx::pb::ModelProto::decode(model).unwrap();
        aicp_quantize::mixed::Checker::new(&engine, &float_proto(&float), &signature, &samples)
            .unwrap()
            .error(&proto, samples.len())
            .unwrap()
    };
    let all = aicp_quantize::quantize(&engine, &float, &signature, &samples, &Options::default())
        .unwrap();
    assert!(all.kept_in_float.is_empty());
    let all_error = error_of(&all.model);
    // Half the all-INT8 model's error: something must stay in float.
    let bound = all_error / 2.0;
    let options = Options {
        max_output_error: Some(bound),
        ..Options::default()
    };
    let mixed = aicp_quantize::quantize(&engine, &float, &signature, &samples, &options).unwrap();
    println!(
        "all INT8: error {all_error:.5}; bound {bound:.5}: {:?} of {} in float, error {:.5}",
        mixed.kept_in_float,
        mixed.operators,
        error_of(&mixed.model)
    );
    assert_eq!(mixed.operators, 4);
    assert!(
        !mixed.kept_in_float.is_empty() && mixed.kept_in_float.len() < mixed.operators,
        "{:?}",
        mixed.kept_in_float
    );
    assert!(error_of(&mixed.model) <= bound);
    let proto = tract_onnx::pb::ModelProto::decode(&mixed.model[..]).unwrap();
    let graph = proto.graph.as_ref().unwrap();
    for name in &mixed.kept_in_float {
        let node = graph
            .node
            .iter()
            .find(|n| aicp_quantize::qdq::node_name(n) == *name)
            .unwrap();
        assert!(
            graph.initializer.iter().any(|t| t.name == node.input[1]),
            "{name} reads {}",
            node.input[1]
        );
    }
}

fn float_proto(bytes: &[u8]) -> tract_onnx::pb::ModelProto {
    use prost::Message;
    tract_onnx::pb::ModelProto::decode(bytes).unwrap()
}

/// tract's integer rewrite of a QDQ model: every product and pass-through operator leaves
/// the float domain, and the answers stay the QDQ graph's. (tract runs the QDQ graph itself in
/// float, so a value on a rounding edge may land one step apart; the CLI's tests check the
/// rewrite against ONNX Runtime's integer kernels, where the logits are equal.)
#[test]
fn tract_runs_the_quantised_models_in_integers() {
    use prost::Message;
    let data = HeldOut::load();
    // (model, per-channel weights, Gemm weights stored transposed as PyTorch exports them,
    // products rewritten)
    for (name, per_channel, trans_b, products) in [
        ("mnist", false, false, 3),
        ("mnist", true, false, 3),
        ("mnist", true, true, 3),
        ("mnist-cnn", false, false, 4),
        ("mnist-cnn", true, false, 4),
    ] {
        let mut float = std::fs::read(bundled_model(name)).unwrap();
        if trans_b {
            float = with_transposed_gemm_weights(&float);
        }
        // A float model has nothing to rewrite, and stays as it is.
        let float_proto = tract_onnx::pb::ModelProto::decode(&float[..]).unwrap();
        let (unchanged, none) = aicp_engine::integer::with_integer_ops(float_proto.clone());
        assert_eq!((none, unchanged), (0, float_proto), "{name}");
        let options = Options {
            per_channel,
            ..Options::default()
        };
        let int8 = quantize(&float, &options);
        let proto = tract_onnx::pb::ModelProto::decode(&int8[..]).unwrap();
        let (rewritten, count) = aicp_engine::integer::with_integer_ops(proto);
        let ops = op_types(&rewritten);
        println!("{name} per_channel={per_channel} trans_b={trans_b}: {ops:?}");
        assert_eq!(count, products, "{name}: {ops:?}");
        assert!(!ops.contains(&"DequantizeLinear"), "{name}: {ops:?}");
        let (qdq, integer) = (
            logits(&int8, &data),
            logits(&rewritten.encode_to_vec(), &data),
        );
        let top = |row: &[f32]| (0..10).max_by(|&a, &b| row[a].total_cmp(&row[b]));
        let same = qdq
            .chunks(10)
            .zip(integer.chunks(10))
            .filter(|(a, b)| top(a) == top(b))
            .count();
        println!(
            "  top-1 agreement with the QDQ graph: {same} of {}",
            data.len()
        );
        assert!(same * 1000 >= data.len() * 998, "{name}: {same}");
        if let Some(dir) = std::env::var_os("AICP_QUANTIZE_OUT") {
            let path =
                PathBuf::from(dir).join(format!("{name}-{per_channel}-{trans_b}-integer.onnx"));
            std::fs::write(path, rewritten.encode_to_vec()).unwrap();
        }
    }
}

/// The float model with each Gemm's weight stored as [N, K] and read with `transB = 1`.
fn with_transposed_gemm_weights(model: &[u8]) -> Vec<u8> {
    use prost::Message;
    use tract_onnx::pb::attribute_proto::AttributeType;
    let mut proto = tract_onnx::pb::ModelProto::decode(model).unwrap();
    let graph = proto.graph.as_mut().unwrap();
    for node in graph.node.iter_mut().filter(|n| n.op_type == "Gemm") {
        node.attribute.retain(|a| a.name != "transB");
        node.attribute.push(tract_onnx::pb::AttributeProto {
            name: "transB".into(),
            r#type: AttributeType::Int as i32,
            i: 1,
            ..Default::default()
        });
        let weight = graph
            .initializer
            .iter_mut()
            .find(|t| t.name == node.input[1])
            .unwrap();
        let (k, n) = (weight.dims[0] as usize, weight.dims[1] as usize);
        let values = aicp_engine::onnx_build::f32_values(weight).unwrap();
        let transposed: Vec<f32> = (0..n * k).map(|i| values[(i % k) * n + i / k]).collect();
        *weight = aicp_engine::onnx_build::f32_tensor(&weight.name, &[n, k], &transposed);
    }
    proto.encode_to_vec()
}

/// Dynamic quantisation of the MLP (its Gemm weights stored as exported, and transposed as
/// PyTorch writes them): no calibration, the same accuracy, and only the products changed.
#[test]
fn the_mlp_quantised_dynamically_keeps_its_accuracy() {
    use prost::Message;
    let dynamic = Options {
        method: Method::Dynamic,
        ..Options::default()
    };
    check("mnist", dynamic);
    let data = HeldOut::load();
    let float = with_transposed_gemm_weights(&std::fs::read(bundled_model("mnist")).unwrap());
    let int8 = aicp_quantize::quantize(
        &aicp_engine::tract::TractEngine,
        &float,
        &aicp_core::ModelSignature {
            inputs: Vec::new(),
            outputs: Vec::new(),
        },
        &[],
        &dynamic,
    )
    .unwrap()
    .model;
    assert!(accuracy(&float, &data) - accuracy(&int8, &data) <= 0.005);
    let proto = tract_onnx::pb::ModelProto::decode(&int8[..]).unwrap();
    let ops = op_types(&proto);
    assert_eq!(
        ops.iter().filter(|op| **op == "MatMulInteger").count(),
        3,
        "{ops:?}"
    );
    assert!(!ops.contains(&"Gemm"), "{ops:?}");
}

/// The operators of `proto`'s graph, in order.
fn op_types(proto: &tract_onnx::pb::ModelProto) -> Vec<&str> {
    let graph = proto.graph.as_ref().unwrap();
    graph.node.iter().map(|n| n.op_type.as_str()).collect()
}
