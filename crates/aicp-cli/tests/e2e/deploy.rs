//! The deployment files in `deploy/`: the Kubernetes manifests pass `kubernetes-validate`
//! against the Kubernetes schemas (strict), every command line and environment they give aicp is
//! one aicp accepts, their probes name open routes that answer, and the KServe example's
//! InferenceService matches its ServingRuntime. (The image build and a cluster run are not part
//! of the suite: see docs/guide/deployment.md.)

use std::process::Command;

use crate::common::{AICP, Server, python, repo_root};
use serde_json::Value;

/// Every document of `files` (YAML), as JSON.
fn documents(files: &[&str]) -> Vec<Value> {
    let script = "import sys, json, yaml\n\
        docs = []\n\
        for name in sys.argv[1:]:\n\
        \x20   with open(name) as f:\n\
        \x20       docs += [d for d in yaml.safe_load_all(f) if d]\n\
        print(json.dumps(docs))";
    let output = Command::new(python())
        .current_dir(repo_root())
        .arg("-c")
        .arg(script)
        .args(files)
        .output()
        .expect("the test virtualenv's python (scripts/test.sh creates it)");
    assert!(output.status.success(), "{output:?}");
    serde_json::from_slice(&output.stdout).unwrap()
}

/// The manifests of `deploy/kubernetes` and of its TLS variant, `deploy/kubernetes/tls`.
fn kubernetes_files() -> Vec<String> {
    let mut files: Vec<String> = ["deploy/kubernetes", "deploy/kubernetes/tls"]
        .iter()
        .flat_map(|dir| std::fs::read_dir(repo_root().join(dir)).unwrap())
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .map(|p| p.strip_prefix(repo_root()).unwrap().display().to_string())
        .collect();
    files.sort();
    files
}

#[test]
fn the_kubernetes_manifests_pass_the_kubernetes_schemas() {
    let files = kubernetes_files();
    assert!(files.len() >= 4, "{files:?}");
    let validator = python().with_file_name("kubernetes-validate");
    let output = Command::new(&validator)
        .current_dir(repo_root())
        .arg("--strict")
        .args(&files)
        .output()
        .unwrap_or_else(|e| panic!("{}: {e} (scripts/test.sh installs it)", validator.display()));
    let report = String::from_utf8_lossy(&output.stdout).to_string()
        + &String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{report}");
    for file in &files {
        assert!(
            report
                .lines()
                .any(|l| l.contains(file.as_str()) && l.contains("passed")),
            "{file} was not validated:\n{report}"
        );
    }
    let kinds: Vec<String> = documents(&files.iter().map(String::as_str).collect::<Vec<_>>())
        .iter()
        .map(|d| d["kind"].as_str().unwrap().to_string())
        .collect();
    for kind in [
        "Deployment",
        "Service",
        "HorizontalPodAutoscaler",
        "PersistentVolumeClaim",
    ] {
        assert!(kinds.iter().any(|k| k == kind), "no {kind}: {kinds:?}");
    }
}

/// Runs `aicp ARGS --print-config` with `env`, and fails the test if aicp refuses them.
fn accepted(args: &[String], env: &[(String, String)]) {
    let mut command = Command::new(AICP);
    command
        .current_dir(repo_root())
        .args(args)
        .arg("--print-config");
    for (key, _) in std::env::vars().filter(|(k, _)| k.starts_with("AICP_")) {
        command.env_remove(key);
    }
    command.envs(env.iter().cloned());
    let output = command.output().unwrap();
    assert!(
        output.status.success(),
        "aicp refuses {args:?} with {env:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

fn strings(value: &Value) -> Vec<String> {
    value
        .as_array()
        .map(|a| a.iter().map(|v| v.as_str().unwrap().to_string()).collect())
        .unwrap_or_default()
}

#[test]
fn the_manifests_give_aicp_settings_it_accepts_and_probe_open_routes() {
    let files = kubernetes_files();
    let docs = documents(&files.iter().map(String::as_str).collect::<Vec<_>>());
    let deployments: Vec<&Value> = docs.iter().filter(|d| d["kind"] == "Deployment").collect();
    assert_eq!(deployments.len(), 2, "the plain Deployment and the TLS one");
    let server = Server::start(&repo_root().join("models"), &["--api-key", "k"]);
    for deployment in deployments {
        let spec = &deployment["spec"]["template"]["spec"];
        let container = &spec["containers"][0];
        let env: Vec<(String, String)> = container["env"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| {
                let value = e["value"].as_str().unwrap_or("from-a-secret");
                (e["name"].as_str().unwrap().to_string(), value.to_string())
            })
            .collect();
        accepted(&strings(&container["args"]), &env);

        // The probes' routes answer without credentials, even with an API key set.
        for probe in ["startupProbe", "readinessProbe", "livenessProbe"] {
            let path = container[probe]["httpGet"]["path"].as_str().unwrap();
            let (status, _) = server.get(path);
            assert_eq!(status, 200, "{probe} {path}");
        }

        // The TLS files come from the mounted Secret, and the probes speak HTTPS to them.
        if let Some((_, cert)) = env.iter().find(|(name, _)| name == "AICP_TLS_CERT") {
            let mount = &container["volumeMounts"]
                .as_array()
                .unwrap()
                .iter()
                .find(|m| cert.starts_with(m["mountPath"].as_str().unwrap()))
                .expect("the certificate's directory is mounted");
            assert!(
                mount.get("subPath").is_none(),
                "a subPath mount is never updated"
            );
            let volume = spec["volumes"]
                .as_array()
                .unwrap()
                .iter()
                .find(|v| v["name"] == mount["name"])
                .unwrap();
            assert!(volume["secret"]["secretName"].is_string(), "{volume}");
            for probe in ["startupProbe", "readinessProbe", "livenessProbe"] {
                assert_eq!(container[probe]["httpGet"]["scheme"], "HTTPS", "{probe}");
            }
        }
    }

    let kserve = documents(&[
        "deploy/kserve/servingruntime.yaml",
        "deploy/kserve/inferenceservice.yaml",
    ]);
    let runtime = kserve
        .iter()
        .find(|d| d["kind"] == "ServingRuntime")
        .unwrap();
    let service = kserve
        .iter()
        .find(|d| d["kind"] == "InferenceService")
        .unwrap();
    assert_eq!(runtime["apiVersion"], "serving.kserve.io/v1alpha1");
    assert_eq!(service["apiVersion"], "serving.kserve.io/v1beta1");
    accepted(&strings(&runtime["spec"]["containers"][0]["args"]), &[]);
    let model = &service["spec"]["predictor"]["model"];
    assert_eq!(model["runtime"], runtime["metadata"]["name"]);
    let formats: Vec<&Value> = runtime["spec"]["supportedModelFormats"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| &f["name"])
        .collect();
    assert!(
        formats.contains(&&model["modelFormat"]["name"]),
        "{formats:?}"
    );
    let protocols = strings(&runtime["spec"]["protocolVersions"]);
    assert!(protocols.contains(&model["protocolVersion"].as_str().unwrap().to_string()));
}
