//! What commands print: one human line per item, or with `--json` one JSON
//! object per line (`{"kind": ..., ...}`), so scripts can read either.
//!
//! Kinds: `ok` (a command's outcome), `message` (an MP), `room_message`,
//! `event` (anything else from `listen`), `warning` (for example a changed
//! identity key), `error` (on standard error, with `hint` and `exit_code`).

use std::io::Write;

use serde_json::{Value, json};

/// The output of one command.
pub struct Output<'a> {
    json: bool,
    out: &'a mut dyn Write,
    err: &'a mut dyn Write,
}

impl std::fmt::Debug for Output<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Output").field("json", &self.json).finish_non_exhaustive()
    }
}

impl<'a> Output<'a> {
    /// Human text (`json` false) or JSON lines to `out`; warnings and errors to `err`.
    pub fn new(json: bool, out: &'a mut dyn Write, err: &'a mut dyn Write) -> Self {
        Output { json, out, err }
    }

    /// Whether JSON lines are printed.
    #[must_use]
    pub fn is_json(&self) -> bool {
        self.json
    }

    /// One item: `human` as a line, or `fields` (an object) with `kind` first.
    /// Write errors (a closed pipe) are ignored: there is no one to tell.
    pub fn item(&mut self, kind: &str, human: &str, fields: Value) {
        if self.json {
            let _ = writeln!(self.out, "{}", with_kind(kind, fields));
        } else {
            let _ = writeln!(self.out, "{human}");
        }
        let _ = self.out.flush();
    }

    /// A warning, on standard error in human mode (standard output in JSON mode, as a `warning` line).
    pub fn warning(&mut self, human: &str, fields: Value) {
        if self.json {
            let _ = writeln!(self.out, "{}", with_kind("warning", fields));
        } else {
            let _ = writeln!(self.err, "warning: {human}");
        }
    }

    /// The error that ends the command, with what to do about it.
    pub fn error(&mut self, message: &str, hint: &str, exit_code: u8) {
        if self.json {
            let fields = json!({"message": message, "hint": hint, "exit_code": exit_code});
            let _ = writeln!(self.err, "{}", with_kind("error", fields));
        } else if hint.is_empty() {
            let _ = writeln!(self.err, "error: {message}");
        } else {
            let _ = writeln!(self.err, "error: {message}\nhint: {hint}");
        }
    }
}

fn with_kind(kind: &str, fields: Value) -> Value {
    let mut object = serde_json::Map::new();
    object.insert("kind".into(), Value::from(kind));
    if let Value::Object(map) = fields {
        object.extend(map);
    }
    Value::Object(object)
}
