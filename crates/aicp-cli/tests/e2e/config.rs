//! `aicp serve --config`: a TOML file of the flags' settings, with flags > environment > file >
//! defaults, `--print-config`, bad files, and a real server running on a file's settings.

use std::process::{Command, Output};

use crate::common::{AICP, Server, repo_root};

fn aicp(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut command = Command::new(AICP);
    command.current_dir(repo_root()).args(args);
    // Only the environment the test gives.
    for (key, _) in std::env::vars().filter(|(k, _)| k.starts_with("AICP_")) {
        command.env_remove(key);
    }
    for (key, value) in env {
        command.env(key, value);
    }
    command.output().unwrap()
}

fn file(text: &str) -> tempfile::NamedTempFile {
    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(file.path(), text).unwrap();
    file
}

#[test]
fn flags_beat_the_environment_which_beats_the_file_which_beats_defaults() {
    let config = file(
        "port = 9000\ngrpc-port = 9001\nmax_in_flight = 99\nlog_format = \"json\"\n\
         admin_token = \"s3cret\"\nmodel_control = \"explicit\"\n",
    );
    let path = config.path().to_str().unwrap();
    let output = aicp(
        &[
            "serve",
            "--config",
            path,
            "--grpc-port",
            "7001",
            "--print-config",
        ],
        &[("AICP_PORT", "7000")],
    );
    assert!(output.status.success(), "{output:?}");
    let printed = String::from_utf8(output.stdout).unwrap();
    for line in [
        "port = 7000  # environment",
        "grpc_port = 7001  # flag",
        "max_in_flight = 99  # file",
        "log_format = \"json\"  # file",
        "model_control = \"explicit\"  # file",
        "host = \"127.0.0.1\"  # default",
        "# admin_token is set (file; not shown)",
        "# api_key is not set",
    ] {
        assert!(
            printed.lines().any(|l| l == line),
            "no line {line:?} in:\n{printed}"
        );
    }
    assert!(!printed.contains("s3cret"), "{printed}");

    // What it prints is a config file that gives the same settings.
    let printed_file = file(&printed);
    let again = aicp(
        &[
            "serve",
            "--config",
            printed_file.path().to_str().unwrap(),
            "--print-config",
        ],
        &[],
    );
    let reprinted = String::from_utf8(again.stdout).unwrap();
    for (first, second) in printed.lines().zip(reprinted.lines()) {
        let setting = |line: &str| line.split("  #").next().unwrap_or_default().to_string();
        if !first.starts_with('#') {
            assert_eq!(setting(first), setting(second));
        }
    }
}

#[test]
fn a_bad_config_file_is_refused_with_the_reason() {
    for (text, says) in [
        ("nope = 1\n", "unknown setting `nope`"),
        ("port = \"x\"\n", "invalid value 'x' for '--port <PORT>'"),
        (
            "port = [1]\n",
            "`port` should be a string, number or boolean",
        ),
        ("port = \n", "is not valid TOML"),
    ] {
        let config = file(text);
        let output = aicp(
            &[
                "serve",
                "--config",
                config.path().to_str().unwrap(),
                "--print-config",
            ],
            &[],
        );
        assert_eq!(output.status.code(), Some(2), "{text}");
        let stderr = String::from_utf8(output.stderr).unwrap();
        assert!(stderr.contains(says), "{text}: {stderr}");
        assert!(stderr.contains(config.path().to_str().unwrap()), "{stderr}");
    }
    let output = aicp(&["serve", "--config", "/no/such/aicp.toml"], &[]);
    assert_eq!(output.status.code(), Some(2));
    assert!(
        String::from_utf8(output.stderr)
            .unwrap()
            .contains("cannot read the config file")
    );
}

#[test]
fn the_server_runs_on_the_files_settings() {
    let config = file("api_key = \"from-the-file\"\nmodel_control = \"none\"\n");
    let server = Server::start(
        &repo_root().join("models"),
        &["--config", config.path().to_str().unwrap()],
    );
    let (status, _) = server.get("/api/v1/ml/models");
    assert_eq!(status, 401);
    let response = server
        .client
        .get(format!("{}/api/v1/ml/models", server.base))
        .bearer_auth("from-the-file")
        .send()
        .unwrap();
    assert_eq!(response.status(), 200);
}
