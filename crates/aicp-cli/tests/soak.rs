//! The soak run of `bench/soak.sh`, for 60 seconds: every protocol at once with bad requests
//! mixed in and a model rewritten every five seconds. Every request must get the answer its
//! kind calls for, the reloads must happen, and the server's memory must stay flat after the
//! warm-up.

mod common;

use std::process::Command;
use std::time::Duration;

use common::{repo_root, run_bounded};
use serde_json::Value;

#[test]
fn a_minute_of_everything_at_once_gets_only_the_expected_answers_and_flat_memory() {
    let dir = tempfile::tempdir().unwrap();
    let report = dir.path().join("soak.json");
    let out = run_bounded(
        Command::new(repo_root().join("bench/soak.sh"))
            .arg("60")
            .arg(&report)
            .env("AICP_BIN", env!("CARGO_BIN_EXE_aicp")),
        Duration::from_secs(240),
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    println!("{stdout}");
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: Value = serde_json::from_slice(&std::fs::read(&report).unwrap()).unwrap();
    assert_eq!(report["unexpected"], 0);
    let kinds = report["kinds"].as_object().unwrap();
    assert_eq!(kinds.len(), 15, "every kind of request was sent: {kinds:?}");
    for (kind, tally) in kinds {
        assert!(tally["sent"].as_u64().unwrap() > 0, "{kind}");
    }
    // The model was rewritten about every five seconds, and the server loaded each rewrite.
    let written = report["reloads_written"].as_u64().unwrap();
    let loaded = report["model_loads"].as_u64().unwrap();
    assert!(written >= 8, "{written} rewrites");
    assert!(loaded + 1 >= written, "{written} rewrites, {loaded} loads");
    // Flat memory after the warm-up.
    let warm = report["rss_after_warmup_mib"].as_f64().unwrap();
    let max = report["rss_max_after_warmup_mib"].as_f64().unwrap();
    assert!(max < warm + 32.0, "RSS grew from {warm} MiB to {max} MiB");
}
