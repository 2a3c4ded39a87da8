//! The browser client in a real, headless Chromium (WebDriver through
//! `chromedriver`), against the `confab-server` binary, with a `confab`
//! CLI user: two browser users and the CLI user register, share a room,
//! exchange room messages and private messages both ways (browser to
//! browser, browser to CLI), compare safety numbers (equal to the CLI's
//! `safety-number`), reload and keep their sessions, get a message sent
//! while their tab was closed exactly once, and log out (erasing the
//! stored profile but the identity key under the password), are refused a
//! login to an account whose key is elsewhere (the CLI user's), and log in
//! again with the same key; the server's data directory and log hold none
//! of the plaintexts. Screenshots of the main screens go to
//! `target/tmp/browser-screenshots/`.
//!
//! Without Chromium and chromedriver the test says it was skipped; with
//! `CONFAB_REQUIRE_BROWSER=1` (set by .ci/run) it fails instead.

use std::path::{Path, PathBuf};
use std::time::Duration;

use confab_tests::procs::{CliUser, ServerProc, TempDir, contains, read_tree};
use confab_tests::webdriver::{Browser, Driver, find_browser};
use serde_json::{Value, json};

const PASSPHRASE: &str = "correct horse battery staple";
const ROOM_PASSWORD: &str = "room password 1";
/// Key generation, argon2 (the server's login hash, 64 MiB room keys in wasm).
const SLOW: Duration = Duration::from_secs(240);
const QUICK: Duration = Duration::from_secs(30);

fn shots() -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("browser-screenshots");
    std::fs::create_dir_all(&dir).expect("the screenshot directory");
    dir
}

fn visible(id: &str) -> String {
    format!("return !document.getElementById({}).hidden", json!(id))
}

/// A script that is true once a message with exactly `text` is shown.
fn shows_message(text: &str) -> String {
    format!("return [...document.querySelectorAll('#messages li p')].some(p => p.textContent === {})", json!(text))
}

fn count_message(b: &Browser<'_>, text: &str) -> u64 {
    let script = format!(
        "return [...document.querySelectorAll('#messages li p')].filter(p => p.textContent === {}).length",
        json!(text)
    );
    b.eval(&script, &[]).as_u64().unwrap_or(0)
}

fn register(b: &Browser<'_>, web: &str, name: &str) {
    b.goto(web);
    b.wait("the sign-up form", &visible("auth"), QUICK);
    b.type_into("#reg-user", name);
    b.type_into("#reg-pass", &format!("{name}-password-long-enough"));
    b.type_into("#reg-phrase", PASSPHRASE);
    b.click("#reg-submit");
    b.wait(&format!("{name} registered and logged in"), &visible("app"), SLOW);
    assert_eq!(b.text("#me-name"), name);
}

/// The two-step login form (password, then passphrase).
fn log_in(b: &Browser<'_>, name: &str) {
    b.wait("the log-in form", &visible("login-step1"), QUICK);
    b.type_into("#login-user", name);
    b.type_into("#login-pass", &format!("{name}-password-long-enough"));
    b.click("#login-next");
    b.type_into("#login-phrase", PASSPHRASE);
    b.click("#login-submit");
}

fn status_says(text: &str) -> String {
    format!("return document.getElementById('auth-status').textContent.includes({})", json!(text))
}

fn open(b: &Browser<'_>, kind: &str, name: &str) {
    b.wait(
        &format!("{name} in the {kind} list"),
        &format!("return !!document.querySelector('#{kind}-list li[data-name={}]')", json!(name)),
        SLOW,
    );
    b.click(&format!("#{kind}-list li[data-name={}]", json!(name)));
}

fn room_dialog(b: &Browser<'_>, room: &str, action: &str) {
    b.click("#new-room");
    b.type_into("#dialog-room", room);
    b.type_into("#dialog-password", ROOM_PASSWORD);
    b.click(&format!("#dialog-{action}"));
    b.wait(
        &format!("room {room} open"),
        &format!("return document.getElementById('chat-title').textContent === {}", json!(format!("# {room}"))),
        SLOW,
    );
}

fn send(b: &Browser<'_>, text: &str) {
    b.wait("the composer", &visible("composer"), SLOW);
    b.type_into("#compose", text);
    b.click("#composer button");
    b.wait(&format!("{text:?} sent"), "return document.getElementById('compose').value === ''", QUICK);
}

fn request_dm(b: &Browser<'_>, peer: &str) {
    b.click("#new-dm");
    b.type_into("#dialog-peer", peer);
    b.click("#dialog-request");
}

fn accept_dm(b: &Browser<'_>, peer: &str) {
    open(b, "dm", peer);
    b.wait(&format!("{peer}'s request"), "return !!document.getElementById('act-accept')", SLOW);
    b.click("#act-accept");
    b.wait("the conversation ready", &visible("composer"), SLOW);
}

fn safety_number(b: &Browser<'_>) -> String {
    b.click("#act-safety");
    b.wait("the safety number", "return !!document.getElementById('safety-number')", SLOW);
    b.text("#safety-number")
}

fn json_lines(out: &str) -> Vec<Value> {
    out.lines().filter_map(|l| serde_json::from_str(l).ok()).collect()
}

#[test]
fn two_browser_users_and_a_cli_user_chat_end_to_end() {
    let Some((chromium, chromedriver)) = find_browser() else {
        assert!(
            std::env::var("CONFAB_REQUIRE_BROWSER").as_deref() != Ok("1"),
            "CONFAB_REQUIRE_BROWSER=1 but chromium and chromedriver are not installed"
        );
        eprintln!(
            "SKIPPED: the browser test needs chromium and chromedriver (apt-get install chromium chromium-driver)"
        );
        return;
    };
    let dir = TempDir::new("browser");
    let server = ServerProc::start(&dir.path().join("data"), None);
    let web = server.web.clone().expect("a web address");
    let driver = Driver::start(&chromedriver);
    let alice = Browser::open(&driver, &chromium, &dir.path().join("chrome-alice"));
    let bob = Browser::open(&driver, &chromium, &dir.path().join("chrome-bob"));
    let carol = CliUser::new(dir.path(), "carol", &server, "ws");
    let shots = shots();

    alice.goto(&web);
    alice.wait("the sign-up form", &visible("auth"), QUICK);
    assert!(alice.text("#auth").contains("End-to-end encrypted chat"));
    alice.screenshot(&shots.join("01-sign-up.png"));
    register(&alice, &web, "alice");
    register(&bob, &web, "bob");
    let _ = carol.ok(&["register", "carol"]);

    // A room: alice creates it, bob joins in the page, carol with the CLI.
    room_dialog(&alice, "lobby", "create");
    room_dialog(&bob, "lobby", "join");
    assert!(bob.text("#chat-sub").contains("alice"), "members shown: {}", bob.text("#chat-sub"));
    let _ = carol.ok(&["room", "join", "lobby"]);
    let from_alice = "alice in the browser says hello to the lobby";
    let from_bob = "bob in the browser answers the lobby";
    let from_carol = "carol on the command line joins in";
    send(&alice, from_alice);
    bob.wait("alice's room message, live", &shows_message(from_alice), QUICK);
    send(&bob, from_bob);
    alice.wait("bob's room message, live", &shows_message(from_bob), QUICK);
    let _ = carol.ok(&["room", "send", "lobby", from_carol]);
    alice.wait("carol's room message, live", &shows_message(from_carol), QUICK);
    bob.wait("carol's room message, live", &shows_message(from_carol), QUICK);
    // In the server's order, her own message included (it was sent first).
    let order = alice.eval("return [...document.querySelectorAll('#messages li p')].map(p => p.textContent)", &[]);
    assert_eq!(order, json!([from_alice, from_bob, from_carol]), "alice's lobby in order");
    let members = alice.text("#chat-sub");
    assert!(members.contains("bob") && members.contains("carol"), "who wrote since is a member: {members}");
    let history = carol.ok(&["room", "history", "lobby"]);
    for text in [from_alice, from_bob] {
        assert!(json_lines(&history).iter().any(|v| v["text"] == text), "carol reads {text:?}: {history}");
    }
    alice.screenshot(&shots.join("02-room.png"));

    // Browser to browser: alice asks bob, bob accepts, messages both ways.
    request_dm(&alice, "bob");
    accept_dm(&bob, "alice");
    let a_to_b = "a private word for bob, sealed in the page";
    let b_to_a = "bob answers alice privately";
    send(&alice, a_to_b);
    open(&bob, "dm", "alice");
    bob.wait("alice's DM", &shows_message(a_to_b), QUICK);
    assert!(bob.text("#messages").contains("disappears in 60 min"), "the expiry is shown: {}", bob.text("#messages"));
    send(&bob, b_to_a);
    alice.wait("bob's DM", &shows_message(b_to_a), QUICK);
    let ab = safety_number(&alice);
    open(&bob, "dm", "alice");
    let ba = safety_number(&bob);
    assert_eq!(ab, ba, "both browsers show the same safety number");
    assert_eq!(ab.split(' ').count(), 12, "{ab}");
    alice.click("#act-verify");
    alice.wait("verified", "return document.getElementById('chat-sub').textContent.includes('verified')", QUICK);
    alice.screenshot(&shots.join("03-dm-safety-number.png"));

    // Browser and CLI: carol asks alice, alice accepts in the page.
    let _ = carol.ok(&["dm", "request", "alice"]);
    accept_dm(&alice, "carol");
    let c_to_a = "carol from the terminal to alice in the browser";
    let a_to_c = "alice from the browser to carol in the terminal";
    let _ = carol.ok(&["dm", "send", "alice", c_to_a]);
    alice.wait("carol's DM, live", &shows_message(c_to_a), QUICK);
    send(&alice, a_to_c);
    let mut read = String::new();
    for _ in 0..50 {
        read = carol.ok(&["dm", "read", "alice"]);
        if read.contains(a_to_c) {
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(json_lines(&read).iter().any(|v| v["text"] == a_to_c), "carol reads alice's DM: {read}");
    let cli = json_lines(&carol.ok(&["safety-number", "alice"]));
    let digits = cli.iter().find_map(|v| v["safety_number"].as_str().map(str::to_owned)).expect("carol's number");
    assert_eq!(safety_number(&alice).replace(' ', ""), digits, "the page's number is the CLI's");

    // Reload: still logged in, the conversation and its messages still there.
    bob.refresh();
    bob.wait("bob's session after a reload", &visible("app"), SLOW);
    assert_eq!(bob.text("#me-name"), "bob");
    open(&bob, "dm", "alice");
    bob.wait("the DM after the reload", &shows_message(a_to_b), QUICK);

    // Bob's tab closes; alice writes; bob's page opens again: exactly once.
    bob.goto("about:blank");
    let while_closed = "written while bob's tab was closed";
    open(&alice, "dm", "bob");
    send(&alice, while_closed);
    std::thread::sleep(Duration::from_secs(1));
    bob.goto(&web);
    bob.wait("bob's session in the reopened tab", &visible("app"), SLOW);
    // Delivered live into a conversation that is not open: an unread count.
    bob.wait(
        "an unread count on alice's conversation",
        "const b = document.querySelector('#dm-list li[data-name=\"alice\"] .badge'); return !!b && b.textContent === '1'",
        SLOW,
    );
    open(&bob, "dm", "alice");
    assert_eq!(
        bob.eval("return document.querySelectorAll('#dm-list li[data-name=\"alice\"] .badge').length", &[]),
        json!(0),
        "read once opened"
    );
    bob.wait("the message sent while the tab was closed", &shows_message(while_closed), SLOW);
    assert_eq!(count_message(&bob, while_closed), 1, "exactly once");
    bob.refresh();
    bob.wait("bob after another reload", &visible("app"), SLOW);
    open(&bob, "dm", "alice");
    bob.wait("still there", &shows_message(while_closed), QUICK);
    assert_eq!(count_message(&bob, while_closed), 1, "still exactly once");
    bob.screenshot(&shots.join("04-dm-after-reload.png"));

    // A second tab of bob's browser does not run a second copy of his profile.
    let first = bob.new_tab();
    bob.goto(&web);
    bob.wait("the second tab refused", &status_says("confab is already open in another tab of this browser"), QUICK);
    assert_eq!(bob.eval(&visible("app"), &[]), json!(false), "the second tab shows no conversations");
    bob.close_tab();
    bob.switch_to(&first);

    // Nothing secret in localStorage; logout erases the stored profile and
    // keeps only the key record (the identity key under the password).
    assert_eq!(bob.eval("return localStorage.length", &[]), json!(0));
    bob.click("#logout");
    bob.wait("the log-in form after logout", &visible("auth"), SLOW);
    bob.wait("bob named as logged out", &status_says("bob is logged out on this browser"), SLOW);
    bob.screenshot(&shots.join("05-logged-out.png"));
    // Carol's account was registered on the command line: its identity key
    // is not in this browser, so the page refuses before sending anything.
    log_in(&bob, "carol");
    bob.wait("carol refused in bob's browser", &status_says("holds no identity key for carol"), QUICK);
    assert!(bob.eval(&visible("auth"), &[]) == json!(true), "still on the log-in form");
    // Bob logs in again with his password: his key comes back, his contacts
    // verify it (carol's handshake checks it against the key bob registered).
    log_in(&bob, "bob");
    bob.wait("bob logged in again", &visible("app"), SLOW);
    assert_eq!(bob.text("#me-name"), "bob");
    let _ = carol.ok(&["dm", "request", "bob"]);
    accept_dm(&bob, "carol");
    let c_to_b = "carol to bob after his logout and login";
    let _ = carol.ok(&["dm", "send", "bob", c_to_b]);
    bob.wait("carol's DM to the logged-in-again bob", &shows_message(c_to_b), SLOW);

    // A reload right after a logout (before or after the server's answer:
    // the "leaving" mark makes a reload finish it): only the key record stays.
    bob.click("#logout");
    std::thread::sleep(Duration::from_millis(300));
    bob.refresh();
    bob.wait("bob logged out after the reload", &status_says("bob is logged out on this browser"), SLOW);
    let left = bob.eval_async(
        "const done = arguments[arguments.length - 1];
         const r = indexedDB.open('confab');
         r.onsuccess = () => {
           const kv = r.result.transaction('kv').objectStore('kv');
           const g = kv.getAllKeys();
           g.onsuccess = () => done(g.result.sort());
         };
         r.onerror = () => done('error');",
    );
    assert_eq!(
        left,
        json!(["last", "record:bob", "wrap-key"]),
        "after logout only the key record, its wrapping key and the name to offer"
    );

    // The server saw none of the plaintexts.
    let plaintexts = [from_alice, from_bob, from_carol, a_to_b, b_to_a, c_to_a, a_to_c, while_closed, c_to_b];
    let log = server.log();
    for p in plaintexts {
        assert!(!log.contains(p), "the server log contains {p:?}");
        for (path, bytes) in read_tree(&server.data) {
            assert!(!contains(&bytes, p.as_bytes()), "{} contains {p:?}", path.display());
        }
    }
}
