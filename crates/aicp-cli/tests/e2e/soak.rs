//! A soak run of `bench/soak.sh`: every protocol at once with bad requests mixed in and a model
//! rewritten every five seconds. Every request must get the answer its kind calls for, the
//! reloads must happen, and the server's memory must stay flat after the warm-up. The full lane
//! runs it for 15 seconds; the slow lane for a minute ([`crate::slow`]).

use std::process::Command;
use std::time::Duration;

use serde_json::Value;

use crate::common::{AICP, repo_root, run_bounded};

#[test]
fn a_short_soak_of_everything_at_once_gets_only_the_expected_answers() {
    soak(15);
}

/// Runs `bench/soak.sh` for `seconds` and checks its report.
pub fn soak(seconds: u64) {
    let dir = tempfile::tempdir().unwrap();
    let report = dir.path().join("soak.json");
    let out = run_bounded(
        Command::new(repo_root().join("bench/soak.sh"))
            .arg(seconds.to_string())
            .arg(&report)
            .env("AICP_BIN", AICP),
        Duration::from_secs(seconds + 180),
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
    let expected = (seconds / 5).saturating_sub(4).max(2);
    assert!(written >= expected, "{written} rewrites in {seconds} s");
    assert!(loaded + 1 >= written, "{written} rewrites, {loaded} loads");
    // Flat memory after the warm-up.
    let warm = report["rss_after_warmup_mib"].as_f64().unwrap();
    let max = report["rss_max_after_warmup_mib"].as_f64().unwrap();
    assert!(max < warm + 32.0, "RSS grew from {warm} MiB to {max} MiB");
}
