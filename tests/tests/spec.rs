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

#[test]
fn every_response_shape_and_control_frame_has_its_section() {
    let spec = Spec::load();
    // (heading, layout, does the block's message fit)
    type Fits = fn(&Message) -> bool;
    fn response(m: &Message, kind: ResponseKind, status: Option<Status>) -> bool {
        matches!(m, Message::Response(r) if r.body.kind() == kind && status.is_none_or(|s| r.status == s))
    }
    let cases: [(&str, Layout, Fits); 16] = [
        ("response: empty", ResponseKind::Empty.layout(), |m| response(m, ResponseKind::Empty, Some(Status::Valid))),
        ("response: in_progress", ResponseKind::Empty.layout(), |m| {
            response(m, ResponseKind::Empty, Some(Status::InProgress))
        }),
        ("response: finished", ResponseKind::Empty.layout(), |m| {
            response(m, ResponseKind::Empty, Some(Status::Finished))
        }),
        ("response: error", ResponseKind::Error.layout(), |m| response(m, ResponseKind::Error, Some(Status::Error))),
        ("response: tokens", ResponseKind::Tokens.layout(), |m| response(m, ResponseKind::Tokens, None)),
        ("response: room_joined", ResponseKind::RoomJoined.layout(), |m| response(m, ResponseKind::RoomJoined, None)),
        ("response: history", ResponseKind::History.layout(), |m| response(m, ResponseKind::History, None)),
        ("response: sent", ResponseKind::Sent.layout(), |m| response(m, ResponseKind::Sent, None)),
        ("response: peer_keys", ResponseKind::PeerKeys.layout(), |m| response(m, ResponseKind::PeerKeys, None)),
        ("response: identity_key", ResponseKind::IdentityKey.layout(), |m| {
            response(m, ResponseKind::IdentityKey, None)
        }),
        ("response: code_issued", ResponseKind::CodeIssued.layout(), |m| response(m, ResponseKind::CodeIssued, None)),
        ("response: jwt", ResponseKind::Jwt.layout(), |m| response(m, ResponseKind::Jwt, None)),
        ("response: jwks", ResponseKind::Jwks.layout(), |m| response(m, ResponseKind::Jwks, None)),
        ("ping", Ping::LAYOUT, |m| matches!(m, Message::Ping(_))),
        ("pong", Pong::LAYOUT, |m| matches!(m, Message::Pong(_))),
        ("close", Close::LAYOUT, |m| matches!(m, Message::Close(_))),
    ];
    let mut errors = Vec::new();
    for (heading, layout, fits) in cases {
        let result = spec.section(heading).and_then(|section| {
            check_table(&spec, section, layout)?;
            let block = single_final_block(&spec, section)?;
            let d = decode(block).map_err(|e| format!("{}: {e}", spec.where_is(block)))?;
            if fits(&d.message) {
                Ok(())
            } else {
                Err(format!("{}: the frame is not an example of `{heading}`", spec.where_is(block)))
            }
        });
        if let Err(e) = result {
            errors.push(e);
        }
    }
    assert!(errors.is_empty(), "response and control sections of docs/PROTOCOL.md:\n{}", errors.join("\n"));
}

// ---- the result shape of each opcode: body-rule table, opcode table, `response: empty` ----

/// Every response body shape, for mapping the document's names back to kinds.
const SHAPES: [ResponseKind; 12] = [
    ResponseKind::Empty,
    ResponseKind::Error,
    ResponseKind::Tokens,
    ResponseKind::RoomJoined,
    ResponseKind::History,
    ResponseKind::Sent,
    ResponseKind::PeerKeys,
    ResponseKind::IdentityKey,
    ResponseKind::CodeIssued,
    ResponseKind::Jwt,
    ResponseKind::Jwks,
    ResponseKind::RoomDescriptor,
];

/// The name the document gives a shape (its `### response: name` section). A new
/// kind fails to compile here until it is named (and added to [`SHAPES`]).
fn shape_name(kind: ResponseKind) -> &'static str {
    match kind {
        ResponseKind::Empty => "empty",
        ResponseKind::Error => "error",
        ResponseKind::Tokens => "tokens",
        ResponseKind::RoomJoined => "room_joined",
        ResponseKind::History => "history",
        ResponseKind::Sent => "sent",
        ResponseKind::PeerKeys => "peer_keys",
        ResponseKind::IdentityKey => "identity_key",
        ResponseKind::CodeIssued => "code_issued",
        ResponseKind::Jwt => "jwt",
        ResponseKind::Jwks => "jwks",
        ResponseKind::RoomDescriptor => "room_described",
    }
}

fn shape_named(name: &str) -> Option<ResponseKind> {
    SHAPES.iter().copied().find(|k| shape_name(*k) == name)
}

fn request_opcode_named(name: &str) -> Option<Opcode> {
    Opcode::ALL.iter().copied().find(|o| o.is_request() && o.name() == name)
}

/// The rows of the markdown table whose header line starts with `header`, as
/// (line number, cells without the outer pipes), from the lines given.
fn table_rows<'a>(lines: impl IntoIterator<Item = (usize, &'a str)>, header: &str) -> Vec<(usize, Vec<String>)> {
    let mut lines = lines.into_iter().skip_while(|(_, l)| !l.trim_start().starts_with(header));
    if lines.next().is_none() {
        return Vec::new();
    }
    lines.next(); // the |---|---| separator
    lines
        .take_while(|(_, l)| l.trim_start().starts_with('|'))
        .map(|(n, l)| {
            let cells: Vec<String> = l.trim().trim_matches('|').split('|').map(|c| c.trim().to_owned()).collect();
            (n, cells)
        })
        .collect()
}

/// The (status, shape) of every response other than `error` the server sent
/// for each request opcode, in a scripted run that answers every request
/// opcode without error at least once.
fn server_answers() -> BTreeMap<Opcode, Vec<(Status, ResponseKind)>> {
    use std::time::Duration;

    use confab_proto::ServerConfig;
    use confab_proto::server::{CodeConfig, OidcConfig, PhantomConfig};
    use confab_proto::wire::{
        AcceptMp, CloseMp, CreateRoom, DeleteRoom, DeliveryAck, FetchKey, Introspect, IssueCode, JoinRoom, Jwks,
        LeaveRoom, Login, Logout, Passphrase, Refresh, Register, RequestMp, RoomHistory, RoomInfo, SendMp, SendRoom,
        SetIdentityKey, VerifyCode,
    };
    use confab_sim::{IDP_AUDIENCE, IDP_ISSUER, TestIdp};
    use confab_tests::transcript::{START_UNIX_MS, Script, config};
    use rand::SeedableRng as _;

    const SERVICE: &str = "spec-service-credential";
    let mut idp = TestIdp::new(&mut rand::rngs::StdRng::from_seed([9; 32]), Duration::from_secs(300));
    let mut s = Script::new(ServerConfig {
        codes: Some(CodeConfig::default()),
        phantom: Some(PhantomConfig::new(SERVICE, "https://confab.test", "backends")),
        oidc: Some(OidcConfig::new(IDP_ISSUER, IDP_AUDIENCE, idp.jwks_json())),
        idle_timeout: Duration::from_secs(3600),
        ..config()
    });
    let blob = |b: &'static [u8]| Bytes::from_static(b);
    for (label, user) in [("a", "alice"), ("b", "bob")] {
        s.connect(label);
        s.send(
            label,
            Register {
                username: user.into(),
                password: "correct horse".into(),
                passphrase: "apple river stone".into(),
                identity_key: Bytes::from(format!("idkey-{user}")),
            },
        );
        s.send(label, Login { username: user.into(), password: "correct horse".into() });
        s.send(label, Passphrase { passphrase: "apple river stone".into() });
    }
    let verifier = blob(b"verifier-room11-0123");
    s.send("a", CreateRoom { room: "room11".into(), verifier: verifier.clone(), descriptor: blob(b"descriptor") });
    s.send("b", RoomInfo { room: "room11".into() });
    s.send("b", JoinRoom { room: "room11".into(), verifier });
    s.send("a", SendRoom { room: "room11".into(), sealed: blob(b"sealed") });
    s.send("b", RoomHistory { room: "room11".into() });
    s.send("b", LeaveRoom { room: "room11".into() });
    s.send("a", DeleteRoom { room: "room11".into() });
    s.send("a", RequestMp { peer: "bob".into(), handshake: blob(b"hs-alice") });
    s.send("b", AcceptMp { peer: "alice".into(), handshake: blob(b"hs-bob") });
    s.send("a", SendMp { peer: "bob".into(), sealed: blob(b"sealed") });
    s.send("b", DeliveryAck { peer: "alice".into(), seq: 2 });
    s.send("a", CloseMp { peer: "bob".into() });
    s.send("a", FetchKey { username: "bob".into() });
    s.send("a", IssueCode { audience: "game-7".into() });
    let code = s.received["a"]
        .iter()
        .rev()
        .find_map(|m| match m {
            Message::Response(r) => match &r.body {
                confab_proto::wire::ResponseBody::CodeIssued(c) => Some(c.code.clone()),
                _ => None,
            },
            _ => None,
        })
        .expect("issue_code answered with a code");
    s.connect("g");
    s.send_auth("g", 1001, VerifyCode { username: "alice".into(), audience: "game-7".into(), code }, b"");
    s.send_auth("g", 1002, Jwks {}, b"");
    let access = s.access_token("a").expect("alice holds an access token");
    s.send_auth("g", 1003, Introspect { token: access }, SERVICE.as_bytes());
    let refresh = s.refresh_token("a").expect("alice holds a refresh token");
    s.send("a", Refresh { refresh_token: refresh });
    s.send("a", Logout {});
    let dave = idp.token(START_UNIX_MS, "dave");
    s.connect("d");
    s.send_auth("d", 1004, SetIdentityKey { identity_key: blob(b"idkey-dave") }, dave.as_bytes());

    let mut answers: BTreeMap<Opcode, Vec<(Status, ResponseKind)>> = BTreeMap::new();
    for m in s.received.values().flatten() {
        if let Message::Response(r) = m
            && r.status != Status::Error
        {
            let seen = answers.entry(r.opcode).or_default();
            if !seen.contains(&(r.status, r.body.kind())) {
                seen.push((r.status, r.body.kind()));
            }
        }
    }
    let missing: Vec<&str> =
        Opcode::ALL.iter().filter(|o| o.is_request() && !answers.contains_key(o)).map(|o| o.name()).collect();
    assert!(
        missing.is_empty(),
        "the scripted run got no successful answer to {missing:?}: extend it\n{}",
        s.transcript()
    );
    answers
}

/// Checks that `shape` is what the codec decodes for `opcode` answered with
/// `status`, and what the server sent when it answered with that status.
fn check_shape(
    opcode: Opcode,
    status: Status,
    shape: ResponseKind,
    answers: &BTreeMap<Opcode, Vec<(Status, ResponseKind)>>,
    place: &str,
) -> Result<(), String> {
    let codec = ResponseKind::of(opcode, status);
    if codec != shape {
        return Err(format!(
            "{place}: `{}` answered `{}` is documented as `{}`, the codec reads `{}`",
            opcode.name(),
            status.name(),
            shape_name(shape),
            shape_name(codec)
        ));
    }
    let sent: Vec<&str> = answers
        .get(&opcode)
        .into_iter()
        .flatten()
        .filter(|(st, k)| *st == status && *k != shape)
        .map(|(_, k)| shape_name(*k))
        .collect();
    if !sent.is_empty() {
        return Err(format!(
            "{place}: `{}` answered `{}` is documented as `{}`, the server sent {sent:?}",
            opcode.name(),
            status.name(),
            shape_name(shape)
        ));
    }
    Ok(())
}

#[test]
fn body_rule_table_is_what_the_codec_and_server_answer() {
    let spec = Spec::load();
    let answers = server_answers();
    let section = spec.section("Body rule").unwrap();
    let lines = spec.sections[section].lines.iter().map(|(n, l)| (*n, l.as_str()));
    let rows = table_rows(lines, "| Opcode | Result shape |");
    assert!(!rows.is_empty(), "section `Body rule` has no `| Opcode | Result shape |` table");
    let mut errors = Vec::new();
    let mut named: BTreeMap<Opcode, usize> = BTreeMap::new();
    let mut others: Option<ResponseKind> = None;
    for (lineno, cells) in &rows {
        let [opcodes, shape] = cells.as_slice() else {
            errors.push(format!("line {lineno}: wants two cells, found {cells:?}"));
            continue;
        };
        // `empty`, or `[name](#response-name)`.
        let shape = match shape.strip_prefix('[').and_then(|s| s.split_once("](")) {
            Some((name, link)) if link == format!("#response-{name})") => shape_named(name),
            Some(_) => {
                errors.push(format!("line {lineno}: the link of {shape:?} is not to its `response:` section"));
                continue;
            }
            None => shape_named(shape),
        };
        let Some(shape) = shape else {
            errors.push(format!("line {lineno}: {:?} names no response shape", cells[1]));
            continue;
        };
        if opcodes == "every other request opcode" {
            others = Some(shape);
            continue;
        }
        for name in opcodes.split(',').map(|n| n.trim().trim_matches('`')) {
            let Some(opcode) = request_opcode_named(name) else {
                errors.push(format!("line {lineno}: {name:?} is not a request opcode"));
                continue;
            };
            if let Some(first) = named.insert(opcode, *lineno) {
                errors.push(format!("line {lineno}: `{name}` is already in the row of line {first}"));
            }
            for status in [Status::Valid, Status::Finished] {
                if let Err(e) = check_shape(opcode, status, shape, &answers, &format!("line {lineno}")) {
                    errors.push(e);
                }
            }
        }
    }
    match others {
        None => errors.push("the table has no `every other request opcode` row".into()),
        Some(shape) => {
            for &opcode in Opcode::ALL.iter().filter(|o| o.is_request() && !named.contains_key(o)) {
                for status in [Status::Valid, Status::Finished] {
                    let place = "row `every other request opcode`";
                    if let Err(e) = check_shape(opcode, status, shape, &answers, place) {
                        errors.push(e);
                    }
                }
            }
        }
    }
    // The two rules above the table.
    for &opcode in Opcode::ALL.iter().filter(|o| o.is_request()) {
        if ResponseKind::of(opcode, Status::Error) != ResponseKind::Error {
            errors.push(format!("`{}` answered `error` does not carry the error body", opcode.name()));
        }
        if ResponseKind::of(opcode, Status::InProgress) != ResponseKind::Empty {
            errors.push(format!("`{}` answered `in_progress` does not carry an empty body", opcode.name()));
        }
    }
    assert!(errors.is_empty(), "the body-rule table of docs/PROTOCOL.md:\n{}", errors.join("\n"));
}

#[test]
fn opcode_table_success_column_is_what_the_codec_and_server_answer() {
    let text = Spec::text();
    let answers = server_answers();
    let rows =
        table_rows(text.lines().enumerate().map(|(i, l)| (i + 1, l)), "| Opcode | Name | Kind | Auth | Success |");
    assert!(!rows.is_empty(), "docs/PROTOCOL.md has no opcode table");
    let mut errors = Vec::new();
    let mut seen = BTreeSet::new();
    for (lineno, cells) in &rows {
        let [_, name, kind, _, success] = cells.as_slice() else {
            errors.push(format!("line {lineno}: wants five cells, found {cells:?}"));
            continue;
        };
        if kind != "request" {
            continue;
        }
        let name = name.trim_matches('`');
        let Some(opcode) = request_opcode_named(name) else {
            errors.push(format!("line {lineno}: {name:?} is not a request opcode"));
            continue;
        };
        seen.insert(opcode);
        // "`valid` 200 or 202, sent", "`valid` 200, tokens; then event `connected`".
        let parsed = success.split_once(',').and_then(|(status, shape)| {
            let status = Status::ALL.iter().copied().find(|s| status.starts_with(&format!("`{}`", s.name())))?;
            let shape = shape.split(';').next()?.trim();
            Some((status, shape_named(shape)?))
        });
        match parsed {
            Some((status, shape)) => {
                if let Err(e) = check_shape(opcode, status, shape, &answers, &format!("line {lineno}")) {
                    errors.push(e);
                }
            }
            None => errors.push(format!("line {lineno}: cannot read the success column {success:?}")),
        }
    }
    for opcode in Opcode::ALL.iter().filter(|o| o.is_request() && !seen.contains(o)) {
        errors.push(format!("request opcode `{}` has no row in the opcode table", opcode.name()));
    }
    assert!(errors.is_empty(), "the opcode table of docs/PROTOCOL.md:\n{}", errors.join("\n"));
}

#[test]
fn response_empty_lists_exactly_the_opcodes_without_a_result() {
    let spec = Spec::load();
    let section = spec.section("response: empty").unwrap();
    let prose: String = spec.sections[section]
        .lines
        .iter()
        .map(|(_, l)| l.as_str())
        .take_while(|l| !l.trim_start().starts_with("```"))
        .collect::<Vec<_>>()
        .join(" ");
    // The list is the parenthesis after "without a result shape".
    let list = prose
        .split_once("without a result shape (")
        .and_then(|(_, rest)| rest.split_once(')'))
        .map(|(list, _)| list)
        .expect("`response: empty` lists its opcodes as \"without a result shape (`a`, `b`, ...)\"");
    let listed: BTreeSet<&str> = list.split(',').map(|n| n.trim().trim_matches('`')).collect();
    let want: BTreeSet<&str> = Opcode::ALL
        .iter()
        .filter(|o| o.is_request() && ResponseKind::of(**o, Status::Valid) == ResponseKind::Empty)
        .map(|o| o.name())
        .collect();
    let extra: Vec<&&str> = listed.difference(&want).collect();
    let missing: Vec<&&str> = want.difference(&listed).collect();
    assert!(
        extra.is_empty() && missing.is_empty(),
        "`response: empty` of docs/PROTOCOL.md: listed but answered with a result {extra:?}; \
         answered empty but not listed {missing:?}"
    );
}
