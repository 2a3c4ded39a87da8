//! `docs/PROTOCOL.md` checked against the codec, so the specification cannot
//! drift from the code:
//!
//! - every fenced block with info string `hex` is exactly one frame that
//!   decodes (with the default limits), leaves no byte over and re-encodes to
//!   the identical bytes;
//! - every block is the encoding of an entry of `confab_proto::examples::all()`,
//!   and every entry appears in the spec;
//! - the blocks cover every opcode, every frame type and every status;
//! - every opcode has its `### name (number)` section ending with its example,
//!   and every body table (field, kind) matches the codec's layout in wire order;
//! - the result shape each request opcode is given by the body-rule table, by
//!   the opcode table's "Success" column and by the list in `response: empty`
//!   is the one the codec decodes for it and the one the server really sends
//!   (a scripted server run answers every request opcode once).

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

use bytes::Bytes;
use confab_proto::examples;
use confab_proto::wire::{
    Close, EventBody, Frame, FrameType, Limits, Message, Opcode, Ping, Pong, RequestBody, ResponseKind, Status,
};

type Layout = &'static [(&'static str, &'static str)];

/// One fenced `hex` block.
struct Block {
    /// 1-based, in document order.
    number: usize,
    /// Line of the opening fence (1-based).
    line: usize,
    /// Line of the closing fence.
    end_line: usize,
    /// Index of the enclosing `###` section, if any.
    section: Option<usize>,
    /// The block's content lines, with their line numbers.
    rows: Vec<(usize, String)>,
}

/// A `###` section: its heading and every line up to the next heading.
struct Section {
    heading: String,
    line: usize,
    lines: Vec<(usize, String)>,
}

struct Spec {
    blocks: Vec<Block>,
    sections: Vec<Section>,
}

impl Spec {
    fn load() -> Spec {
        Spec::parse(&Spec::text())
    }

    /// The whole of docs/PROTOCOL.md.
    fn text() -> String {
        let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../docs/PROTOCOL.md");
        std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()))
    }

    fn parse(text: &str) -> Spec {
        let mut blocks: Vec<Block> = Vec::new();
        let mut sections: Vec<Section> = Vec::new();
        let mut current: Option<usize> = None;
        // The open fence: its marker (e.g. "```") and, for `hex` blocks, the block being read.
        let mut fence: Option<(String, Option<Block>)> = None;
        for (i, line) in text.lines().enumerate() {
            let lineno = i + 1;
            let trimmed = line.trim();
            if let Some((marker, block)) = &mut fence {
                let closes = trimmed.len() >= marker.len()
                    && trimmed.starts_with(marker.as_str())
                    && trimmed.chars().all(|c| marker.starts_with(c));
                if let Some(s) = current {
                    sections[s].lines.push((lineno, line.to_owned()));
                }
                if closes {
                    if let Some(mut block) = block.take() {
                        block.end_line = lineno;
                        blocks.push(block);
                    }
                    fence = None;
                } else if let Some(block) = block {
                    block.rows.push((lineno, line.to_owned()));
                }
                continue;
            }
            if let Some(heading) = line.strip_prefix("### ") {
                sections.push(Section { heading: heading.trim().to_owned(), line: lineno, lines: Vec::new() });
                current = Some(sections.len() - 1);
                continue;
            }
            if line.starts_with("# ") || line.starts_with("## ") {
                current = None;
                continue;
            }
            if let Some(s) = current {
                sections[s].lines.push((lineno, line.to_owned()));
            }
            for marker_char in ['`', '~'] {
                let count = trimmed.chars().take_while(|c| *c == marker_char).count();
                if count >= 3 {
                    let info = trimmed[count..].trim();
                    let block = (info == "hex").then(|| Block {
                        number: blocks.len() + 1,
                        line: lineno,
                        end_line: 0,
                        section: current,
                        rows: Vec::new(),
                    });
                    fence = Some((marker_char.to_string().repeat(count), block));
                    break;
                }
            }
        }
        if let Some((_, block)) = fence {
            match block {
                Some(b) => panic!("hex block #{} opened at line {} is never closed", b.number, b.line),
                None => panic!("a fenced block is never closed"),
            }
        }
        Spec { blocks, sections }
    }

    fn where_is(&self, block: &Block) -> String {
        let section = block.section.map_or("(no section)", |s| self.sections[s].heading.as_str());
        format!("hex block #{} (line {}, section `{section}`)", block.number, block.line)
    }

    /// The section with exactly this heading.
    fn section(&self, heading: &str) -> Result<usize, String> {
        let found: Vec<usize> = (0..self.sections.len()).filter(|&i| self.sections[i].heading == heading).collect();
        match found.as_slice() {
            [i] => Ok(*i),
            [] => Err(format!("no section `### {heading}`")),
            many => Err(format!(
                "section `### {heading}` appears {} times (lines {:?})",
                many.len(),
                many.iter().map(|&i| self.sections[i].line).collect::<Vec<_>>()
            )),
        }
    }

    fn blocks_in(&self, section: usize) -> Vec<&Block> {
        self.blocks.iter().filter(|b| b.section == Some(section)).collect()
    }
}

/// A decoded block.
struct Decoded {
    bytes: Bytes,
    message: Message,
}

/// Decodes a block as exactly one canonical frame, or says why not (naming the line).
fn decode(block: &Block) -> Result<Decoded, String> {
    let mut hex = String::new();
    for (lineno, row) in &block.rows {
        if let Some(c) = row.chars().find(|c| !c.is_ascii_whitespace() && !matches!(c, '0'..='9' | 'a'..='f')) {
            return Err(format!("line {lineno}: {c:?} is not a lowercase hex digit"));
        }
        hex.extend(row.chars().filter(|c| !c.is_ascii_whitespace()));
    }
    if hex.is_empty() {
        return Err("the block is empty".into());
    }
    let bytes = Bytes::from(hex::decode(&hex).map_err(|e| format!("not hex: {e}"))?);
    let limits = Limits::default();
    let (frame, len) = match Frame::parse(&bytes, &limits) {
        Ok(Some(parsed)) => parsed,
        Ok(None) => return Err(format!("incomplete frame: {} bytes is not a whole frame", bytes.len())),
        Err(e) => return Err(format!("frame does not parse: {e}")),
    };
    if len != bytes.len() {
        return Err(format!("the frame is {len} bytes, the block holds {} (exactly one frame per block)", bytes.len()));
    }
    let message = Message::decode(&frame, &limits).map_err(|e| format!("message does not decode: {e}"))?;
    let again = message.to_bytes(&frame.auth);
    if again != bytes {
        return Err(format!("does not re-encode identically: re-encoded as {}", hex::encode(&again)));
    }
    Ok(Decoded { bytes, message })
}

/// Decodes every block; fails listing every bad one.
fn decode_all(spec: &Spec) -> Vec<(&Block, Decoded)> {
    let mut ok = Vec::new();
    let mut errors = Vec::new();
    for block in &spec.blocks {
        match decode(block) {
            Ok(d) => ok.push((block, d)),
            Err(e) => errors.push(format!("{}: {e}", spec.where_is(block))),
        }
    }
    assert!(errors.is_empty(), "undecodable hex blocks in docs/PROTOCOL.md:\n{}", errors.join("\n"));
    ok
}

/// The `| Field | Kind | ... |` table of a section, as (field, kind) in row order.
fn field_table(section: &Section) -> Result<Option<Vec<(String, String)>>, String> {
    let mut lines = section.lines.iter().skip_while(|(_, l)| !l.trim_start().starts_with("| Field |"));
    if lines.next().is_none() {
        return Ok(None);
    }
    lines.next(); // the |---|---| separator
    let mut rows = Vec::new();
    for (lineno, line) in lines.take_while(|(_, l)| l.trim_start().starts_with('|')) {
        let cells: Vec<&str> = line.split('|').map(str::trim).collect();
        if cells.len() < 4 {
            return Err(format!("line {lineno}: table row needs field and kind columns"));
        }
        let unquote = |s: &str| s.trim_matches('`').to_owned();
        rows.push((unquote(cells[1]), unquote(cells[2])));
    }
    Ok(Some(rows))
}

/// Checks a section's body table against the codec's layout.
fn check_table(spec: &Spec, section: usize, layout: Layout) -> Result<(), String> {
    let s = &spec.sections[section];
    let want: Vec<(String, String)> = layout.iter().map(|(f, k)| ((*f).to_owned(), (*k).to_owned())).collect();
    match field_table(s)? {
        Some(rows) if rows == want => Ok(()),
        Some(rows) => Err(format!(
            "section `{}` (line {}): body table {rows:?} does not match the codec's layout {want:?}",
            s.heading, s.line
        )),
        None if want.is_empty() => {
            if s.lines.iter().any(|(_, l)| l.contains("No fields")) {
                Ok(())
            } else {
                Err(format!("section `{}` (line {}): empty body but no \"No fields\" sentence", s.heading, s.line))
            }
        }
        None => Err(format!("section `{}` (line {}): no `| Field | Kind | Meaning |` table", s.heading, s.line)),
    }
}

/// The single example block of a section, which must be its last content.
fn single_final_block(spec: &Spec, section: usize) -> Result<&Block, String> {
    let s = &spec.sections[section];
    let blocks = spec.blocks_in(section);
    let [block] = blocks.as_slice() else {
        return Err(format!(
            "section `{}` (line {}) has {} hex blocks, wants exactly one",
            s.heading,
            s.line,
            blocks.len()
        ));
    };
    let last = s.lines.iter().rev().find(|(_, l)| !l.trim().is_empty()).map(|(n, _)| *n);
    if last != Some(block.end_line) {
        return Err(format!("section `{}` (line {}): the example frame must end the section", s.heading, s.line));
    }
    Ok(block)
}

#[test]
fn spec_has_hex_blocks() {
    let spec = Spec::load();
    assert!(
        !spec.blocks.is_empty(),
        "docs/PROTOCOL.md has no fenced ```hex blocks: the example frames are missing (or their info string is not `hex`)"
    );
}

#[test]
fn every_hex_block_is_one_canonical_frame() {
    let spec = Spec::load();
    let decoded = decode_all(&spec);
    assert_eq!(decoded.len(), spec.blocks.len());
}

#[test]
fn hex_blocks_are_the_codec_examples() {
    let spec = Spec::load();
    let examples: BTreeMap<String, Bytes> =
        examples::all().into_iter().map(|e| (e.label.clone(), e.to_bytes())).collect();
    let mut seen = BTreeSet::new();
    let mut errors = Vec::new();
    for (block, d) in decode_all(&spec) {
        match examples.iter().find(|(_, bytes)| **bytes == d.bytes) {
            Some((label, _)) => {
                seen.insert(label.clone());
            }
            None => errors.push(format!(
                "{}: not the encoding of any entry of confab_proto::examples::all() (regenerate it from the code)",
                spec.where_is(block)
            )),
        }
    }
    for label in examples.keys().filter(|l| !seen.contains(*l)) {
        errors.push(format!("example `{label}` of confab_proto::examples::all() appears in no hex block"));
    }
    assert!(errors.is_empty(), "docs/PROTOCOL.md has drifted from the code:\n{}", errors.join("\n"));
}

#[test]
fn hex_blocks_cover_every_opcode_frame_type_and_status() {
    let spec = Spec::load();
    let decoded = decode_all(&spec);
    // An opcode counts as covered by a request or event frame of its own, not by a response echoing it.
    let opcodes: BTreeSet<Opcode> = decoded
        .iter()
        .filter(|(_, d)| matches!(d.message, Message::Request(_) | Message::Event(_)))
        .filter_map(|(_, d)| d.message.opcode())
        .collect();
    let frame_types: BTreeSet<FrameType> = decoded.iter().map(|(_, d)| d.message.frame_type()).collect();
    let statuses: Vec<Status> = decoded
        .iter()
        .filter_map(|(_, d)| match &d.message {
            Message::Response(r) => Some(r.status),
            _ => None,
        })
        .collect();
    let missing_opcodes: Vec<String> = Opcode::ALL.iter().filter(|o| !opcodes.contains(o)).map(|o| o.label()).collect();
    let missing_types: Vec<&str> =
        FrameType::ALL.iter().filter(|t| !frame_types.contains(t)).map(|t| t.name()).collect();
    let missing_statuses: Vec<&str> = Status::ALL.iter().filter(|s| !statuses.contains(s)).map(|s| s.name()).collect();
    assert!(missing_opcodes.is_empty(), "no hex block in docs/PROTOCOL.md uses opcode(s) {missing_opcodes:?}");
    assert!(missing_types.is_empty(), "no hex block in docs/PROTOCOL.md is a frame of type(s) {missing_types:?}");
    assert!(
        missing_statuses.is_empty(),
        "no hex block in docs/PROTOCOL.md is a response with status(es) {missing_statuses:?}"
    );
}

#[test]
fn every_opcode_has_its_section() {
    let spec = Spec::load();
    let mut errors = Vec::new();
    for &opcode in Opcode::ALL {
        let heading = format!("{} ({})", opcode.name(), opcode.as_u32());
        let result = spec.section(&heading).and_then(|section| {
            let layout = if opcode.is_request() { RequestBody::layout(opcode) } else { EventBody::layout(opcode) };
            check_table(&spec, section, layout.expect("every opcode has a body layout"))?;
            let block = single_final_block(&spec, section)?;
            let d = decode(block).map_err(|e| format!("{}: {e}", spec.where_is(block)))?;
            let right_type = if opcode.is_request() { FrameType::Request } else { FrameType::Event };
            if d.message.opcode() != Some(opcode) || d.message.frame_type() != right_type {
                return Err(format!(
                    "{}: wants a {} frame of opcode {opcode}",
                    spec.where_is(block),
                    right_type.name()
                ));
            }
            Ok(())
        });
        if let Err(e) = result {
            errors.push(e);
        }
    }
    assert!(errors.is_empty(), "opcode sections of docs/PROTOCOL.md:\n{}", errors.join("\n"));
}

// The rest of this file's tests, split for length. `include!` keeps them in
// this module, so their names (and snapshot names) do not change.
include!("spec_tables/responses.rs"); // response shapes, body rules and opcode tables against the codec and server
