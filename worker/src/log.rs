//! One line per event on standard error, as text or JSON (`--log-format json`). Lines come
//! from the engine (masked recipients, job ids, never a code) and from the worker itself.

use std::io::Write;

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    Text,
    Json,
}

#[derive(Clone, Copy)]
pub struct Logger {
    pub format: Format,
}

impl Logger {
    pub fn info(&self, message: &str) {
        self.line("info", message);
    }
    pub fn warn(&self, message: &str) {
        self.line("warning", message);
    }
    pub fn error(&self, message: &str) {
        self.line("error", message);
    }

    fn line(&self, level: &str, message: &str) {
        let at = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
        let line = match self.format {
            Format::Text => format!("{at} {level}: {}", message.replace('\n', " ")),
            Format::Json => {
                serde_json::json!({"at": at, "level": level, "message": message}).to_string()
            }
        };
        let _ = writeln!(std::io::stderr().lock(), "{line}");
    }
}
