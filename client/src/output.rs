//! What commands print: one human line per item, or with `--json` one JSON
//! object per line (`{"kind": ..., ...}`), so scripts can read either.
//!
//! Kinds: `ok` (a command's outcome), `message` (an MP), `room_message`,
//! `event` (anything else from `listen`), `warning` (for example a changed
//! identity key), `error` (on standard error, with `hint` and `exit_code`).
//!
//! Human lines show text from others (messages, names, reasons) with its
//! control characters escaped ([`escape_controls`]): a newline inside a
//! message cannot forge a line from another user, and ANSI escapes, BEL and
//! Unicode direction overrides never reach the terminal. JSON lines carry
//! the exact text (JSON escapes what it must).

use std::borrow::Cow;
use std::fmt::Write as _;
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
            let _ = writeln!(self.out, "{}", escape_controls(human));
        }
        let _ = self.out.flush();
    }

    /// One item shown as several human lines (each escaped on its own).
    pub fn item_lines(&mut self, kind: &str, human: &[String], fields: Value) {
        if self.json {
            let _ = writeln!(self.out, "{}", with_kind(kind, fields));
        } else {
            for line in human {
                let _ = writeln!(self.out, "{}", escape_controls(line));
            }
        }
        let _ = self.out.flush();
    }

    /// A warning, on standard error in human mode (standard output in JSON mode, as a `warning` line).
    pub fn warning(&mut self, human: &str, fields: Value) {
        if self.json {
            let _ = writeln!(self.out, "{}", with_kind("warning", fields));
        } else {
            let _ = writeln!(self.err, "warning: {}", escape_controls(human));
        }
    }

    /// The error that ends the command, with what to do about it.
    pub fn error(&mut self, message: &str, hint: &str, exit_code: u8) {
        if self.json {
            let fields = json!({"message": message, "hint": hint, "exit_code": exit_code});
            let _ = writeln!(self.err, "{}", with_kind("error", fields));
        } else if hint.is_empty() {
            let _ = writeln!(self.err, "error: {}", escape_controls(message));
        } else {
            let _ = writeln!(self.err, "error: {}\nhint: {}", escape_controls(message), escape_controls(hint));
        }
    }
}

/// Whether `c` must not reach a terminal as is: C0 controls (newline, tab,
/// ESC, BEL, ...), DEL, C1 controls, and the Unicode marks that change the
/// direction of the text around them (embeddings, overrides, isolates, and
/// the implicit marks).
fn is_unsafe(c: char) -> bool {
    c.is_control()
        || matches!(c, '\u{061C}' | '\u{200E}' | '\u{200F}' | '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}')
}

/// `text` with every character [`is_unsafe`] written as an escape: `\n`,
/// `\r`, `\t`, else `\u{XXXX}`. Text without any is returned as is.
#[must_use]
pub fn escape_controls(text: &str) -> Cow<'_, str> {
    if !text.chars().any(is_unsafe) {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        match c {
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if is_unsafe(c) => {
                let _ = write!(out, "\\u{{{:04x}}}", u32::from(c));
            }
            c => out.push(c),
        }
    }
    Cow::Owned(out)
}

fn with_kind(kind: &str, fields: Value) -> Value {
    let mut object = serde_json::Map::new();
    object.insert("kind".into(), Value::from(kind));
    if let Value::Object(map) = fields {
        object.extend(map);
    }
    Value::Object(object)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn controls_and_direction_marks_are_escaped() {
        assert!(matches!(escape_controls("plain text, ünïcode ok"), Cow::Borrowed(_)));
        assert_eq!(escape_controls("hi\nbob: forged"), "hi\\nbob: forged");
        assert_eq!(escape_controls("\u{1b}[31mred\u{7}"), "\\u{001b}[31mred\\u{0007}");
        assert_eq!(escape_controls("a\rb\tc\u{7f}\u{85}"), "a\\rb\\tc\\u{007f}\\u{0085}");
        assert_eq!(escape_controls("evil\u{202E}txt.exe"), "evil\\u{202e}txt.exe");
        assert_eq!(escape_controls("\u{2066}x\u{2069}\u{200f}"), "\\u{2066}x\\u{2069}\\u{200f}");
    }

    #[test]
    fn human_lines_are_escaped_and_json_is_exact() {
        let text = "hi\nalice: forged\u{1b}[2J\u{7}";
        let (mut out, mut err) = (Vec::new(), Vec::new());
        Output::new(false, &mut out, &mut err).item("message", &format!("bob: {text}"), json!({"text": text}));
        let human = String::from_utf8(out).unwrap();
        assert_eq!(human, "bob: hi\\nalice: forged\\u{001b}[2J\\u{0007}\n");
        let (mut out, mut err) = (Vec::new(), Vec::new());
        Output::new(true, &mut out, &mut err).item("message", "unused", json!({"text": text}));
        let line: Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(line["text"], text, "JSON keeps the exact text");
        let (mut out, mut err) = (Vec::new(), Vec::new());
        let mut o = Output::new(false, &mut out, &mut err);
        o.warning("x\u{7}", json!({}));
        o.error("bad\nerror: forged", "a\u{1b}", 1);
        assert_eq!(
            String::from_utf8(err).unwrap(),
            "warning: x\\u{0007}\nerror: bad\\nerror: forged\nhint: a\\u{001b}\n"
        );
    }
}
