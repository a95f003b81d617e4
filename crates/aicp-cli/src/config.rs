//! The command line, with `aicp serve`'s optional config file (`--config aicp.toml`).
//!
//! The file holds the same settings as the flags, named as the flags are without the leading
//! dashes (`max-in-flight` or `max_in_flight`). A setting comes from the first of: a flag, its
//! environment variable, the file, the built-in default. `aicp serve --print-config` prints
//! the settings that result, each with where it came from, as a file `--config` reads.

use std::collections::BTreeSet;
use std::ffi::OsString;
use std::path::{Path, PathBuf};

use clap::parser::ValueSource;
use clap::{ArgMatches, Command, CommandFactory, FromArgMatches};

use crate::Cli;

/// Settings that never go in a file or in the printed configuration.
const NOT_SETTINGS: &[&str] = &["config", "print_config", "help", "version"];
/// Settings whose values are secret: printed as set or not, never shown.
const SECRETS: &[&str] = &["api_key", "admin_token"];

/// Parses the command line, reading `aicp serve --config FILE` into it. Exits with clap's usage
/// error on a bad command line, and with an error naming the file on a bad file. Handles
/// `--print-config` (prints and exits).
pub fn parse() -> Cli {
    let args: Vec<OsString> = std::env::args_os().collect();
    let command = Cli::command();
    let matches = command.clone().get_matches_from(&args);
    let Some(("serve", serve)) = matches.subcommand() else {
        return from_matches(&matches);
    };
    let (matches, from_file) = match serve.get_one::<PathBuf>("config") {
        None => (matches.clone(), BTreeSet::new()),
        Some(file) => match with_file(&command, &args, serve, file) {
            Ok(parsed) => parsed,
            Err(message) => {
                eprintln!("error: {message}");
                std::process::exit(2);
            }
        },
    };
    let Some(("serve", serve)) = matches.subcommand() else {
        unreachable!("the command line names serve")
    };
    if serve.get_flag("print_config") {
        print!("{}", render(&command, serve, &from_file));
        std::process::exit(0);
    }
    from_matches(&matches)
}

fn from_matches(matches: &ArgMatches) -> Cli {
    Cli::from_arg_matches(matches).unwrap_or_else(|e| e.exit())
}

/// The settings of `aicp serve`: its own flags and the global ones.
fn settings(command: &Command) -> Vec<&clap::Arg> {
    let serve = command
        .find_subcommand("serve")
        .expect("aicp has a serve command");
    command
        .get_arguments()
        .chain(serve.get_arguments())
        .filter(|arg| arg.get_long().is_some() && !NOT_SETTINGS.contains(&arg.get_id().as_str()))
        .collect()
}

/// Parses the command line again with the file's settings added, for the settings that no flag
/// and no environment variable gave. Returns the matches and the settings taken from the file.
fn with_file(
    command: &Command,
    args: &[OsString],
    serve: &ArgMatches,
    file: &Path,
) -> Result<(ArgMatches, BTreeSet<String>), String> {
    let text = std::fs::read_to_string(file)
        .map_err(|e| format!("cannot read the config file {}: {e}", file.display()))?;
    let table: toml::Table =
        toml::from_str(&text).map_err(|e| format!("{} is not valid TOML: {e}", file.display()))?;
    let settings = settings(command);
    let mut args = args.to_vec();
    let mut from_file = BTreeSet::new();
    for (key, value) in &table {
        let id = key.replace('-', "_");
        let Some(arg) = settings.iter().find(|arg| arg.get_id() == id.as_str()) else {
            let known: Vec<&str> = settings.iter().map(|a| a.get_id().as_str()).collect();
            return Err(format!(
                "{}: unknown setting `{key}`; the settings are aicp serve's flags: {}",
                file.display(),
                known.join(", ")
            ));
        };
        let value = match value {
            toml::Value::String(s) => s.clone(),
            toml::Value::Integer(i) => i.to_string(),
            toml::Value::Float(f) => f.to_string(),
            toml::Value::Boolean(b) => b.to_string(),
            other => {
                return Err(format!(
                    "{}: `{key}` should be a string, number or boolean, not {}",
                    file.display(),
                    other.type_str()
                ));
            }
        };
        // A flag or an environment variable wins over the file.
        if matches!(
            serve.value_source(&id),
            Some(ValueSource::CommandLine | ValueSource::EnvVariable)
        ) {
            continue;
        }
        let long = arg.get_long().expect("settings have a long name");
        args.push(format!("--{long}={value}").into());
        from_file.insert(id);
    }
    let matches = command.clone().try_get_matches_from(&args).map_err(|e| {
        let rendered = e.render().to_string();
        let first = rendered.lines().next().unwrap_or_default();
        format!(
            "in {}: {}",
            file.display(),
            first.trim_start_matches("error: ")
        )
    })?;
    Ok((matches, from_file))
}

/// The settings as a config file, each with its source.
fn render(command: &Command, serve: &ArgMatches, from_file: &BTreeSet<String>) -> String {
    let mut out = String::from("# aicp serve: the settings in effect, and where each came from\n");
    for arg in settings(command) {
        let id = arg.get_id().as_str();
        let source = match serve.value_source(id) {
            Some(ValueSource::CommandLine) if from_file.contains(id) => "file",
            Some(ValueSource::CommandLine) => "flag",
            Some(ValueSource::EnvVariable) => "environment",
            Some(ValueSource::DefaultValue) => "default",
            _ => "unset",
        };
        let value = serve
            .get_raw(id)
            .and_then(|mut values| values.next())
            .map(|v| v.to_string_lossy().into_owned());
        match value {
            None => out.push_str(&format!("# {id} is not set\n")),
            Some(_) if SECRETS.contains(&id) => {
                out.push_str(&format!("# {id} is set ({source}; not shown)\n"));
            }
            Some(value) => out.push_str(&format!("{id} = {}  # {source}\n", toml_value(&value))),
        }
    }
    out
}

/// A value as TOML writes it: numbers and booleans bare, anything else quoted.
fn toml_value(raw: &str) -> String {
    if raw == "true" || raw == "false" || raw.parse::<i64>().is_ok() {
        raw.to_string()
    } else {
        toml::Value::String(raw.to_string()).to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_print_as_toml() {
        assert_eq!(toml_value("8000"), "8000");
        assert_eq!(toml_value("true"), "true");
        assert_eq!(toml_value("127.0.0.1"), "\"127.0.0.1\"");
        assert_eq!(toml_value("a \"b\""), "'a \"b\"'");
    }
}
