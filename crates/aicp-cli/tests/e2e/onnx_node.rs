//! ONNX's own backend node tests through `aicp serve`, on each CPU engine: every case the `onnx`
//! package's generators write (model, inputs, expected outputs; tensors only) is served, sent
//! over V2 REST with binary data and over gRPC by Triton's clients, and compared with the
//! expected outputs. The bar is the engine's own library in process on the same cases:
//! onnxruntime's Python package, and tract's (`tract`, the same version as the crate) given
//! each case's concrete input shapes. The script is `tests/fixtures/onnx_node_tests.py`.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::time::Duration;

use crate::common::{Server, fixture_script};

/// Each case's result: `None` when it passed, else why not.
type Results = BTreeMap<String, Option<String>>;

fn script(args: &[&dyn AsRef<std::ffi::OsStr>]) {
    fixture_script("onnx_node_tests.py", args, Duration::from_secs(600));
}

fn results(path: &Path) -> Results {
    serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
}

fn passed(results: &Results) -> BTreeSet<&str> {
    results
        .iter()
        .filter(|(_, why)| why.is_none())
        .map(|(case, _)| case.as_str())
        .collect()
}

/// Runs every case in process and through aicp on `engine`; prints the figures and the
/// failures grouped by reason, and returns (passed in process, of those passed through aicp).
fn node_tests(engine: &str) -> (usize, usize) {
    let dir = tempfile::tempdir().unwrap();
    script(&[&"prepare", &dir.path(), &engine]);
    let server = Server::start(&dir.path().join("models"), &["--gpu", "off"]);
    let http = server.base.trim_start_matches("http://").to_string();
    script(&[&"serve", &dir.path(), &http, &server.grpc]);
    drop(server);

    let in_process = results(&dir.path().join("in_process.json"));
    let served = results(&dir.path().join("served.json"));
    let bar = passed(&in_process);
    let through = passed(&served);
    let kept = bar.intersection(&through).count();
    let mut reasons: BTreeMap<String, Vec<&str>> = BTreeMap::new();
    for case in bar.difference(&through) {
        let why = served[*case].as_deref().unwrap_or("no result");
        let reason: String = why.chars().take(100).collect();
        reasons.entry(reason).or_default().push(case);
    }
    println!(
        "{engine}: {} cases; {} pass in process, {kept} of them through aicp ({:.1}%); {} more \
         pass through aicp only",
        in_process.len(),
        bar.len(),
        100.0 * kept as f64 / bar.len().max(1) as f64,
        through.difference(&bar).count()
    );
    for (reason, cases) in &reasons {
        println!("  {:4}  {reason}  ({})", cases.len(), cases.join(", "));
    }
    (bar.len(), kept)
}

#[test]
fn onnx_node_tests_pass_through_aicp_on_onnxruntime_as_in_onnxruntime() {
    let (bar, kept) = node_tests("onnxruntime");
    // onnx 1.23 and onnxruntime 1.32: 1,548 cases pass in process.
    assert!(bar > 1_400, "only {bar} cases pass in onnxruntime itself");
    assert!(
        kept as f64 >= 0.99 * bar as f64,
        "{kept} of the {bar} cases onnxruntime passes pass through aicp"
    );
}

#[test]
fn onnx_node_tests_pass_through_aicp_on_tract_as_in_tract() {
    let (bar, kept) = node_tests("tract");
    // onnx 1.23 and tract 0.23.9 at concrete shapes: 1,022 cases pass in process.
    assert!(bar > 900, "only {bar} cases pass in tract itself");
    assert!(
        kept as f64 >= 0.97 * bar as f64,
        "{kept} of the {bar} cases tract passes pass through aicp"
    );
}
