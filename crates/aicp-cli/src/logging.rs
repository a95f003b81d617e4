//! The process's log subscriber: the `--log` filter, text or JSON lines on stderr, colour only
//! on a terminal, and the text format's field writer.
//!
//! Every request opens a span with three fields (its id, method and path), and the text format
//! writes a span's fields out when the span opens, not when a line is logged. With
//! tracing-subscriber's default field writer that took 3.5% of the server's CPU under load
//! (`Debug` escaping of each string, through `core::fmt`), so text lines use [`Fields`], which
//! writes plain strings as they are.

use std::fmt::{self, Write as _};
use std::io::IsTerminal;

use tracing::field::{Field, Visit};
use tracing_subscriber::field::RecordFields;
use tracing_subscriber::fmt::FormatFields;
use tracing_subscriber::fmt::format::Writer;

/// How log lines look on stderr.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// One line per event for people, `request{id=… method=… path=…}:` before a request's.
    Text,
    /// One JSON object per line, with the request's span and its id, for log collectors.
    Json,
}

/// Installs the subscriber for the whole process. A filter that does not parse falls back to
/// `info`.
pub fn init(filter: &str, format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_new(filter)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let logs = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        // Escape codes are noise in a file, a pipe or a log collector.
        .with_ansi(std::io::stderr().is_terminal());
    match format {
        LogFormat::Text => logs.fmt_fields(Fields).init(),
        LogFormat::Json => logs
            .json()
            .with_current_span(true)
            .with_span_list(false)
            .init(),
    }
}

/// Writes fields as `name=value`, separated by spaces, as tracing-subscriber's default does,
/// but a plain string value (printable ASCII, no space, quote, backslash or `=`: ids, paths,
/// model names) goes out as it is. Other strings are quoted and escaped, so a line still
/// splits into fields unambiguously; a message is written bare; `log.*` fields (the `log`
/// crate's bridge) are left out.
#[derive(Debug, Default, Clone, Copy)]
pub struct Fields;

impl<'writer> FormatFields<'writer> for Fields {
    fn format_fields<R: RecordFields>(&self, writer: Writer<'writer>, fields: R) -> fmt::Result {
        let mut visitor = FieldWriter {
            writer,
            separate: false,
            result: Ok(()),
        };
        fields.record(&mut visitor);
        visitor.result
    }
}

struct FieldWriter<'writer> {
    writer: Writer<'writer>,
    separate: bool,
    result: fmt::Result,
}

impl FieldWriter<'_> {
    /// Writes the separator and `name=` (nothing for the message) and says whether the value
    /// should follow: not after an error, not for a `log.*` field.
    fn start(&mut self, field: &Field) -> bool {
        let name = field.name();
        if self.result.is_err() || name.starts_with("log.") {
            return false;
        }
        if std::mem::replace(&mut self.separate, true) {
            self.result = self.writer.write_char(' ');
        }
        if name != "message" {
            let name = name.strip_prefix("r#").unwrap_or(name);
            self.result = self
                .result
                .and_then(|()| self.writer.write_str(name))
                .and_then(|()| self.writer.write_char('='));
        }
        self.result.is_ok()
    }

    fn write(&mut self, field: &Field, value: fmt::Arguments<'_>) {
        if self.start(field) {
            self.result = self.writer.write_fmt(value);
        }
    }
}

impl Visit for FieldWriter<'_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" || is_plain(value) {
            // Straight into the line, past `core::fmt`: the per-request span's case.
            if self.start(field) {
                self.result = self.writer.write_str(value);
            }
        } else {
            self.write(field, format_args!("{value:?}"));
        }
    }

    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        self.write(field, format_args!("{}", Chain(value)));
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.write(field, format_args!("{value:?}"));
    }
}

/// Whether a string can be written without quotes and still read back as one field.
fn is_plain(value: &str) -> bool {
    !value.is_empty()
        && value
            .bytes()
            .all(|b| b.is_ascii_graphic() && !matches!(b, b'"' | b'\\' | b'='))
}

/// An error and its sources, `outer: inner: root`, quoted as one field.
struct Chain<'a>(&'a (dyn std::error::Error + 'static));

impl fmt::Display for Chain<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut text = self.0.to_string();
        let mut source = self.0.source();
        while let Some(error) = source {
            write!(text, ": {error}")?;
            source = error.source();
        }
        write!(f, "{text:?}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tracing_subscriber::layer::SubscriberExt;

    /// The text lines a closure's events produce, through [`Fields`].
    fn lines(log: impl FnOnce()) -> String {
        let buffer = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let sink = buffer.clone();
        let layer = tracing_subscriber::fmt::layer()
            .fmt_fields(Fields)
            .with_ansi(false)
            .without_time()
            .with_target(false)
            .with_writer(move || SharedBuffer(sink.clone()));
        let subscriber = tracing_subscriber::registry().with(layer);
        tracing::subscriber::with_default(subscriber, log);
        String::from_utf8(buffer.lock().unwrap().clone()).unwrap()
    }

    struct SharedBuffer(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

    impl std::io::Write for SharedBuffer {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(bytes);
            Ok(bytes.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn plain_strings_go_out_bare_and_others_quoted() {
        let text = lines(|| {
            let span = tracing::info_span!(
                "request",
                id = "a1-7",
                method = "POST",
                path = "/v2/models/mnist/infer"
            );
            span.in_scope(|| {
                tracing::info!(model = "mnist", note = "two words", count = 3, "engine run")
            });
        });
        assert_eq!(
            text.trim(),
            "INFO request{id=a1-7 method=POST path=/v2/models/mnist/infer}: engine run model=mnist note=\"two words\" count=3"
        );
    }

    #[test]
    fn a_client_id_cannot_forge_fields_or_lines() {
        let text = lines(|| {
            let span = tracing::info_span!("request", id = "x path=/admin\n\"", path = "");
            span.in_scope(|| tracing::warn!("slow"));
        });
        assert_eq!(
            text.trim(),
            r#"WARN request{id="x path=/admin\n\"" path=""}: slow"#
        );
    }

    #[test]
    fn errors_are_written_with_their_sources() {
        let error = std::io::Error::other(anyhow::anyhow!("root cause").context("outer"));
        let text = lines(|| {
            tracing::error!(
                error = &error as &(dyn std::error::Error + 'static),
                "failed"
            )
        });
        assert_eq!(text.trim(), "ERROR failed error=\"outer: root cause\"");
    }
}
