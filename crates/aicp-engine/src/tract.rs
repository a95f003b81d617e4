//! The tract engine: pure Rust, always available.

use std::path::Path;

use aicp_core::{Error, Input, ModelSignature, Result, Tensor, TensorData};
use tract_onnx::pb::ModelProto;
use tract_onnx::prelude::{
    Datum, DatumType, Framework, InferenceFact, InferenceModel, InferenceModelExt, IntoRunnable,
    IntoTValue, TValue, TVec, TractResult, TypedSimpleState, tract_ndarray, tvec,
};

use crate::{Engine, EngineKind, LoadOptions, Runnable, integer, onnx};

/// tract's name among the engines ([`crate::registry`]).
pub const KIND: EngineKind = EngineKind::new("tract");

/// Loads models with tract-onnx.
#[derive(Debug, Default, Clone, Copy)]
pub struct TractEngine;

/// Leaves tract's Intel AMX int8 kernels out of its choice, keeping its AVX-512/AVX VNNI
/// ones. With them, integer products (an INT8 model, [`integer`]) crashed the process with
/// SIGSEGV inside `avx512amx_mmm_i32_16x16` (tract 0.23.9), intermittently, when the machine
/// was busy. tract probes the CPU once, on its first use, so every entry into tract in aicp
/// calls this first: the engine's load, the integer rewrite, calibration, `aicp` at start-up. A
/// `TRACT_CPU_ISA` set in the environment is left as the deployer set it.
pub fn without_amx_kernels() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        if std::env::var_os("TRACT_CPU_ISA").is_none() {
            tract_onnx::prelude::tract_linalg::knobs::TRACT_CPU_ISA
                .set(Some("-amx-int8".to_string()));
        }
    });
}

/// A model's plans, shared by nothing else, and the states their runs reuse (tract's own shape:
/// a plan spawns a state per thread).
struct TractModel {
    plans: Plans,
    /// For a quantised model whose input is quantised to the pixels' own scale: the same
    /// model taking the pixels as its quantised input ([`onnx::with_pixel_input`]).
    pixels: Option<TypedSimpleState>,
}

enum Plans {
    /// One plan for every shape: the model analysed with its variable dimensions symbolic.
    Symbolic(TypedSimpleState),
    /// A plan per concrete input shape, made when a request first brings that shape: for a
    /// model tract cannot analyse with symbolic dimensions.
    PerShape(ShapePlans),
}

/// tract's plan for `proto`, with a QDQ model's products on tract's integer kernels
/// ([`integer`]). Should tract refuse the rewritten graph, it gets the graph as written.
fn plan(proto: ModelProto) -> TractResult<TypedSimpleState> {
    let build = |proto: &ModelProto| {
        tract_onnx::onnx()
            .model_for_proto_model(proto)
            .and_then(|model| model.into_optimized())
            .and_then(|model| model.into_runnable())
            .and_then(|plan| plan.spawn())
    };
    let quantized = proto
        .graph
        .as_ref()
        .is_some_and(|graph| graph.node.iter().any(|n| n.op_type == "DequantizeLinear"));
    if !quantized {
        return build(&proto);
    }
    match integer::with_integer_ops(proto.clone()) {
        (rewritten, 1..) => build(&rewritten).or_else(|_| build(&proto)),
        _ => build(&proto),
    }
}

/// Gives every dimension of the model's inputs that has neither a value nor a name a symbol of
/// its own: tract reads such a dimension as unknown, and a model whose inputs have unknown
/// dimensions cannot be analysed, where one with symbols often can. (tract also reads names
/// starting `unk__`, which exporters write for "unnamed", as unknown.)
pub(crate) fn name_unnamed_dimensions(proto: &mut ModelProto) {
    use tract_onnx::pb::tensor_shape_proto::dimension::Value;
    let Some(graph) = proto.graph.as_mut() else {
        return;
    };
    let mut next = 0;
    for input in &mut graph.input {
        let Some(tract_onnx::pb::type_proto::Value::TensorType(tensor)) =
            input.r#type.as_mut().and_then(|t| t.value.as_mut())
        else {
            continue;
        };
        for dim in tensor.shape.iter_mut().flat_map(|s| s.dim.iter_mut()) {
            let unnamed = match &dim.value {
                None => true,
                Some(Value::DimValue(v)) => *v < 0,
                Some(Value::DimParam(p)) => p.is_empty() || p == "?" || p.starts_with("unk__"),
            };
            if unnamed {
                dim.value = Some(Value::DimParam(format!("aicp_dim{next}")));
                next += 1;
            }
        }
    }
}

/// The operators of `model` tract does not implement, by ONNX name.
fn unimplemented(model: &InferenceModel) -> Vec<String> {
    let mut names: Vec<String> = model
        .nodes()
        .iter()
        .filter_map(|node| {
            let name = node.op.name();
            name.strip_prefix("Unimplemented(")
                .and_then(|rest| rest.strip_suffix(')'))
                .map(str::to_string)
        })
        .collect();
    names.sort();
    names.dedup();
    names
}

impl Engine for TractEngine {
    fn kind(&self) -> EngineKind {
        KIND
    }

    fn load(
        &self,
        path: &Path,
        signature: &ModelSignature,
        options: &LoadOptions,
    ) -> Result<Box<dyn Runnable>> {
        let failed = |e: tract_onnx::prelude::TractError| {
            Error::invalid(format!("tract cannot load {}: {e:#}", path.display()))
        };
        without_amx_kernels();
        let mut proto = tract_onnx::onnx()
            .proto_model_for_path(path)
            .map_err(failed)?;
        name_unnamed_dimensions(&mut proto);
        // The batch dimension stays symbolic: one plan serves every batch size.
        let symbolic = match plan(proto.clone()) {
            Ok(state) => state,
            Err(symbolic) => {
                let plans = ShapePlans::new(&proto, signature, options).map_err(failed)?;
                let missing = unimplemented(&plans.model);
                if !missing.is_empty() {
                    return Err(Error::invalid(format!(
                        "tract cannot load {}: it does not implement the operator(s) {}",
                        path.display(),
                        missing.join(", ")
                    )));
                }
                tracing::info!(
                    "model {:?}: tract cannot analyse it with its dimensions symbolic ({symbolic:#}); \
                     it makes a plan for each input shape as requests bring them (at most {} kept)",
                    options.model,
                    plans.capacity
                );
                return Ok(Box::new(TractModel {
                    plans: Plans::PerShape(plans),
                    pixels: None,
                }));
            }
        };
        // Only a model that takes pixels as its quantised input gains from a plan of its own;
        // any other is fed pixels normalised on the host.
        let pixel_model = options
            .pixels
            .map(|scale| onnx::with_pixel_input(path, scale))
            .transpose()?;
        let pixels = match pixel_model {
            Some(model) if model.quantized => Some(plan(model.proto).map_err(failed)?),
            _ => None,
        };
        Ok(Box::new(TractModel {
            plans: Plans::Symbolic(symbolic),
            pixels,
        }))
    }
}

/// The inputs' element types and shapes a plan was made for.
type ShapeKey = Vec<(DatumType, Vec<usize>)>;

/// Plans for concrete input shapes, made at first use and kept, the most recently used last,
/// up to `capacity`. A model whose inputs and outputs all vary in their first dimension (one
/// that batches) has its batch rounded up to a power of two: the rows added are zeros, and
/// their outputs are cut off again, so batches of 5 to 8 share one plan.
struct ShapePlans {
    model: InferenceModel,
    plans: Vec<(ShapeKey, TypedSimpleState)>,
    capacity: usize,
    batched: bool,
    name: String,
}

impl ShapePlans {
    fn new(
        proto: &ModelProto,
        signature: &ModelSignature,
        options: &LoadOptions,
    ) -> TractResult<Self> {
        // Concrete shapes make the declared shapes of intermediate values useless, and a
        // declaration tract disagrees with is a common reason for it to refuse a model.
        let model = tract_onnx::onnx()
            .with_ignore_value_info(true)
            .model_for_proto_model(proto)?;
        // The rule by which the runtime batches a model: rows can be added and cut off again.
        let batched = !signature.inputs.is_empty()
            && signature
                .inputs
                .iter()
                .chain(&signature.outputs)
                .all(aicp_core::TensorSpec::varies_first);
        Ok(Self {
            model,
            plans: Vec::new(),
            capacity: options.plan_cache.max(1),
            batched,
            name: options.model.clone(),
        })
    }

    fn run(&mut self, inputs: Vec<Tensor>) -> Result<Vec<Tensor>> {
        let rows = inputs
            .first()
            .and_then(|input| input.shape.first().copied())
            .filter(|_| self.batched);
        let bucket = rows.map(|rows| rows.max(1).next_power_of_two());
        let inputs = match (rows, bucket) {
            (Some(rows), Some(bucket)) if bucket > rows => inputs
                .into_iter()
                .map(|input| pad_rows(input, bucket))
                .collect::<Result<Vec<_>>>()?,
            _ => inputs,
        };
        let key: ShapeKey = inputs
            .iter()
            .map(|input| Ok((datum_type(&input.data)?, input.shape.clone())))
            .collect::<Result<_>>()?;
        let values = inputs
            .into_iter()
            .map(tract_value)
            .collect::<Result<TVec<TValue>>>()?;
        let state = self.plan(key)?;
        let outputs = run_alone(state, values)
            .map_err(|e| Error::internal(format!("tract inference failed: {e:#}")))?;
        let outputs = outputs.iter().map(tensor_of).collect::<Result<Vec<_>>>()?;
        Ok(match (rows, bucket) {
            (Some(rows), Some(bucket)) if bucket > rows => {
                outputs.iter().map(|output| output.rows(0, rows)).collect()
            }
            _ => outputs,
        })
    }

    /// The plan for `key`: kept from before, or made now (the model analysed at those shapes,
    /// optimised and compiled, which the request that brings a new shape waits for).
    fn plan(&mut self, key: ShapeKey) -> Result<&mut TypedSimpleState> {
        if let Some(i) = self.plans.iter().position(|(k, _)| *k == key) {
            let used = self.plans.remove(i);
            self.plans.push(used);
        } else {
            let started = std::time::Instant::now();
            let shapes: Vec<&Vec<usize>> = key.iter().map(|(_, shape)| shape).collect();
            // Most often the shapes do not fit the model (a dimension it needs to be a multiple
            // of something, two inputs that must agree): the request's fault.
            let state = self.make(&key).map_err(|e| {
                Error::invalid(format!(
                    "tract cannot run the model at input shapes {shapes:?}: {e:#}"
                ))
            })?;
            let took = started.elapsed();
            tracing::info!(
                model = %self.name,
                "tract made a plan for input shapes {shapes:?} in {} ms: the first request of \
                 these shapes waited for it",
                took.as_millis()
            );
            let labels = [("model", self.name.clone())];
            metrics::counter!("aicp_tract_plan_builds_total", &labels).increment(1);
            metrics::histogram!("aicp_tract_plan_build_seconds", &labels)
                .record(took.as_secs_f64());
            if self.plans.len() >= self.capacity {
                self.plans.remove(0);
            }
            self.plans.push((key, state));
            metrics::gauge!("aicp_tract_plans_cached", &labels).set(self.plans.len() as f64);
        }
        let (_, state) = self.plans.last_mut().expect("a plan was just kept");
        Ok(state)
    }

    fn make(&self, key: &ShapeKey) -> TractResult<TypedSimpleState> {
        let mut model = self.model.clone();
        for (i, (datum, shape)) in key.iter().enumerate() {
            model.set_input_fact(i, InferenceFact::dt_shape(*datum, shape.iter().copied()))?;
        }
        model.into_optimized()?.into_runnable()?.spawn()
    }
}

/// Runs one request on `state`. Operators that keep state from one run to the next (Scan, and
/// so the recurrent layers) start each request from their initial state, as in ONNX Runtime:
/// a request's answer never depends on what ran before it.
fn run_alone(state: &mut TypedSimpleState, values: TVec<TValue>) -> TractResult<TVec<TValue>> {
    if state.op_states.iter().any(Option::is_some) {
        *state = state.plan().spawn()?;
    }
    state.run(values)
}

/// `input` with zero rows added up to `rows`.
fn pad_rows(input: Tensor, rows: usize) -> Result<Tensor> {
    let have = input.shape.first().copied().unwrap_or(1);
    let per_row = input.data.len() / have.max(1);
    let zeros = TensorData::zeros(input.datatype(), (rows - have) * per_row)?;
    let mut shape = input.shape;
    shape[0] = rows;
    Tensor::new(shape, TensorData::concat(&[&input.data, &zeros])?)
}

/// tract's element type for data of ours.
fn datum_type(data: &TensorData) -> Result<DatumType> {
    Ok(match data {
        TensorData::Bool(_) => DatumType::Bool,
        TensorData::U8(_) => DatumType::U8,
        TensorData::U16(_) => DatumType::U16,
        TensorData::U32(_) => DatumType::U32,
        TensorData::U64(_) => DatumType::U64,
        TensorData::I8(_) => DatumType::I8,
        TensorData::I16(_) => DatumType::I16,
        TensorData::I32(_) => DatumType::I32,
        TensorData::I64(_) => DatumType::I64,
        TensorData::F16(_) => DatumType::F16,
        TensorData::F32(_) => DatumType::F32,
        TensorData::F64(_) => DatumType::F64,
        TensorData::Bytes(_) => DatumType::String,
        TensorData::BF16(_) => {
            return Err(Error::invalid(
                "tract has no BF16 tensors: serve this model with ONNX Runtime",
            ));
        }
    })
}

/// A request's buffer as tract's tensor, as it is: no copy.
fn value<T: Datum>(shape: Vec<usize>, data: Vec<T>) -> Result<TValue> {
    tract_ndarray::ArrayD::from_shape_vec(shape, data)
        .map(IntoTValue::into_tvalue)
        .map_err(|e| Error::internal(format!("tract input: {e}")))
}

/// A request's tensor as tract's, of the same type: moved, not copied (BYTES become the Rust
/// strings tract holds, so they must be UTF-8).
pub(crate) fn tract_value(tensor: Tensor) -> Result<TValue> {
    let Tensor { shape, data } = tensor;
    match data {
        TensorData::Bool(v) => value(shape, v),
        TensorData::U8(v) => value(shape, v),
        TensorData::U16(v) => value(shape, v),
        TensorData::U32(v) => value(shape, v),
        TensorData::U64(v) => value(shape, v),
        TensorData::I8(v) => value(shape, v),
        TensorData::I16(v) => value(shape, v),
        TensorData::I32(v) => value(shape, v),
        TensorData::I64(v) => value(shape, v),
        TensorData::F16(v) => value(shape, v),
        TensorData::F32(v) => value(shape, v),
        TensorData::F64(v) => value(shape, v),
        TensorData::BF16(_) => Err(Error::invalid(
            "tract has no BF16 tensors: serve this model with ONNX Runtime",
        )),
        TensorData::Bytes(v) => {
            let strings = v
                .into_iter()
                .enumerate()
                .map(|(i, bytes)| {
                    String::from_utf8(bytes).map_err(|_| {
                        Error::invalid(format!(
                            "BYTES element {i} is not UTF-8: tract takes strings as text"
                        ))
                    })
                })
                .collect::<Result<Vec<String>>>()?;
            value(shape, strings)
        }
    }
}

/// One of tract's values as a tensor of the same type.
pub(crate) fn tensor_of(value: &TValue) -> Result<Tensor> {
    fn values<T: Datum + Clone>(value: &TValue) -> Result<Vec<T>> {
        value
            .to_plain_array_view::<T>()
            .map(|view| view.iter().cloned().collect())
            .map_err(|e| Error::internal(format!("tract output: {e}")))
    }
    let data = match value.datum_type() {
        DatumType::Bool => TensorData::Bool(values(value)?),
        DatumType::U8 => TensorData::U8(values(value)?),
        DatumType::U16 => TensorData::U16(values(value)?),
        DatumType::U32 => TensorData::U32(values(value)?),
        DatumType::U64 => TensorData::U64(values(value)?),
        DatumType::I8 => TensorData::I8(values(value)?),
        DatumType::I16 => TensorData::I16(values(value)?),
        DatumType::I32 => TensorData::I32(values(value)?),
        DatumType::I64 => TensorData::I64(values(value)?),
        DatumType::F16 => TensorData::F16(values(value)?),
        DatumType::F32 => TensorData::F32(values(value)?),
        DatumType::F64 => TensorData::F64(values(value)?),
        DatumType::String => TensorData::Bytes(
            values::<String>(value)?
                .into_iter()
                .map(String::into_bytes)
                .collect(),
        ),
        // Shapes tract computes symbolically come out as its dimension type: ONNX says INT64.
        DatumType::TDim => {
            let integers = value
                .cast_to::<i64>()
                .map_err(|e| Error::internal(format!("tract output: {e}")))?;
            TensorData::I64(
                integers
                    .to_plain_array_view::<i64>()
                    .map_err(|e| Error::internal(format!("tract output: {e}")))?
                    .iter()
                    .copied()
                    .collect(),
            )
        }
        other => {
            return Err(Error::internal(format!(
                "tract gave an output of type {other:?}, which the protocols cannot carry"
            )));
        }
    };
    Tensor::new(value.shape().to_vec(), data)
}

impl Runnable for TractModel {
    fn run(&mut self, inputs: Vec<Input>) -> Result<Vec<Tensor>> {
        // Pixels as they are to a model that takes them as its quantised input.
        let (state, values) = match (&mut self.pixels, Input::lone_pixels(inputs)) {
            (Some(state), Ok(pixels)) => (state, tvec![value(pixels.shape, pixels.data)?]),
            (_, inputs) => {
                let inputs =
                    inputs.map_or_else(|inputs| inputs, |pixels| vec![Input::Pixels(pixels)]);
                // Any other pixels are normalised on the host.
                let tensors = inputs.into_iter().map(Input::into_tensor);
                match &mut self.plans {
                    Plans::PerShape(plans) => return plans.run(tensors.collect()),
                    Plans::Symbolic(state) => {
                        let values = tensors.map(tract_value).collect::<Result<TVec<TValue>>>()?;
                        (state, values)
                    }
                }
            }
        };
        let outputs = run_alone(state, values)
            .map_err(|e| Error::internal(format!("tract inference failed: {e:#}")))?;
        outputs.iter().map(tensor_of).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::onnx_build::{Dim, node, value_info};
    use aicp_core::{DataType, TensorSpec};
    use tract_onnx::pb;

    /// `y = Identity(x)` over FP32, declared `dims` (`None`: no shape at all).
    fn identity(dims: Option<&[Dim]>) -> ModelProto {
        let declared = |name: &str| {
            let mut info = value_info(name, pb::tensor_proto::DataType::Float, dims.unwrap_or(&[]));
            if dims.is_none() {
                let Some(pb::type_proto::Value::TensorType(tensor)) =
                    info.r#type.as_mut().and_then(|t| t.value.as_mut())
                else {
                    unreachable!("value_info declares a tensor")
                };
                tensor.shape = None;
            }
            info
        };
        ModelProto {
            ir_version: 8,
            opset_import: vec![pb::OperatorSetIdProto {
                domain: String::new(),
                version: 13,
            }],
            graph: Some(pb::GraphProto {
                node: vec![node("Identity", "identity", &["x"], "y", Vec::new())],
                input: vec![declared("x")],
                output: vec![declared("y")],
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn signature(shape: Option<Vec<Option<usize>>>) -> ModelSignature {
        let spec = |name: &str| TensorSpec {
            name: name.into(),
            datatype: DataType::F32,
            shape: shape.clone(),
        };
        ModelSignature {
            inputs: vec![spec("x")],
            outputs: vec![spec("y")],
        }
    }

    fn floats(shape: &[usize]) -> Tensor {
        let n = shape.iter().product::<usize>();
        Tensor::new(shape.to_vec(), (0..n).map(|v| v as f32).collect::<Vec<_>>()).unwrap()
    }

    fn options(plan_cache: usize) -> LoadOptions {
        LoadOptions {
            model: "m".into(),
            plan_cache,
            ..LoadOptions::default()
        }
    }

    #[test]
    fn unnamed_dimensions_get_symbols_of_their_own() {
        let mut proto = identity(Some(&[
            Dim::Named(""),
            Dim::Named("unk__7"),
            Dim::Named("seq"),
            Dim::Fixed(3),
        ]));
        name_unnamed_dimensions(&mut proto);
        let graph = proto.graph.unwrap();
        let Some(pb::type_proto::Value::TensorType(tensor)) = graph.input[0]
            .r#type
            .as_ref()
            .and_then(|t| t.value.as_ref())
        else {
            unreachable!()
        };
        use pb::tensor_shape_proto::dimension::Value;
        let dims: Vec<Value> = tensor
            .shape
            .as_ref()
            .unwrap()
            .dim
            .iter()
            .map(|d| d.value.clone().unwrap())
            .collect();
        assert_eq!(
            dims,
            vec![
                Value::DimParam("aicp_dim0".into()),
                Value::DimParam("aicp_dim1".into()),
                Value::DimParam("seq".into()),
                Value::DimValue(3),
            ]
        );
    }

    #[test]
    fn a_model_tract_cannot_analyse_runs_at_each_shape_it_is_given() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("open.onnx");
        std::fs::write(&path, prost::Message::encode_to_vec(&identity(None))).unwrap();
        let mut model = TractEngine
            .load(&path, &signature(None), &options(2))
            .unwrap();
        for shape in [vec![3], vec![2, 2], vec![], vec![3]] {
            let outputs = model.run(vec![floats(&shape).into()]).unwrap();
            assert_eq!(outputs, vec![floats(&shape)], "shape {shape:?}");
        }
    }

    #[test]
    fn plans_are_kept_up_to_the_cache_size_the_least_recently_used_going_first() {
        let proto = identity(None);
        let mut plans = ShapePlans::new(&proto, &signature(None), &options(2)).unwrap();
        let kept = |plans: &ShapePlans| -> Vec<Vec<usize>> {
            plans
                .plans
                .iter()
                .map(|(key, _)| key[0].1.clone())
                .collect()
        };
        for shape in [[1], [2], [1], [3]] {
            plans.run(vec![floats(&shape)]).unwrap();
        }
        assert_eq!(kept(&plans), vec![vec![1], vec![3]]);
    }

    #[test]
    fn batches_are_padded_to_a_power_of_two_and_trimmed_again() {
        let proto = identity(Some(&[Dim::Named("N"), Dim::Fixed(2)]));
        let batched = signature(Some(vec![None, Some(2)]));
        let mut plans = ShapePlans::new(&proto, &batched, &options(4)).unwrap();
        for rows in [3, 4, 1, 5] {
            let outputs = plans.run(vec![floats(&[rows, 2])]).unwrap();
            assert_eq!(outputs, vec![floats(&[rows, 2])], "{rows} rows");
        }
        let rows: Vec<usize> = plans.plans.iter().map(|(key, _)| key[0].1[0]).collect();
        assert_eq!(rows, vec![4, 1, 8], "batches of 3 and 4 share a plan");
    }
}
