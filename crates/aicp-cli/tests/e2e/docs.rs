//! The manual (README.md and docs/) against the product it describes:
//! - the command-line reference is what `aicp <command> --help` prints;
//! - every relative link and anchor resolves;
//! - the shell examples of the README and of the guide and API pages run, against a server
//!   started on a copy of the bundled models, and answer in the shape the manual shows. An
//!   example a fresh checkout cannot run (it needs a GPU, certificates, the internet, a model
//!   of your own) is marked `<!-- not run: why -->`, and the test prints why.
//!
//! A renamed flag, route or page then fails the suite instead of misleading a reader.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use pulldown_cmark::{Event, Options, Parser, Tag, TagEnd};
use serde_json::Value;

use crate::common::*;

/// The commands the reference documents, as the default build has them.
const COMMANDS: [&str; 9] = [
    "", "serve", "models", "predict", "bench", "soak", "gpu", "train", "quantize",
];

const CLI_REFERENCE: &str = "docs/reference/cli.md";

/// The reference as the binary would write it.
fn cli_reference() -> String {
    let mut page = String::from(
        "# Command-line reference\n\n\
         Made from `aicp <command> --help`, for the default build (training and the load \
         tools included).\nA flag shown with `[env: NAME=]` can also be set by that \
         environment variable. The suite fails\nwhen this page differs from what the binary \
         prints; to make it again:\n\n\
         ```sh\nAICP_WRITE_DOCS=1 cargo nextest run --release --workspace --test e2e \
         -E 'test(/cli_reference/)'\n```\n",
    );
    for command in COMMANDS {
        let mut help = Command::new(AICP);
        help.args(command.split_whitespace()).arg("--help");
        // clap shows an environment variable's value when it is set: leave none set.
        for (name, _) in std::env::vars().filter(|(name, _)| name.starts_with("AICP_")) {
            help.env_remove(name);
        }
        let out = help.output().unwrap();
        assert!(out.status.success(), "aicp {command} --help failed");
        let text = String::from_utf8(out.stdout).unwrap();
        let title = format!("aicp {command}");
        page += &format!(
            "\n## `{}`\n\n```text\n{}\n```\n",
            title.trim(),
            text.trim_end()
        );
    }
    page
}

#[test]
fn cli_reference_is_what_help_prints() {
    let path = repo_root().join(CLI_REFERENCE);
    let made = cli_reference();
    if std::env::var_os("AICP_WRITE_DOCS").is_some() {
        std::fs::write(&path, &made).unwrap();
    }
    let written = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        written == made,
        "{CLI_REFERENCE} is not what `aicp <command> --help` prints: make it again with \
         AICP_WRITE_DOCS=1 cargo nextest run --release --workspace --test e2e -E \
         'test(/cli_reference/)'"
    );
}

/// README.md and every Markdown file under docs/.
fn manual() -> Vec<PathBuf> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                walk(&path, out);
            } else if path.extension().is_some_and(|e| e == "md") {
                out.push(path);
            }
        }
    }
    let mut pages = vec![repo_root().join("README.md")];
    walk(&repo_root().join("docs"), &mut pages);
    pages.sort();
    pages
}

/// A heading's anchor as GitHub (and mdBook) make it: lower case, punctuation dropped, spaces
/// as hyphens; a repeated one gets `-1`, `-2`.
fn anchor(text: &str, seen: &mut HashMap<String, usize>) -> String {
    let slug: String = text
        .to_lowercase()
        .chars()
        .filter(|c| c.is_alphanumeric() || matches!(c, '-' | '_' | ' '))
        .map(|c| if c == ' ' { '-' } else { c })
        .collect();
    let count = seen.entry(slug.clone()).or_insert(0);
    let unique = if *count == 0 {
        slug.clone()
    } else {
        format!("{slug}-{count}")
    };
    *count += 1;
    unique
}

/// A page's anchors and the destinations of its links and images.
fn anchors_and_links(text: &str) -> (Vec<String>, Vec<String>) {
    let (mut anchors, mut links, mut seen) = (Vec::new(), Vec::new(), HashMap::new());
    let mut heading: Option<String> = None;
    for event in Parser::new_ext(text, Options::all()) {
        match event {
            Event::Start(Tag::Heading { .. }) => heading = Some(String::new()),
            Event::End(TagEnd::Heading(_)) => {
                anchors.push(anchor(&heading.take().unwrap_or_default(), &mut seen));
            }
            Event::Text(t) | Event::Code(t) => {
                if let Some(heading) = heading.as_mut() {
                    heading.push_str(&t);
                }
            }
            Event::Start(Tag::Link { dest_url, .. } | Tag::Image { dest_url, .. }) => {
                links.push(dest_url.to_string());
            }
            _ => {}
        }
    }
    (anchors, links)
}

#[test]
fn every_relative_link_and_anchor_resolves() {
    let pages = manual();
    let parsed: BTreeMap<PathBuf, (Vec<String>, Vec<String>)> = pages
        .iter()
        .map(|page| {
            let text = std::fs::read_to_string(page).unwrap();
            (page.canonicalize().unwrap(), anchors_and_links(&text))
        })
        .collect();
    let mut broken = Vec::new();
    let mut checked = 0;
    for (page, (anchors, links)) in &parsed {
        for link in links {
            if link.contains("://") || link.starts_with("mailto:") {
                continue;
            }
            checked += 1;
            let (path, fragment) = link.split_once('#').unwrap_or((link, ""));
            let target = if path.is_empty() {
                page.clone()
            } else {
                match page.parent().unwrap().join(path).canonicalize() {
                    Ok(target) => target,
                    Err(_) => {
                        broken.push(format!("{}: {link}: no such file", page.display()));
                        continue;
                    }
                }
            };
            if fragment.is_empty() {
                continue;
            }
            let target_anchors = if &target == page {
                Some(anchors)
            } else {
                parsed.get(&target).map(|(anchors, _)| anchors)
            };
            match target_anchors {
                Some(anchors) if anchors.iter().any(|a| a == fragment) => {}
                Some(_) => broken.push(format!("{}: {link}: no such heading", page.display())),
                None => broken.push(format!(
                    "{}: {link}: an anchor in a file that is not a page of the manual",
                    page.display()
                )),
            }
        }
    }
    assert!(checked > 100, "only {checked} links: is the manual there?");
    assert!(broken.is_empty(), "broken links:\n{}", broken.join("\n"));
}

/// One shell example of the manual.
struct Example {
    page: PathBuf,
    line: usize,
    code: String,
    /// Why it is not run, when it is not.
    not_run: Option<String>,
    /// The answer the manual shows right after it, when it shows one.
    answer: Option<String>,
}

/// The ```sh blocks of a page, each with its `<!-- not run: ... -->` mark and the ```json
/// block that follows it.
fn examples(page: &Path) -> Vec<Example> {
    let text = std::fs::read_to_string(page).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    let block = |start: usize| -> (String, usize) {
        let end = (start + 1..lines.len())
            .find(|&i| lines[i].starts_with("```"))
            .unwrap_or(lines.len());
        (lines[start + 1..end].join("\n"), end)
    };
    let mut found = Vec::new();
    let mut i = 0;
    while i < lines.len() {
        if lines[i] != "```sh" {
            i += 1;
            continue;
        }
        let (code, end) = block(i);
        let not_run = i
            .checked_sub(1)
            .and_then(|before| lines[before].strip_prefix("<!-- not run: "))
            .map(|why| why.trim_end_matches("-->").trim().to_string());
        let next = (end + 1..lines.len()).find(|&j| !lines[j].trim().is_empty());
        let answer = next.filter(|&j| lines[j] == "```json").map(|j| block(j).0);
        found.push(Example {
            page: page.strip_prefix(repo_root()).unwrap_or(page).to_path_buf(),
            line: i + 1,
            code,
            not_run,
            answer,
        });
        i = end + 1;
    }
    found
}

/// Whether `actual` has the shape of `expected`: the same keys at every level, arrays that
/// are empty only when the manual's is, and values of the same kind.
fn same_shape(expected: &Value, actual: &Value, at: &str) -> Result<(), String> {
    match (expected, actual) {
        (Value::Object(e), Value::Object(a)) => {
            let (ek, ak): (Vec<_>, Vec<_>) = (e.keys().collect(), a.keys().collect());
            if ek != ak {
                return Err(format!("{at}: keys {ak:?}, the manual shows {ek:?}"));
            }
            e.iter()
                .try_for_each(|(k, v)| same_shape(v, &a[k], &format!("{at}.{k}")))
        }
        (Value::Array(e), Value::Array(a)) => match (e.first(), a.first()) {
            (Some(e), Some(a)) => same_shape(e, a, &format!("{at}[0]")),
            (Some(_), None) => Err(format!("{at}: empty, the manual shows values")),
            _ => Ok(()),
        },
        (Value::Number(_), Value::Number(_))
        | (Value::String(_), Value::String(_))
        | (Value::Bool(_), Value::Bool(_))
        | (Value::Null, Value::Null) => Ok(()),
        _ => Err(format!("{at}: {actual}, the manual shows {expected}")),
    }
}

/// `code` aimed at the test's server instead of the documented ports.
fn aimed(code: &str, server: &Server) -> String {
    let http = server.base.trim_start_matches("http://");
    code.lines()
        .map(|line| {
            let mut line = line
                .replace("127.0.0.1:8000", http)
                .replace("127.0.0.1:8001", &server.grpc);
            // `aicp bench` finds the documented ports by default, with no flag to replace.
            if line.contains("aicp bench") && !line.contains("--url") {
                let url = if line.contains("--protocol grpc") {
                    format!("http://{}", server.grpc)
                } else {
                    server.base.clone()
                };
                line = line.replacen("aicp bench", &format!("aicp bench --url {url}"), 1);
            }
            line
        })
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn the_manuals_shell_examples_run_and_answer_as_shown() {
    let pages: Vec<PathBuf> = manual()
        .into_iter()
        .filter(|page| {
            let relative = page.strip_prefix(repo_root()).unwrap();
            relative == Path::new("README.md")
                || relative.starts_with("docs/guide")
                || relative.starts_with("docs/api")
        })
        .collect();
    let examples: Vec<Example> = pages.iter().flat_map(|page| examples(page)).collect();

    // A fresh checkout's working directory, on a copy of the bundled models.
    let work = tempfile::tempdir().unwrap();
    for model in ["mnist", "mnist-cnn"] {
        aicp_testkit::install_with_metadata(&work.path().join("models"), model);
    }
    std::os::unix::fs::symlink(repo_root().join("data"), work.path().join("data")).unwrap();
    let server = Server::start(&work.path().join("models"), &[]);
    let bin = Path::new(AICP).parent().unwrap();
    let path = format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );

    // `aicp quantize` measures its model on ONNX Runtime.
    let ort = crate::quantize::ort_library();

    let mut ran = 0;
    for example in &examples {
        let place = format!("{}:{}", example.page.display(), example.line);
        if let Some(why) = &example.not_run {
            eprintln!("not run: {place}: {why}");
            continue;
        }
        let code = aimed(&example.code, &server);
        let out = run_bounded(
            Command::new("bash")
                .args(["-eo", "pipefail", "-c", &code])
                .current_dir(work.path())
                .env("PATH", &path)
                .env("AICP_ORT_LIB", &ort),
            Duration::from_secs(180),
        );
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{place} failed:\n{code}\n--- stdout\n{stdout}\n--- stderr\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        if code.contains("curl") {
            let answers: Vec<Value> = serde_json::Deserializer::from_str(&stdout)
                .into_iter::<Value>()
                .collect::<Result<_, _>>()
                .unwrap_or_else(|e| panic!("{place}: not JSON ({e}):\n{stdout}"));
            assert!(!answers.is_empty(), "{place}: no answer");
            for answer in &answers {
                assert!(answer.get("error").is_none(), "{place}: {answer}");
            }
            if let Some(shown) = &example.answer {
                let shown: Value = serde_json::from_str(shown)
                    .unwrap_or_else(|e| panic!("{place}: the answer shown is not JSON: {e}"));
                same_shape(&shown, &answers[0], "answer")
                    .unwrap_or_else(|e| panic!("{place}: {e}"));
            }
        }
        eprintln!("ran: {place}");
        ran += 1;
    }
    assert!(ran >= 8, "only {ran} examples ran");
}
