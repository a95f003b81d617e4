//! Property and fuzz tests of every parser a client or a model file reaches: the JSON array
//! reader, the Open Inference Protocol's request reader with its binary extension (header
//! length, `binary_data_size`, shapes, datatypes) through to the runtime's validation,
//! `model.toml`, the ONNX signature reader on mutated model files, and picture decoding. Each
//! input, however broken, must give an answer or an error: never a panic (proptest reports one
//! with its shrunk input), never a hang (each target runs under a time limit), never an
//! allocation out of proportion to the input (a counting allocator checks every case).
//!
//! A short run is part of the quick lane; the slow lane (`scripts/test.sh slow`) runs a longer
//! one. Longer still:
//!
//! ```sh
//! AICP_FUZZ_CASES=200000 cargo test --release --workspace --lib tests::fuzz::
//! ```

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::sync::Arc;
use std::time::Duration;

use crate::v2_rest::{prepare, read_request};
use aicp_core::{DataType, ModelMetadata, NestedArray, TensorData};
use aicp_engine::tract::TractEngine;
use aicp_runtime::{Batching, Engines, Repository, Runtime};
use axum::http::{HeaderMap, HeaderValue};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};

/// The system allocator, noting the largest single allocation each thread asks for.
struct Counting;

thread_local! {
    // Const-initialised and without a destructor: safe to touch from inside the allocator.
    static LARGEST: Cell<usize> = const { Cell::new(0) };
}

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LARGEST.with(|l| l.set(l.get().max(layout.size())));
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        LARGEST.with(|l| l.set(l.get().max(new_size)));
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// The largest single allocation `run` makes on this thread.
fn largest_allocation<T>(run: impl FnOnce() -> T) -> (T, usize) {
    LARGEST.with(|l| l.set(0));
    let out = run();
    (out, LARGEST.with(Cell::get))
}

/// Cases per target: `AICP_FUZZ_CASES`, else a short run.
fn cases(short: u32) -> u32 {
    std::env::var("AICP_FUZZ_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(short)
}

/// Runs the strategy `make` builds through `check` for `cases` cases on a thread of its own,
/// failing if the run outlives its time limit (a hang) or a case fails or panics.
fn fuzz<S>(
    name: &'static str,
    cases: u32,
    make: impl FnOnce() -> S + Send + 'static,
    check: impl Fn(S::Value) -> Result<(), TestCaseError> + Send + 'static,
) where
    S: Strategy,
    S::Value: std::fmt::Debug,
{
    // Generous: a case takes microseconds to milliseconds; only a hang comes near it.
    let limit = Duration::from_secs(60) + Duration::from_millis(u64::from(cases) * 20);
    let (done, finished) = std::sync::mpsc::channel();
    std::thread::Builder::new()
        .name(name.into())
        .stack_size(16 << 20)
        .spawn(move || {
            let mut runner = TestRunner::new(Config {
                cases,
                failure_persistence: None,
                ..Config::default()
            });
            let _ = done.send(runner.run(&make(), check).map_err(|e| e.to_string()));
        })
        .unwrap();
    match finished.recv_timeout(limit) {
        Ok(Ok(())) => {}
        Ok(Err(e)) => panic!("{name}: {e}"),
        Err(_) => panic!("{name}: no answer within {limit:?}: a parser hangs"),
    }
}

/// A bound on what parsing `input_len` bytes may allocate at once: a few times the input, and
/// some fixed room.
fn proportionate(input_len: usize) -> usize {
    16 * input_len + (1 << 20)
}

/// Nested JSON arrays of numbers, well formed or not.
fn json_arrays() -> impl Strategy<Value = String> {
    let number = prop_oneof![
        any::<f32>().prop_map(|v| format!("{v}")),
        any::<i64>().prop_map(|v| v.to_string()),
        (0u32..1000).prop_map(|v| format!("{}.{:03}", v / 1000, v % 1000)),
        Just("1e39".to_string()),
        Just("-0".to_string()),
        Just("NaN".to_string()),
        Just("\"x\"".to_string()),
        Just("true".to_string()),
        Just("1e99999".to_string()),
    ];
    let leaf = prop::collection::vec(number, 0..8).prop_map(|v| format!("[{}]", v.join(",")));
    let nested = leaf.prop_recursive(6, 64, 4, |inner| {
        prop::collection::vec(inner, 0..4).prop_map(|v| format!("[{}]", v.join(", ")))
    });
    prop_oneof![
        4 => nested,
        // Deep nesting, past serde_json's recursion limit or not.
        1 => (1usize..2000).prop_map(|depth| format!("{}1{}", "[".repeat(depth), "]".repeat(depth))),
        1 => (1usize..2000).prop_map(|depth| "[".repeat(depth)),
        // Anything at all made of JSON's punctuation and digits.
        2 => "[\\[\\]0-9eE.,+\\- \"a-z]{0,200}",
        1 => any::<String>(),
    ]
}

#[test]
fn the_json_array_reader_answers_every_input() {
    fuzz("json arrays", cases(3000), json_arrays, |text| {
        let (parsed, largest) = largest_allocation(|| NestedArray::<f32>::from_json(&text));
        if let Ok(array) = &parsed {
            let count = array.shape.iter().product::<usize>();
            prop_assert_eq!(count, array.data.len(), "shape and data disagree");
            // The fast reader answers only what serde's reader answers the same way.
            let serde = serde_json::from_str::<NestedArray<f32>>(&text).ok();
            prop_assert_eq!(serde.as_ref(), Some(array), "serde's reader disagrees");
        }
        prop_assert!(
            largest <= proportionate(text.len()),
            "allocated {largest} bytes"
        );
        for datatype in [
            DataType::F32,
            DataType::F64,
            DataType::I8,
            DataType::U8,
            DataType::I64,
            DataType::Bool,
        ] {
            let (_, largest) = largest_allocation(|| TensorData::from_json(datatype, &text));
            prop_assert!(
                largest <= proportionate(text.len()),
                "{datatype}: {largest} bytes"
            );
        }
        Ok(())
    });
}

#[test]
fn raw_tensor_bytes_are_read_or_refused_for_every_datatype() {
    let datatypes = prop::sample::select(vec![
        "BOOL", "UINT8", "UINT16", "UINT32", "UINT64", "INT8", "INT16", "INT32", "INT64", "FP16",
        "FP32", "FP64", "BYTES", "BF16",
    ]);
    let strategy = move || (datatypes, prop::collection::vec(any::<u8>(), 0..300));
    fuzz("raw tensors", cases(3000), strategy, |(datatype, bytes)| {
        let Ok(datatype) = DataType::parse(datatype) else {
            return Ok(());
        };
        let (read, largest) = largest_allocation(|| TensorData::from_le_bytes(datatype, &bytes));
        prop_assert!(largest <= proportionate(bytes.len()));
        if let Ok(data) = read {
            prop_assert!(data.len() <= bytes.len());
        }
        Ok(())
    });
}

/// The bundled model, served by tract, for requests to reach the runtime's validation.
fn served_mnist() -> (Arc<Runtime>, tokio::runtime::Runtime) {
    let engines = Arc::new(Engines::only(Box::new(TractEngine)));
    let models = aicp_testkit::bundled_models();
    let repository = Repository::load(&models, engines, &Batching::default()).unwrap();
    let runtime = Arc::new(Runtime::new());
    runtime.set_repository(repository);
    let tokio = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    (runtime, tokio)
}

/// An Open Inference Protocol request: a JSON header of inputs (names, shapes, datatypes,
/// `binary_data_size`, data) and outputs, followed by raw bytes, with a header length that is
/// right, wrong, or absent.
#[derive(Debug, Clone)]
struct V2Body {
    json: String,
    binary: Vec<u8>,
    header_length: Option<String>,
}

fn v2_bodies() -> impl Strategy<Value = V2Body> {
    let dimension = prop_oneof![
        4 => 0u64..4,
        4 => Just(784u64),
        1 => any::<u64>(),
        1 => Just(1u64 << 62),
    ];
    let shape = prop::collection::vec(dimension, 0..5);
    let datatype = prop::sample::select(vec![
        "FP32", "FP64", "UINT8", "INT64", "BYTES", "FP16", "xx", "",
    ]);
    let data = prop_oneof![
        json_arrays().prop_map(|d| format!(", \"data\": {d}")),
        any::<u64>().prop_map(|n| format!(", \"parameters\": {{\"binary_data_size\": {n}}}")),
        (0u64..4000).prop_map(|n| format!(", \"parameters\": {{\"binary_data_size\": {n}}}")),
        Just(String::new()),
        Just(", \"parameters\": {\"binary_data_size\": -1}".to_string()),
    ];
    let input = (shape, datatype, data).prop_map(|(shape, datatype, data)| {
        format!("{{\"name\": \"input\", \"shape\": {shape:?}, \"datatype\": \"{datatype}\"{data}}}")
    });
    let output = prop_oneof![
        Just(r#"{"name": "logits"}"#.to_string()),
        Just(r#"{"name": "logits", "parameters": {"classification": 3}}"#.to_string()),
        Just(r#"{"name": "logits", "parameters": {"binary_data": "yes"}}"#.to_string()),
        Just(r#"{"name": "nope"}"#.to_string()),
    ];
    let json = (
        prop::collection::vec(input, 0..3),
        prop::collection::vec(output, 0..2),
        prop::sample::select(vec![
            "",
            r#""parameters": {"timeout": 100000}, "#,
            r#""parameters": {"binary_data_output": 1}, "#,
        ]),
    )
        .prop_map(|(inputs, outputs, parameters)| {
            format!(
                "{{{parameters}\"inputs\": [{}], \"outputs\": [{}]}}",
                inputs.join(", "),
                outputs.join(", ")
            )
        });
    let json = prop_oneof![
        8 => json,
        1 => "[{}\\[\\]\":,a-z0-9 ]{0,100}",
    ];
    let noise = (
        json,
        prop::collection::vec(any::<u8>(), 0..3200),
        prop_oneof![Just(0i64), Just(1), Just(-1), Just(1 << 40), Just(-100)],
        any::<bool>(),
    )
        .prop_map(|(json, binary, offset, with_header)| {
            let header_length = with_header.then(|| (json.len() as i64 + offset).to_string());
            V2Body {
                json,
                binary,
                header_length,
            }
        });
    prop_oneof![3 => noise, 1 => valid_v2_bodies()]
}

/// Requests the bundled model answers: 1 to 3 digits as binary FP32, with the right header
/// length.
fn valid_v2_bodies() -> impl Strategy<Value = V2Body> {
    (1usize..4)
        .prop_flat_map(|n| prop::collection::vec(0u8..=255, n * 784))
        .prop_map(|pixels| {
            let n = pixels.len() / 784;
            let json = format!(
                r#"{{"inputs": [{{"name": "input", "shape": [{n}, 784], "datatype": "FP32", "parameters": {{"binary_data_size": {}}}}}]}}"#,
                n * 784 * 4
            );
            V2Body {
                header_length: Some(json.len().to_string()),
                binary: pixels
                    .iter()
                    .flat_map(|&p| (f32::from(p) / 255.0).to_le_bytes())
                    .collect(),
                json,
            }
        })
}

#[test]
fn v2_requests_with_binary_data_are_read_or_refused_and_never_break_the_runtime() {
    let answered = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counted = answered.clone();
    let cases = cases(2000);
    fuzz("v2 requests", cases, v2_bodies, move |case| {
        let (runtime, tokio) = served_mnist_cached();
        let mut headers = HeaderMap::new();
        if let Some(length) = &case.header_length {
            headers.insert(
                "inference-header-content-length",
                HeaderValue::from_str(length).unwrap(),
            );
        }
        let body = [case.json.as_bytes(), &case.binary].concat();
        let (outcome, largest) = largest_allocation(|| {
            let (request, binary) = read_request(&headers, &body)?;
            let prepared = prepare(&request, binary)?;
            let model = runtime.model("mnist", None)?;
            tokio.block_on(runtime.run(model, prepared.inputs, None))
        });
        prop_assert!(
            largest <= proportionate(body.len()),
            "allocated {largest} bytes for a body of {}",
            body.len()
        );
        match outcome {
            Ok(_) => {
                counted.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
            Err(error) => {
                prop_assert!(!error.message.is_empty());
                prop_assert!(
                    error.kind != aicp_core::ErrorKind::Internal,
                    "{}",
                    error.message
                );
            }
        }
        Ok(())
    });
    // The run reached the engine too, not only the parsers' errors.
    let answered = answered.load(std::sync::atomic::Ordering::Relaxed);
    assert!(
        answered as u32 > cases / 10,
        "{answered} of {cases} requests answered"
    );
}

/// One served model per fuzzing thread (loading it per case would dominate the run).
fn served_mnist_cached() -> (Arc<Runtime>, &'static tokio::runtime::Runtime) {
    thread_local! {
        static SERVED: (Arc<Runtime>, &'static tokio::runtime::Runtime) = {
            let (runtime, tokio) = served_mnist();
            (runtime, Box::leak(Box::new(tokio)))
        };
    }
    SERVED.with(|(runtime, tokio)| (runtime.clone(), *tokio))
}

/// Mutations of a file: bytes overwritten, a range cut out, bytes inserted, or the file cut short.
#[derive(Debug, Clone)]
enum Mutation {
    Overwrite { at: usize, byte: u8 },
    Remove { at: usize, len: usize },
    Insert { at: usize, bytes: Vec<u8> },
    Truncate { at: usize },
}

fn mutations() -> impl Strategy<Value = Vec<Mutation>> {
    let at = any::<usize>();
    let mutation = prop_oneof![
        6 => (at, any::<u8>()).prop_map(|(at, byte)| Mutation::Overwrite { at, byte }),
        1 => (at, 1usize..64).prop_map(|(at, len)| Mutation::Remove { at, len }),
        1 => (at, prop::collection::vec(any::<u8>(), 1..16))
            .prop_map(|(at, bytes)| Mutation::Insert { at, bytes }),
        1 => at.prop_map(|at| Mutation::Truncate { at }),
    ];
    prop::collection::vec(mutation, 1..12)
}

/// `original` with `mutations` applied; positions wrap around its length. Mutations cluster at
/// the front half the time, where formats keep their headers and lengths.
fn mutate(original: &[u8], mutations: &[Mutation]) -> Vec<u8> {
    let mut bytes = original.to_vec();
    for (i, mutation) in mutations.iter().enumerate() {
        let span = if i % 2 == 0 {
            bytes.len().min(256)
        } else {
            bytes.len()
        };
        let place = |at: usize| if span == 0 { 0 } else { at % span };
        match mutation {
            Mutation::Overwrite { at, byte } => {
                if !bytes.is_empty() {
                    let at = place(*at);
                    bytes[at] = *byte;
                }
            }
            Mutation::Remove { at, len } => {
                let at = place(*at);
                let end = (at + len).min(bytes.len());
                bytes.drain(at..end);
            }
            Mutation::Insert { at, bytes: new } => {
                let at = place(*at);
                bytes.splice(at..at, new.iter().copied());
            }
            Mutation::Truncate { at } => {
                let at = place(*at);
                bytes.truncate(at);
            }
        }
    }
    bytes
}

#[test]
fn model_toml_is_read_or_refused() {
    let original = std::fs::read(aicp_testkit::bundled_models().join("mnist/model.toml")).unwrap();
    let strategy = move || {
        prop_oneof![
            3 => mutations().prop_map(move |m| mutate(&original, &m)),
            1 => prop::collection::vec(any::<u8>(), 0..400),
            1 => "[a-z_\\[\\]=\"0-9., \n]{0,300}".prop_map(String::into_bytes),
        ]
    };
    fuzz("model.toml", cases(3000), strategy, |bytes| {
        let text = String::from_utf8_lossy(&bytes);
        let (_, largest) = largest_allocation(|| ModelMetadata::from_toml(&text));
        prop_assert!(largest <= proportionate(bytes.len()));
        Ok(())
    });
}

#[test]
fn the_onnx_signature_reader_refuses_mutated_models_with_a_reason() {
    let original = std::fs::read(aicp_testkit::bundled_model("mnist")).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("model.onnx");
    let strategy = move || mutations().prop_map(move |m| mutate(&original, &m));
    fuzz("onnx signatures", cases(400), strategy, move |bytes| {
        std::fs::write(&path, &bytes).unwrap();
        let (read, largest) = largest_allocation(|| aicp_engine::onnx::inspect(&path));
        prop_assert!(
            largest <= proportionate(bytes.len()),
            "allocated {largest} bytes"
        );
        if let Err(error) = read {
            prop_assert!(!error.message.is_empty());
        }
        Ok(())
    });
}

/// A digit drawn in every format the image endpoint takes.
fn pictures() -> Vec<Vec<u8>> {
    let (pixels, _) = aicp_testkit::digits(1).remove(0);
    let digit = image::GrayImage::from_fn(28, 28, |x, y| {
        image::Luma([(pixels[(y * 28 + x) as usize] * 255.0) as u8])
    });
    let rgb = image::DynamicImage::ImageLuma8(digit).to_rgb8();
    [
        image::ImageFormat::Png,
        image::ImageFormat::Jpeg,
        image::ImageFormat::Gif,
        image::ImageFormat::Bmp,
        image::ImageFormat::WebP,
    ]
    .into_iter()
    .map(|format| {
        let mut bytes = std::io::Cursor::new(Vec::new());
        rgb.write_to(&mut bytes, format).unwrap();
        bytes.into_inner()
    })
    .collect()
}

#[test]
fn pictures_are_decoded_or_refused_within_their_limits() {
    let limits = aicp_image::DecodeLimits {
        max_width: 1024,
        max_height: 1024,
        max_alloc_bytes: 8 << 20,
    };
    let pictures = pictures();
    let strategy = move || {
        (prop::sample::select(pictures), mutations()).prop_map(|(picture, m)| mutate(&picture, &m))
    };
    fuzz("pictures", cases(3000), strategy, move |bytes| {
        let (_, largest) = largest_allocation(|| {
            aicp_image::decode(&bytes, limits).and_then(|image| aicp_image::preprocess(&image))
        });
        // The decoders' own limit, and room for their buffers.
        prop_assert!(largest <= 2 * (8 << 20), "allocated {largest} bytes");
        Ok(())
    });
}
