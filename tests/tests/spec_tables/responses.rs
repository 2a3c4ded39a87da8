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
        LeaveRoom, Login, Logout, Passphrase, Refresh, RefreshKeyed, Register, RequestMp, RoomHistory, RoomInfo, SendMp, SendRoom,
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
    let refresh = s.refresh_token("a").expect("alice holds the new refresh token");
    let retry_key = Bytes::from_static(&[7; confab_proto::wire::RETRY_KEY_LEN]);
    s.send("a", RefreshKeyed { refresh_token: refresh, retry_key, attempt: 1 });
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
