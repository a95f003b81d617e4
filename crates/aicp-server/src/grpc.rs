//! The Open Inference Protocol over gRPC: `inference.GRPCInferenceService` as Triton's clients
//! speak it (types generated from `proto/` at build time), with the standard `grpc.health.v1`
//! health service and server reflection beside it. Each RPC only translates between protobuf
//! and the runtime's request; what it shares with REST is in [`crate::oip`].

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use aicp_core::{DataType, Error, Result, TensorData};
use aicp_runtime::{InferInput, ModelControl, Runtime};
use tokio_stream::{Stream, StreamExt};
use tonic::{Request, Response, Status, Streaming};

use crate::oip::{self, Output, OutputRequest};
use crate::shed::InFlight;

/// The generated protocol types, server and client (their documentation is the `.proto`
/// files' comments, where they have them).
#[allow(missing_docs)]
pub mod proto {
    tonic::include_proto!("inference");

    /// The compiled `.proto` files, served by reflection.
    pub const FILE_DESCRIPTOR_SET: &[u8] =
        tonic::include_file_descriptor_set!("inference_descriptor");
}

use proto::grpc_inference_service_server::GrpcInferenceService;
use proto::infer_parameter::ParameterChoice;
use proto::model_infer_request::InferInputTensor;
use proto::model_infer_response::InferOutputTensor;
use proto::*;

pub use proto::grpc_inference_service_server::GrpcInferenceServiceServer;

use crate::error::grpc_status as status;

/// The service over a runtime. Who may call which method, and a unary inference call's place
/// in flight, are decided in front of it ([`crate::admission`]).
#[derive(Clone)]
pub struct InferenceService {
    runtime: Arc<Runtime>,
    control: Arc<ModelControl>,
    /// Inference requests in flight, HTTP and gRPC together: each message of a stream takes
    /// its place here once it is whole.
    in_flight: InFlight,
}

impl InferenceService {
    pub fn new(runtime: Arc<Runtime>, control: Arc<ModelControl>, in_flight: InFlight) -> Self {
        Self {
            runtime,
            control,
            in_flight,
        }
    }

    /// [`Self::infer`] under the in-flight cap.
    async fn infer_in_flight(
        &self,
        request: ModelInferRequest,
        deadline: Option<Instant>,
    ) -> Result<ModelInferResponse> {
        let _in_flight = self.in_flight.enter()?;
        self.infer(request, deadline).await
    }

    /// One inference: the protocol's request in, its response out. `deadline` is the call's
    /// (from `grpc-timeout`); the request's own `timeout` parameter may shorten it.
    async fn infer(
        &self,
        request: ModelInferRequest,
        deadline: Option<Instant>,
    ) -> Result<ModelInferResponse> {
        let arrived = Instant::now();
        let timeout = oip::deadline(arrived, timeout_parameter(&request.parameters)?);
        let deadline = match (deadline, timeout) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        // Answered raw unless the request came typed: a request without inputs too, as Triton
        // answers everything (its clients read raw contents only).
        let raw = !request.raw_input_contents.is_empty() || request.inputs.is_empty();
        let version = oip::parse_version(Some(&request.model_version))?;
        let model = self.runtime.model(&request.model_name, version)?;
        // From here on, a refusal counts against the model's statistics (see `Ticket`).
        let prepared = read_inputs(request.inputs, request.raw_input_contents).and_then(|inputs| {
            let requested = request
                .outputs
                .iter()
                .map(|o| {
                    Ok(OutputRequest {
                        name: o.name.clone(),
                        classification: classification(&o.parameters)?,
                        binary: false,
                    })
                })
                .collect::<Result<Vec<_>>>()?;
            Ok((inputs, requested))
        });
        let (inputs, requested) = prepared?;
        oip::check_outputs(&model, &requested)?;
        let response = self.runtime.run(model, inputs, deadline).await?;
        let outputs = oip::select_outputs(&response.model, response.outputs, &requested, false);
        Ok(encode_response(
            &response.model.name,
            response.model.version,
            request.id,
            outputs,
            raw,
        ))
    }
}

/// The request's inputs, from raw little-endian contents (one per input, in order) or from each
/// input's typed contents.
fn read_inputs(tensors: Vec<InferInputTensor>, raw: Vec<Vec<u8>>) -> Result<Vec<InferInput>> {
    if !raw.is_empty() && raw.len() != tensors.len() {
        return Err(Error::invalid(format!(
            "raw_input_contents has {} entries for {} inputs; send one per input",
            raw.len(),
            tensors.len()
        )));
    }
    let mut raw = raw.into_iter();
    tensors
        .into_iter()
        .map(|tensor| {
            let in_input = oip::about_input(&tensor.name);
            let shared_memory = tensor.parameters.contains_key("shared_memory_region");
            let (datatype, shape) =
                oip::input_header(&tensor.datatype, &tensor.shape, shared_memory)
                    .map_err(&in_input)?;
            let data = match (raw.next(), tensor.contents) {
                (Some(_), Some(_)) => {
                    return Err(in_input(Error::invalid(
                        "has contents while the request also has raw_input_contents; use one",
                    )));
                }
                (Some(bytes), None) => TensorData::from_le_bytes(datatype, &bytes),
                (None, Some(contents)) => typed_contents(datatype, contents),
                (None, None) => Err(Error::invalid("has no contents")),
            }
            .map_err(in_input)?;
            Ok(InferInput {
                name: Some(tensor.name),
                shape,
                data,
            })
        })
        .collect()
}

/// Typed contents: each datatype has its field, narrower integers travel widened; FP16 and BF16
/// have none (they travel raw).
fn typed_contents(datatype: DataType, c: InferTensorContents) -> Result<TensorData> {
    fn narrow<W: Copy + std::fmt::Display, N: TryFrom<W>>(
        wide: Vec<W>,
        datatype: DataType,
    ) -> Result<Vec<N>> {
        wide.iter()
            .enumerate()
            .map(|(i, &v)| {
                N::try_from(v).map_err(|_| {
                    Error::invalid(format!("value {v} at index {i} does not fit {datatype}"))
                })
            })
            .collect()
    }
    Ok(match datatype {
        DataType::Bool => TensorData::Bool(c.bool_contents),
        DataType::I8 => TensorData::I8(narrow(c.int_contents, datatype)?),
        DataType::I16 => TensorData::I16(narrow(c.int_contents, datatype)?),
        DataType::I32 => TensorData::I32(c.int_contents),
        DataType::I64 => TensorData::I64(c.int64_contents),
        DataType::U8 => TensorData::U8(narrow(c.uint_contents, datatype)?),
        DataType::U16 => TensorData::U16(narrow(c.uint_contents, datatype)?),
        DataType::U32 => TensorData::U32(c.uint_contents),
        DataType::U64 => TensorData::U64(c.uint64_contents),
        DataType::F32 => TensorData::F32(c.fp32_contents),
        DataType::F64 => TensorData::F64(c.fp64_contents),
        DataType::Bytes => TensorData::Bytes(c.bytes_contents),
        DataType::F16 | DataType::BF16 => {
            return Err(Error::invalid(format!(
                "{datatype} has no typed contents field; send it in raw_input_contents"
            )));
        }
        DataType::Other => return Err(aicp_core::data::unsupported(datatype)),
    })
}

/// An output's typed contents, each datatype in its field (narrower integers widened); `None`
/// for FP16 and BF16, which have no field and travel raw.
fn contents_of(data: TensorData) -> Option<InferTensorContents> {
    let widened = |values: Vec<i32>| InferTensorContents {
        int_contents: values,
        ..Default::default()
    };
    let unsigned = |values: Vec<u32>| InferTensorContents {
        uint_contents: values,
        ..Default::default()
    };
    Some(match data {
        TensorData::Bool(v) => InferTensorContents {
            bool_contents: v,
            ..Default::default()
        },
        TensorData::I8(v) => widened(v.into_iter().map(i32::from).collect()),
        TensorData::I16(v) => widened(v.into_iter().map(i32::from).collect()),
        TensorData::I32(v) => widened(v),
        TensorData::I64(v) => InferTensorContents {
            int64_contents: v,
            ..Default::default()
        },
        TensorData::U8(v) => unsigned(v.into_iter().map(u32::from).collect()),
        TensorData::U16(v) => unsigned(v.into_iter().map(u32::from).collect()),
        TensorData::U32(v) => unsigned(v),
        TensorData::U64(v) => InferTensorContents {
            uint64_contents: v,
            ..Default::default()
        },
        TensorData::F32(v) => InferTensorContents {
            fp32_contents: v,
            ..Default::default()
        },
        TensorData::F64(v) => InferTensorContents {
            fp64_contents: v,
            ..Default::default()
        },
        TensorData::Bytes(v) => InferTensorContents {
            bytes_contents: v,
            ..Default::default()
        },
        TensorData::F16(_) | TensorData::BF16(_) => return None,
    })
}

/// The request's `timeout` parameter, in microseconds (as Triton reads it).
fn timeout_parameter(parameters: &HashMap<String, InferParameter>) -> Result<Option<u64>> {
    let Some(parameter) = parameters.get("timeout") else {
        return Ok(None);
    };
    match parameter.parameter_choice {
        Some(ParameterChoice::Int64Param(n)) if n >= 0 => Ok(Some(n as u64)),
        Some(ParameterChoice::Uint64Param(n)) => Ok(Some(n)),
        _ => Err(Error::invalid(format!(
            "parameter \"timeout\" must be a non-negative integer (microseconds), got {parameter:?}"
        ))),
    }
}

/// The deadline of a call, from its `grpc-timeout` header, fixed as the call arrives (see
/// [`stamp_deadline`]).
#[derive(Debug, Clone, Copy)]
struct CallDeadline(Instant);

/// Runs as a call arrives, before its message is decoded: fixes its deadline from the
/// `grpc-timeout` header. The caller's own channel (tonic's, grpc-go's) cancels the call when
/// the timeout expires, and tonic's server answers CANCELLED at that moment too; our deadline
/// is a little earlier (a tenth of the timeout, at most 5 ms), so that our DEADLINE_EXCEEDED
/// and its message reach the caller first.
pub fn stamp_deadline<B>(request: &mut axum::http::Request<B>) {
    if let Some(timeout) = grpc_timeout(request.headers()) {
        let margin = (timeout / 10).min(Duration::from_millis(5));
        if let Some(deadline) = Instant::now().checked_add(timeout - margin) {
            request.extensions_mut().insert(CallDeadline(deadline));
        }
    }
}

fn call_deadline<T>(request: &Request<T>) -> Option<Instant> {
    request.extensions().get::<CallDeadline>().map(|d| d.0)
}

/// A `grpc-timeout` header: "<up to 8 digits><H|M|S|m|u|n>".
fn grpc_timeout(headers: &axum::http::HeaderMap) -> Option<Duration> {
    let value = headers.get("grpc-timeout")?.to_str().ok()?;
    let (digits, unit) = value.split_at(value.len().checked_sub(1)?);
    let amount: u64 = digits.parse().ok()?;
    let timeout = match unit {
        "H" => Duration::from_secs(amount.saturating_mul(3600)),
        "M" => Duration::from_secs(amount.saturating_mul(60)),
        "S" => Duration::from_secs(amount),
        "m" => Duration::from_millis(amount),
        "u" => Duration::from_micros(amount),
        "n" => Duration::from_nanos(amount),
        _ => return None,
    };
    Some(timeout)
}

/// The classification extension's parameter on a requested output.
fn classification(parameters: &HashMap<String, InferParameter>) -> Result<Option<usize>> {
    let Some(parameter) = parameters.get("classification") else {
        return Ok(None);
    };
    let count = match parameter.parameter_choice {
        Some(ParameterChoice::Int64Param(n)) => usize::try_from(n).ok(),
        Some(ParameterChoice::Uint64Param(n)) => usize::try_from(n).ok(),
        _ => None,
    };
    count.map(Some).ok_or_else(|| {
        Error::invalid(format!(
            "parameter \"classification\" must be a non-negative integer, got {parameter:?}"
        ))
    })
}

/// The response, with raw output contents when the request came raw or without inputs (as
/// Triton's clients expect) or an output has no typed field (FP16, BF16), typed contents otherwise.
fn encode_response(
    model: &str,
    version: u64,
    id: String,
    outputs: Vec<Output>,
    raw: bool,
) -> ModelInferResponse {
    let raw = raw
        || outputs
            .iter()
            .any(|o| matches!(o.data, TensorData::F16(_) | TensorData::BF16(_)));
    let mut raw_output_contents = Vec::new();
    let outputs = outputs
        .into_iter()
        .map(|o| {
            let mut tensor = InferOutputTensor {
                name: o.name,
                datatype: o.data.datatype().name().to_string(),
                shape: o.shape.iter().map(|&d| d as i64).collect(),
                parameters: HashMap::new(),
                contents: None,
            };
            if raw {
                raw_output_contents.push(o.data.to_le_bytes());
            } else {
                tensor.contents = contents_of(o.data);
            }
            tensor
        })
        .collect();
    ModelInferResponse {
        model_name: model.to_string(),
        model_version: version.to_string(),
        id,
        parameters: HashMap::new(),
        outputs,
        raw_output_contents,
    }
}

type RpcResult<T> = std::result::Result<Response<T>, Status>;

#[tonic::async_trait]
impl GrpcInferenceService for InferenceService {
    async fn server_live(&self, _: Request<ServerLiveRequest>) -> RpcResult<ServerLiveResponse> {
        Ok(Response::new(ServerLiveResponse { live: true }))
    }

    async fn server_ready(&self, _: Request<ServerReadyRequest>) -> RpcResult<ServerReadyResponse> {
        let ready = self.runtime.ready().is_ok();
        Ok(Response::new(ServerReadyResponse { ready }))
    }

    async fn model_ready(
        &self,
        request: Request<ModelReadyRequest>,
    ) -> RpcResult<ModelReadyResponse> {
        let r = request.into_inner();
        let ready = oip::model_ready(&self.runtime, &r.name, Some(&r.version)).map_err(status)?;
        Ok(Response::new(ModelReadyResponse { ready }))
    }

    async fn server_metadata(
        &self,
        _: Request<ServerMetadataRequest>,
    ) -> RpcResult<ServerMetadataResponse> {
        Ok(Response::new(ServerMetadataResponse {
            name: oip::SERVER_NAME.into(),
            version: oip::SERVER_VERSION.into(),
            extensions: oip::EXTENSIONS.iter().map(|e| e.to_string()).collect(),
        }))
    }

    async fn model_metadata(
        &self,
        request: Request<ModelMetadataRequest>,
    ) -> RpcResult<ModelMetadataResponse> {
        use model_metadata_response::TensorMetadata;
        let r = request.into_inner();
        let m = oip::model_metadata(&self.runtime, &r.name, Some(&r.version)).map_err(status)?;
        let tensors = |list: Vec<oip::TensorMetadata>| {
            list.into_iter()
                .map(|t| TensorMetadata {
                    name: t.name,
                    datatype: t.datatype.into(),
                    shape: t.shape,
                })
                .collect()
        };
        Ok(Response::new(ModelMetadataResponse {
            name: m.name,
            versions: m.versions,
            platform: m.platform.into(),
            inputs: tensors(m.inputs),
            outputs: tensors(m.outputs),
        }))
    }

    async fn model_infer(
        &self,
        request: Request<ModelInferRequest>,
    ) -> RpcResult<ModelInferResponse> {
        let deadline = call_deadline(&request);
        self.infer(request.into_inner(), deadline)
            .await
            .map(Response::new)
            .map_err(status)
    }

    type ModelStreamInferStream =
        Pin<Box<dyn Stream<Item = std::result::Result<ModelStreamInferResponse, Status>> + Send>>;

    /// Answers each request of the stream in order; a failed request answers with its error
    /// message and the stream goes on.
    async fn model_stream_infer(
        &self,
        request: Request<Streaming<ModelInferRequest>>,
    ) -> RpcResult<Self::ModelStreamInferStream> {
        let deadline = call_deadline(&request);
        let mut requests = request.into_inner();
        let service = self.clone();
        let responses = async_stream_of(move |sender| async move {
            while let Some(next) = requests.next().await {
                let reply = match next {
                    Err(status) => Err(status),
                    // Each message takes a place in flight while it runs, as a unary call
                    // does: an open stream waiting for its next message holds none.
                    Ok(request) => Ok(match service.infer_in_flight(request, deadline).await {
                        Ok(response) => ModelStreamInferResponse {
                            error_message: String::new(),
                            infer_response: Some(response),
                        },
                        Err(e) => ModelStreamInferResponse {
                            error_message: e.message,
                            infer_response: None,
                        },
                    }),
                };
                if sender.send(reply).await.is_err() {
                    break;
                }
            }
        });
        Ok(Response::new(Box::pin(responses)))
    }

    async fn model_config(
        &self,
        request: Request<ModelConfigRequest>,
    ) -> RpcResult<ModelConfigResponse> {
        let r = request.into_inner();
        let model = oip::find(&self.runtime, &r.name, Some(&r.version)).map_err(status)?;
        let c = oip::model_config(&model);
        let tensor = |t: oip::ConfigTensor| (t.name, proto_datatype(t.data_type) as i32, t.dims);
        let config = ModelConfig {
            name: c.name,
            platform: c.platform.into(),
            backend: c.backend,
            max_batch_size: i32::try_from(c.max_batch_size).unwrap_or(i32::MAX),
            input: c
                .input
                .into_iter()
                .map(tensor)
                .map(|(name, data_type, dims)| ModelInput {
                    name,
                    data_type,
                    dims,
                })
                .collect(),
            output: c
                .output
                .into_iter()
                .map(tensor)
                .map(|(name, data_type, dims)| ModelOutput {
                    name,
                    data_type,
                    dims,
                })
                .collect(),
            instance_group: c
                .instance_group
                .into_iter()
                .map(|g| ModelInstanceGroup {
                    name: g.name,
                    count: g.count as i32,
                    kind: model_instance_group::Kind::Cpu as i32,
                })
                .collect(),
            dynamic_batching: c.dynamic_batching.map(|d| ModelDynamicBatching {
                preferred_batch_size: d
                    .preferred_batch_size
                    .into_iter()
                    .map(|size| i32::try_from(size).unwrap_or(i32::MAX))
                    .collect(),
                max_queue_delay_microseconds: d.max_queue_delay_microseconds,
            }),
            ensemble_scheduling: c.ensemble_scheduling.map(|e| ModelEnsembling {
                step: e
                    .step
                    .into_iter()
                    .map(|s| model_ensembling::Step {
                        model_name: s.model_name,
                        model_version: i64::try_from(s.model_version).unwrap_or(i64::MAX),
                        input_map: s.input_map.into_iter().collect(),
                        output_map: s.output_map.into_iter().collect(),
                    })
                    .collect(),
            }),
        };
        Ok(Response::new(ModelConfigResponse {
            config: Some(config),
        }))
    }

    async fn model_statistics(
        &self,
        request: Request<ModelStatisticsRequest>,
    ) -> RpcResult<ModelStatisticsResponse> {
        let r = request.into_inner();
        let name = (!r.name.is_empty()).then_some(r.name.as_str());
        let stats = oip::model_statistics(&self.runtime, name, Some(&r.version)).map_err(status)?;
        let duration = |d: aicp_runtime::CountAndDuration| {
            Some(StatisticDuration {
                count: d.count,
                ns: d.ns,
            })
        };
        let model_stats = stats
            .into_iter()
            .map(|s| {
                let i = s.inference_stats;
                ModelStatistics {
                    name: s.name,
                    version: s.version,
                    last_inference: s.last_inference,
                    inference_count: s.inference_count,
                    execution_count: s.execution_count,
                    inference_stats: Some(InferStatistics {
                        success: duration(i.success),
                        fail: duration(i.fail),
                        queue: duration(i.queue),
                        compute_input: duration(i.compute_input),
                        compute_infer: duration(i.compute_infer),
                        compute_output: duration(i.compute_output),
                        cache_hit: duration(i.cache_hit),
                        cache_miss: duration(i.cache_miss),
                    }),
                    batch_stats: s
                        .batch_stats
                        .into_iter()
                        .map(|b| InferBatchStatistics {
                            batch_size: b.batch_size as u64,
                            compute_input: duration(b.compute_input),
                            compute_infer: duration(b.compute_infer),
                            compute_output: duration(b.compute_output),
                        })
                        .collect(),
                }
            })
            .collect();
        Ok(Response::new(ModelStatisticsResponse { model_stats }))
    }

    async fn repository_index(
        &self,
        request: Request<RepositoryIndexRequest>,
    ) -> RpcResult<RepositoryIndexResponse> {
        let r = request.into_inner();
        let repository = self.runtime.repository().map_err(status)?;
        let models = oip::repository_index(&repository, r.ready)
            .into_iter()
            .map(|e| repository_index_response::ModelIndex {
                name: e.name,
                version: e.version,
                state: e.state.into(),
                reason: e.reason,
            })
            .collect();
        Ok(Response::new(RepositoryIndexResponse { models }))
    }

    async fn repository_model_load(
        &self,
        request: Request<RepositoryModelLoadRequest>,
    ) -> RpcResult<RepositoryModelLoadResponse> {
        let control = self.control.clone();
        let name = request.into_inner().model_name;
        crate::v2_rest::blocking(move || control.load(&name))
            .await
            .map_err(status)?;
        Ok(Response::new(RepositoryModelLoadResponse {}))
    }

    async fn repository_model_unload(
        &self,
        request: Request<RepositoryModelUnloadRequest>,
    ) -> RpcResult<RepositoryModelUnloadResponse> {
        let control = self.control.clone();
        let name = request.into_inner().model_name;
        crate::v2_rest::blocking(move || control.unload(&name))
            .await
            .map_err(status)?;
        Ok(Response::new(RepositoryModelUnloadResponse {}))
    }
}

/// A stream fed by a task: `produce` sends items until it returns or the receiver is dropped.
fn async_stream_of<T, F, Fut>(produce: F) -> impl Stream<Item = T> + Send
where
    T: Send + 'static,
    F: FnOnce(tokio::sync::mpsc::Sender<T>) -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let (sender, receiver) = tokio::sync::mpsc::channel(16);
    tokio::spawn(produce(sender));
    tokio_stream::wrappers::ReceiverStream::new(receiver)
}

/// The model configuration's enum for a type.
fn proto_datatype(datatype: DataType) -> proto::DataType {
    use proto::DataType as P;
    match datatype {
        DataType::Bool => P::TypeBool,
        DataType::U8 => P::TypeUint8,
        DataType::U16 => P::TypeUint16,
        DataType::U32 => P::TypeUint32,
        DataType::U64 => P::TypeUint64,
        DataType::I8 => P::TypeInt8,
        DataType::I16 => P::TypeInt16,
        DataType::I32 => P::TypeInt32,
        DataType::I64 => P::TypeInt64,
        DataType::F16 => P::TypeFp16,
        DataType::BF16 => P::TypeBf16,
        DataType::F32 => P::TypeFp32,
        DataType::F64 => P::TypeFp64,
        DataType::Bytes => P::TypeString,
        DataType::Other => P::TypeInvalid,
    }
}
