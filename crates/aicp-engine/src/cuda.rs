//! The CUDA engine: tract-cuda runs a model's graph on an NVIDIA GPU.
//!
//! Nothing of CUDA is linked. The driver (`libcuda.so.1`) and the CUDA 13 libraries (cudart,
//! nvrtc, cublas, cublasLt, cudnn) are opened when [`CudaEngine::probe`] looks for a GPU, so a
//! binary with this engine runs on any machine and uses a GPU only where it finds one.
//!
//! tract-cuda compiles its kernels with NVRTC when the probe opens the GPU (tens of seconds the
//! first time) and keeps them in a cache directory (`$XDG_CACHE_HOME`, else `~/.cache`, under
//! `tract/<version>/cuda`; `aicp serve --cuda-cache-dir` sets it), so a restart reuses them and
//! no request ever waits for a compilation.
//!
//! Transfers are the cost for small models, so each model instance keeps page-locked (pinned)
//! host buffers for its inputs and outputs, grown to the largest batch seen and then reused, and
//! copies through them on its own CUDA stream. Device memory comes from CUDA's stream-ordered
//! pool, told at start-up to keep what it frees: a steady stream of batches allocates nothing.
//! A model that takes pixels gets a second plan whose graph starts with Cast, Mul and Add
//! ([`crate::onnx::with_pixel_input`]): its uint8 data crosses to the device, a quarter of the
//! float32 bytes, and is normalised there.
//!
//! Large inputs are copied into the pinned buffers by several threads: one core fills them at
//! a fraction of the speed the GPU reads them.
//!
//! Every load ends with a cross-check: a small batch through each plan, compared with tract on
//! the CPU. A model whose GPU answers differ is refused here (and then served on the CPU by the
//! runtime), so a GPU kernel's bug can cost speed but never a wrong answer. Then the load
//! measures the smallest batch the GPU runs faster than tract ([`GpuMinBatch`]); smaller
//! batches, which a GPU's transfers and launches make slower than the CPU, run on tract
//! ([`crate::split`]).

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::Path;
use std::sync::Arc;

use aicp_core::{
    DataType, Error, Input, ModelSignature, PixelScale, Pixels, Result, Tensor, TensorData,
    max_difference, panic_message,
};
use cudarc::driver::{CudaContext, DeviceRepr, PinnedHostSlice, ValidAsZeroBits, result, sys};
use rayon::prelude::*;
use tract_gpu::tensor::{DeviceTensor, LazyHostStorage};
use tract_onnx::prelude::{
    DatumType, Framework, InferenceModel, InferenceModelExt, IntoTValue, TValue, TVec,
    TensorStorage, TractError, TractResult, tract_ndarray, tvec,
};
use tract_onnx::tract_core::runtime::{Runtime, State, runtime_for_name};
use tract_onnx::tract_hir::internal::DimLike;

use crate::split::{SplitByBatch, measure_min_batch};
use crate::tract::TractEngine;
use crate::{Engine, EngineKind, GpuMinBatch, LoadOptions, Runnable, onnx};

/// How far a GPU output may be from the CPU's, relative to the output's largest magnitude (at
/// least 1): float32 sums in another order differ by far less, a wrong kernel by far more.
const CROSS_CHECK_TOLERANCE: f32 = 1e-3;

/// Samples in the load-time cross-check.
const CROSS_CHECK_BATCH: usize = 5;

/// Inputs of two chunks of this many bytes or more are copied into pinned memory a chunk per
/// task, by several threads.
const PARALLEL_COPY_BYTES: usize = 256 << 10;

/// Runs models on GPU 0 through tract-cuda.
#[derive(Clone)]
pub struct CudaEngine {
    runtime: &'static dyn Runtime,
    context: Arc<CudaContext>,
    device: String,
    /// Copy through this engine's pinned buffers (the default), or let tract copy from and to
    /// ordinary memory (kept to measure what the pinned buffers gain).
    pinned: bool,
    /// Which batches run on tract instead.
    min_batch: GpuMinBatch,
}

impl std::fmt::Debug for CudaEngine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CudaEngine")
            .field("device", &self.device)
            .field("pinned", &self.pinned)
            .field("min_batch", &self.min_batch)
            .finish()
    }
}

impl CudaEngine {
    /// Opens GPU 0, or says why it cannot: no driver, a driver older than CUDA 13, a missing
    /// library, no device. Compiles (or loads from the cache) tract-cuda's kernels.
    pub fn probe() -> std::result::Result<Self, String> {
        let runtime = runtime_for_name("cuda")
            .map_err(|e| format!("{e:#}"))?
            .ok_or("tract-cuda's runtime is not registered")?;
        // The driver, its version and every library, each opened without touching the device.
        runtime.check().map_err(|e| format!("{e:#}"))?;
        let context = CudaContext::new(0).map_err(|e| format!("cannot open GPU 0: {e}"))?;
        let name = context.name().unwrap_or_else(|_| "unknown GPU".into());
        // tract-cuda's own context, made on first use: it compiles the kernels, and panics
        // rather than fails when something goes wrong.
        catch_unwind(|| tract_cuda::with_cuda_stream(|_| Ok(())))
            .map_err(|panic| format!("tract-cuda cannot start: {}", panic_message(&*panic)))?
            .map_err(|e| format!("tract-cuda cannot start: {e:#}"))?;
        keep_freed_memory(&context).map_err(|e| format!("GPU 0 memory pool: {e}"))?;
        Ok(Self {
            runtime,
            context,
            device: format!("cuda:0 {name}"),
            pinned: true,
            min_batch: GpuMinBatch::default(),
        })
    }

    /// This engine leaving the batches `min_batch` says to tract on the CPU.
    pub fn with_min_batch(self, min_batch: GpuMinBatch) -> Self {
        Self { min_batch, ..self }
    }

    /// This engine copying through ordinary memory (tract's own transfers) instead of its
    /// pinned buffers: for measuring what they gain.
    pub fn without_pinned_buffers(&self) -> Self {
        Self {
            pinned: false,
            ..self.clone()
        }
    }

    /// Prepares `model` for the GPU: declutters it, moves every operator tract-cuda supports to
    /// the device, and plans its memory.
    fn plan(&self, model: TractResult<InferenceModel>) -> TractResult<Plan> {
        let typed = model?.into_typed()?.into_decluttered()?;
        let runnable =
            catch_unwind(AssertUnwindSafe(|| self.runtime.prepare(typed))).map_err(|panic| {
                TractError::msg(format!("tract-cuda panicked: {}", panic_message(&*panic)))
            })??;
        let state = runnable.spawn()?;
        Ok(Plan { state })
    }
}

/// Keeps the memory CUDA's stream-ordered allocator frees in its pool instead of handing it
/// back to the driver at each synchronisation, so a batch reuses the last one's device memory.
fn keep_freed_memory(context: &CudaContext) -> std::result::Result<(), result::DriverError> {
    let mut pool = std::mem::MaybeUninit::uninit();
    let mut threshold = u64::MAX;
    // SAFETY: the pool comes from the driver for this context's device, and the attribute's
    // value is a u64, as CU_MEMPOOL_ATTR_RELEASE_THRESHOLD requires.
    unsafe {
        sys::cuDeviceGetDefaultMemPool(pool.as_mut_ptr(), context.cu_device()).result()?;
        sys::cuMemPoolSetAttribute(
            pool.assume_init(),
            sys::CUmemPool_attribute::CU_MEMPOOL_ATTR_RELEASE_THRESHOLD,
            (&mut threshold as *mut u64).cast(),
        )
        .result()
    }
}

impl Engine for CudaEngine {
    fn kind(&self) -> EngineKind {
        crate::CUDA
    }

    fn device(&self) -> String {
        self.device.clone()
    }

    fn load(
        &self,
        path: &Path,
        signature: &ModelSignature,
        options: &LoadOptions,
    ) -> Result<Box<dyn Runnable>> {
        let failed = |e: TractError| {
            Error::invalid(format!("tract-cuda cannot load {}: {e:#}", path.display()))
        };
        only_float32(signature)?;
        let floats = self
            .plan(tract_onnx::onnx().model_for_path(path))
            .map_err(failed)?;
        let pixels = match options.pixels {
            None => None,
            Some(scale) => {
                let proto = onnx::with_pixel_input(path, scale)?.proto;
                let model = tract_onnx::onnx().model_for_proto_model(&proto);
                Some(self.plan(model).map_err(failed)?)
            }
        };
        let mut model = CudaModel {
            floats,
            pixels,
            io: Transfers {
                buffers: Buffers::default(),
                context: self.context.clone(),
                pinned: self.pinned,
            },
        };
        // tract: the reference the GPU is checked against, then the engine of small batches.
        let mut cpu = TractEngine.load(path, signature, &LoadOptions::default())?;
        let inputs = made_up_inputs(signature, options.pixels);
        if let Some(inputs) = &inputs {
            cross_check(&mut model, cpu.as_mut(), &inputs(CROSS_CHECK_BATCH))?;
        }
        let min_batch = match (self.min_batch, &inputs) {
            (GpuMinBatch::Fixed(batch), _) => batch,
            // Nothing to measure with: every batch goes to the GPU.
            (GpuMinBatch::Measured, None) => 1,
            (GpuMinBatch::Measured, Some(inputs)) => {
                let floats = |batch| {
                    let pixels = inputs(batch);
                    pixels.iter().map(|p| Input::from(p.to_tensor())).collect()
                };
                let found = measure_min_batch(cpu.as_mut(), &mut model, floats)?;
                tracing::info!(
                    "{}: batches under {} run on the CPU, where they are faster (batch 1: CPU {} us, GPU {} us)",
                    path.display(),
                    found.min_batch,
                    found.at_one.small.as_micros(),
                    found.at_one.large.as_micros(),
                );
                found.min_batch
            }
        };
        if min_batch <= 1 {
            return Ok(Box::new(model));
        }
        Ok(Box::new(SplitByBatch {
            small: cpu,
            large: Box::new(model),
            min_batch,
        }))
    }
}

/// Refuses a model with an input or output other than float32: the GPU engine's transfers and
/// its cross-check with the CPU are float32's, and the CPU engines serve the rest.
fn only_float32(signature: &ModelSignature) -> Result<()> {
    let inputs = signature.inputs.iter().map(|spec| ("input", spec));
    let outputs = signature.outputs.iter().map(|spec| ("output", spec));
    match inputs
        .chain(outputs)
        .find(|(_, spec)| spec.datatype != DataType::F32)
    {
        Some((role, spec)) => Err(Error::invalid(format!(
            "the GPU engine runs float32 models, and {role} {:?} is {}",
            spec.name, spec.datatype
        ))),
        None => Ok(()),
    }
}

/// Made-up inputs for a model of `signature`, for a batch of any size: digit-like pixels for
/// each input, which the uint8 plan takes as they are and the float32 one normalised. None
/// when an input is not float32 of a fixed sample shape (there is nothing to make up for it).
fn made_up_inputs(
    signature: &ModelSignature,
    pixels: Option<PixelScale>,
) -> Option<impl Fn(usize) -> Vec<Pixels>> {
    let samples = signature
        .inputs
        .iter()
        .map(|spec| match spec.datatype {
            DataType::F32 => spec
                .shape
                .as_ref()?
                .iter()
                .skip(1)
                .copied()
                .collect::<Option<Vec<_>>>(),
            _ => None,
        })
        .collect::<Option<Vec<_>>>()?;
    let scale = pixels.unwrap_or(PixelScale::for_range([0.0, 1.0]));
    Some(move |batch| {
        samples
            .iter()
            .enumerate()
            .map(|(i, sample)| {
                let shape: Vec<usize> = std::iter::once(batch).chain(sample.clone()).collect();
                Pixels {
                    data: digit_like_pixels(shape.iter().product(), i),
                    shape,
                    scale,
                }
            })
            .collect()
    })
}

/// Runs `inputs` through `model`'s plans and through `cpu` (tract), and fails when an output
/// differs by more than [`CROSS_CHECK_TOLERANCE`].
fn cross_check(model: &mut CudaModel, cpu: &mut dyn Runnable, inputs: &[Pixels]) -> Result<()> {
    let floats: Vec<Input> = inputs.iter().map(|p| p.to_tensor().into()).collect();
    let expected = cpu.run(floats.clone())?;
    compare("float32", &model.run(floats)?, &expected)?;
    if let ([input], Some(_)) = (inputs, &model.pixels) {
        compare("uint8", &model.run(vec![input.clone().into()])?, &expected)?;
    }
    Ok(())
}

/// `count` deterministic pixels shaped like MNIST digits: a quarter ink of every shade, the rest
/// background; a different `seed` gives different pixels. What the load-time cross-check feeds,
/// and `aicp gpu` too.
pub fn digit_like_pixels(count: usize, seed: usize) -> Vec<u8> {
    (0..count)
        .map(|i| {
            let mixed = i
                .wrapping_mul(2_654_435_761)
                .wrapping_add(seed.wrapping_mul(40_503))
                >> 7;
            if mixed % 4 == 0 {
                (mixed >> 2) as u8
            } else {
                0
            }
        })
        .collect()
}

fn compare(input: &str, gpu: &[Tensor], cpu: &[Tensor]) -> Result<()> {
    for (i, (g, c)) in gpu.iter().zip(cpu).enumerate() {
        let (Some(g_values), Some(c_values)) = (g.as_f32(), c.as_f32()) else {
            return Err(Error::invalid(format!(
                "output {i} is {} on the GPU and {} on the CPU; the cross-check compares float32",
                g.datatype(),
                c.datatype()
            )));
        };
        let scale = c_values.iter().fold(1.0f32, |m, v| m.max(v.abs()));
        let worst = max_difference(g_values, c_values);
        if g.shape != c.shape || worst > CROSS_CHECK_TOLERANCE * scale {
            return Err(Error::invalid(format!(
                "with {input} input, output {i} on the GPU (shape {:?}) differs from the CPU's \
                 (shape {:?}) by {worst:e}, more than {CROSS_CHECK_TOLERANCE:e} of its scale {scale}",
                g.shape, c.shape
            )));
        }
    }
    if gpu.len() != cpu.len() {
        return Err(Error::invalid(format!(
            "the GPU gave {} outputs and the CPU {}",
            gpu.len(),
            cpu.len()
        )));
    }
    Ok(())
}

/// A model prepared for the GPU, and its state (reused by every run).
struct Plan {
    state: Box<dyn State>,
}

/// One instance of a model on the GPU. Its plans' states hold the CUDA stream and library
/// handles of the thread that runs them, which is why an instance never changes threads
/// ([`Runnable`] is `Send` but not `Sync`).
struct CudaModel {
    floats: Plan,
    /// The plan that takes uint8 pixels, for a model that takes them.
    pixels: Option<Plan>,
    io: Transfers,
}

/// How an instance's tensors go to the device and come back.
struct Transfers {
    buffers: Buffers,
    context: Arc<CudaContext>,
    /// Through the pinned `buffers`; else through tract's own copies.
    pinned: bool,
}

/// An instance's pinned host buffers: what goes to the device, and what comes back.
#[derive(Default)]
struct Buffers {
    floats_in: Staging<f32>,
    pixels_in: Staging<u8>,
    out: Staging<f32>,
}

/// A pinned host buffer that grows to the largest request for it, and is then reused.
struct Staging<T: DeviceRepr + ValidAsZeroBits> {
    buffer: Option<PinnedHostSlice<T>>,
}

impl<T: DeviceRepr + ValidAsZeroBits> Default for Staging<T> {
    fn default() -> Self {
        Self { buffer: None }
    }
}

impl<T: DeviceRepr + ValidAsZeroBits> Staging<T> {
    /// The first `len` elements, allocated anew only when the buffer is too small. Buffers the
    /// host writes (`for_upload`) are write-combined: fast to fill, slow to read back.
    fn slice(
        &mut self,
        context: &Arc<CudaContext>,
        len: usize,
        for_upload: bool,
    ) -> std::result::Result<&mut [T], result::DriverError> {
        if self.buffer.as_ref().is_none_or(|b| b.len() < len) {
            let flags = if for_upload {
                sys::CU_MEMHOSTALLOC_WRITECOMBINED
            } else {
                0
            };
            // Doubling keeps reallocations rare while batch sizes grow.
            let capacity = len.next_power_of_two();
            self.buffer = None;
            // SAFETY: the memory is uninitialised, and only the part the caller writes is read.
            self.buffer = Some(unsafe { context.alloc_pinned_with_flags(capacity, flags)? });
        }
        let buffer = self.buffer.as_mut().expect("allocated above");
        Ok(&mut buffer.as_mut_slice()?[..len])
    }
}

/// Copies `data` into the pinned buffer `host`: a large input by several threads, each a chunk.
fn fill<T: Copy + Send + Sync>(host: &mut [T], data: &[T]) {
    let chunk = PARALLEL_COPY_BYTES / size_of::<T>();
    if data.len() < 2 * chunk {
        host.copy_from_slice(data);
    } else {
        host.par_chunks_mut(chunk)
            .zip(data.par_chunks(chunk))
            .for_each(|(to, from)| to.copy_from_slice(from));
    }
}

fn driver_failed(e: result::DriverError) -> TractError {
    TractError::msg(format!("CUDA: {e}"))
}

impl Plan {
    /// Runs on `values` (host tensors, or device tensors in lazy host storage), and brings
    /// every output back through `io`.
    fn run(&mut self, io: &mut Transfers, values: TVec<TValue>) -> TractResult<Vec<Tensor>> {
        let outputs = self.state.run(values)?;
        outputs.iter().map(|value| io.download(value)).collect()
    }
}

impl Transfers {
    /// `data` (shaped `shape`) copied to the device through the pinned buffer `staging`, as
    /// a tensor the plan takes without another copy.
    fn upload<T: DeviceRepr + ValidAsZeroBits + Copy + tract_onnx::prelude::Datum>(
        context: &Arc<CudaContext>,
        staging: &mut Staging<T>,
        shape: &[usize],
        data: &[T],
    ) -> TractResult<TValue> {
        let host = staging
            .slice(context, data.len(), true)
            .map_err(driver_failed)?;
        fill(host, data);
        let device = DeviceTensor::uninitialized_dt(T::datum_type(), shape)?;
        tract_cuda::with_cuda_stream(|stream| {
            // SAFETY: `device` was allocated on this thread's stream for exactly these
            // elements, and `host` stays untouched until the stream has been synchronised
            // (below, by LazyHostStorage::new).
            unsafe {
                result::memcpy_htod_async(
                    device.device_buffer_ptr() as sys::CUdeviceptr,
                    &*host,
                    stream.cu_stream(),
                )
            }
            .map_err(driver_failed)
        })?;
        Ok(LazyHostStorage::new(device)?.into_tensor().into_tvalue())
    }

    /// One output: a float32 one copied from the device through the pinned output buffer when
    /// it is still there, else read from the host tensor tract made.
    fn download(&mut self, value: &TValue) -> TractResult<Tensor> {
        let on_device = value
            .storage_as::<LazyHostStorage>()
            .and_then(LazyHostStorage::device)
            .filter(|d| self.pinned && d.datum_type() == DatumType::F32 && !d.is_exotic());
        if let Some(device) = on_device {
            let host = self
                .buffers
                .out
                .slice(&self.context, device.len(), false)
                .map_err(driver_failed)?;
            let address =
                device.device_buffer_ptr() as sys::CUdeviceptr + device.buffer_offset::<u64>();
            tract_cuda::with_cuda_stream(|stream| {
                // SAFETY: the device tensor holds `host.len()` float32 values from `address`,
                // and the stream is synchronised before `host` is read.
                unsafe { result::memcpy_dtoh_async(&mut *host, address, stream.cu_stream()) }
                    .map_err(driver_failed)?;
                stream.synchronize().map_err(driver_failed)
            })?;
            return Ok(Tensor {
                shape: device.shape().to_vec(),
                data: TensorData::F32(host.to_vec()),
            });
        }
        crate::tract::tensor_of(value).map_err(|e| TractError::msg(e.message))
    }

    /// Float inputs (the only kind a model loaded here takes) as the plan takes them: on the
    /// device already when pinned.
    fn floats(&mut self, inputs: Vec<Tensor>) -> TractResult<TVec<TValue>> {
        if self.pinned {
            inputs
                .iter()
                .map(|t| {
                    let values = t.as_f32().ok_or_else(|| {
                        TractError::msg(format!("a {} input to a float32 model", t.datatype()))
                    })?;
                    Self::upload(&self.context, &mut self.buffers.floats_in, &t.shape, values)
                })
                .collect()
        } else {
            inputs
                .into_iter()
                .map(|t| crate::tract::tract_value(t).map_err(|e| TractError::msg(e.message)))
                .collect()
        }
    }

    /// Pixels as the pixel plan takes them.
    fn pixels(&mut self, pixels: Pixels) -> TractResult<TValue> {
        if self.pinned {
            Self::upload(
                &self.context,
                &mut self.buffers.pixels_in,
                &pixels.shape,
                &pixels.data,
            )
        } else {
            Ok(tract_ndarray::ArrayD::from_shape_vec(pixels.shape, pixels.data)?.into_tvalue())
        }
    }
}

fn inference_failed(e: TractError) -> Error {
    Error::internal(format!("CUDA inference failed: {e:#}"))
}

impl Runnable for CudaModel {
    fn run(&mut self, inputs: Vec<Input>) -> Result<Vec<Tensor>> {
        // Pixels as they are to the plan that takes them, which normalises them on the GPU.
        let inputs = match (&mut self.pixels, Input::lone_pixels(inputs)) {
            (Some(plan), Ok(pixels)) => {
                let value = self.io.pixels(pixels).map_err(inference_failed)?;
                return plan
                    .run(&mut self.io, tvec![value])
                    .map_err(inference_failed);
            }
            (None, Ok(pixels)) => vec![Input::Pixels(pixels)],
            (_, Err(inputs)) => inputs,
        };
        let floats = inputs.into_iter().map(Input::into_tensor).collect();
        let values = self.io.floats(floats).map_err(inference_failed)?;
        self.floats
            .run(&mut self.io, values)
            .map_err(inference_failed)
    }

    /// Makes this thread's CUDA stream and its cuBLAS and cuDNN handles by running one sample
    /// through each plan.
    fn prepare_thread(&mut self) -> Result<()> {
        let one = |shape: &[usize]| shape.iter().product::<usize>();
        let shapes = self.input_shapes().map_err(inference_failed)?;
        let zeros = shapes
            .iter()
            .map(|shape| {
                Input::from(Tensor {
                    data: TensorData::F32(vec![0.0; one(shape)]),
                    shape: shape.clone(),
                })
            })
            .collect();
        self.run(zeros)?;
        if let (Some(_), [shape]) = (&self.pixels, shapes.as_slice()) {
            let pixels = Pixels {
                shape: shape.clone(),
                data: vec![0; one(shape)],
                scale: aicp_core::PixelScale {
                    offset: 0.0,
                    step: 1.0,
                },
            };
            self.run(vec![pixels.into()])?;
        }
        Ok(())
    }
}

impl CudaModel {
    /// Each input's shape with every variable dimension (the batch) set to 1.
    fn input_shapes(&self) -> TractResult<Vec<Vec<usize>>> {
        let runnable = self.floats.state.runnable();
        (0..runnable.input_count())
            .map(|i| {
                let fact = runnable.input_fact(i)?;
                Ok(fact
                    .shape
                    .iter()
                    .map(|d| d.to_usize().unwrap_or(1))
                    .collect())
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn logits(data: Vec<f32>) -> Vec<Tensor> {
        vec![Tensor::new(vec![1, data.len()], data).unwrap()]
    }

    #[test]
    fn the_cross_check_allows_rounding_and_refuses_wrong_answers() {
        let cpu = logits(vec![12.5, -3.0, 0.25]);
        assert!(compare("float32", &logits(vec![12.5001, -3.0, 0.25]), &cpu).is_ok());
        let err = compare("uint8", &logits(vec![12.5, -3.0, 0.5]), &cpu).unwrap_err();
        assert!(err.message.contains("with uint8 input, output 0"), "{err}");
        assert!(compare("float32", &logits(vec![f32::NAN, -3.0, 0.25]), &cpu).is_err());
        let mut reshaped = cpu.clone();
        reshaped[0].shape = vec![3, 1];
        assert!(compare("float32", &reshaped, &cpu).is_err());
        assert!(compare("float32", &[], &cpu).is_err());
    }

    #[test]
    fn digit_like_pixels_are_mostly_background_and_vary_by_seed() {
        let first = digit_like_pixels(4 * 784, 0);
        assert_eq!(first, digit_like_pixels(4 * 784, 0));
        assert_ne!(first, digit_like_pixels(4 * 784, 1));
        let ink = first.iter().filter(|&&p| p > 0).count();
        assert!(
            (400..1200).contains(&ink),
            "{ink} of {} pixels are ink",
            first.len()
        );
    }

    #[test]
    fn probing_without_a_gpu_says_why() {
        // The machines that run this suite have no NVIDIA driver.
        let err = CudaEngine::probe().unwrap_err();
        assert!(err.contains("CUDA driver library not found"), "{err}");
    }
}
