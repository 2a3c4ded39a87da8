//! A small WebDriver (W3C) client over `std::net`, enough for the browser
//! test: one `chromedriver` per browser, sessions, navigation, elements,
//! script, screenshots. WebDriver is JSON over HTTP/1.1 on loopback; this
//! keeps the test free of an async runtime and of the HTTP and TLS stacks
//! a WebDriver crate would add to the dependency graph.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine as _;
use serde_json::{Value, json};

use crate::procs::free_port;

/// The W3C element reference key.
const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

/// Where Chromium and its driver are, if they are installed.
#[must_use]
pub fn find_browser() -> Option<(PathBuf, PathBuf)> {
    let find = |names: &[&str]| {
        names.iter().map(PathBuf::from).find(|p| p.is_file()).or_else(|| {
            let path = std::env::var_os("PATH")?;
            std::env::split_paths(&path).flat_map(|d| names.iter().map(move |n| d.join(n))).find(|p| p.is_file())
        })
    };
    let browser = find(&["/usr/bin/chromium", "chromium", "chromium-browser", "google-chrome"])?;
    let driver = find(&["/usr/bin/chromedriver", "chromedriver"])?;
    Some((browser, driver))
}

/// A running `chromedriver`, stopped on drop.
pub struct Driver {
    child: Child,
    port: u16,
}

impl Driver {
    /// Starts `driver` on a free loopback port and waits until it is ready.
    ///
    /// # Panics
    /// It does not start within 20 s.
    #[must_use]
    pub fn start(driver: &Path) -> Driver {
        let port = free_port();
        let child = Command::new(driver)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start chromedriver");
        let d = Driver { child, port };
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(v) = d.call("GET", "/status", None)
                && v["value"]["ready"] == true
            {
                return d;
            }
            assert!(Instant::now() < deadline, "chromedriver did not become ready");
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// One WebDriver command; the answer's JSON, or its error message.
    fn call(&self, method: &str, path: &str, body: Option<&Value>) -> Result<Value, String> {
        let mut s = TcpStream::connect(("127.0.0.1", self.port)).map_err(|e| e.to_string())?;
        s.set_read_timeout(Some(Duration::from_secs(120))).map_err(|e| e.to_string())?;
        let body = body.map(Value::to_string).unwrap_or_default();
        write!(
            s,
            "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nContent-Type: application/json\r\n\
             Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
            self.port,
            body.len()
        )
        .map_err(|e| e.to_string())?;
        let mut r = BufReader::new(s);
        let mut status = String::new();
        r.read_line(&mut status).map_err(|e| e.to_string())?;
        let (mut chunked, mut length) = (false, None);
        loop {
            let mut line = String::new();
            r.read_line(&mut line).map_err(|e| e.to_string())?;
            let line = line.trim_end();
            if line.is_empty() {
                break;
            }
            let lower = line.to_ascii_lowercase();
            if lower.starts_with("transfer-encoding:") && lower.contains("chunked") {
                chunked = true;
            } else if let Some(n) = lower.strip_prefix("content-length:") {
                length = n.trim().parse::<usize>().ok();
            }
        }
        let mut data = Vec::new();
        if chunked {
            loop {
                let mut size = String::new();
                r.read_line(&mut size).map_err(|e| e.to_string())?;
                let n = usize::from_str_radix(size.trim(), 16).map_err(|e| e.to_string())?;
                if n == 0 {
                    break;
                }
                let mut chunk = vec![0; n + 2];
                r.read_exact(&mut chunk).map_err(|e| e.to_string())?;
                data.extend_from_slice(&chunk[..n]);
            }
        } else if let Some(n) = length {
            data.resize(n, 0);
            r.read_exact(&mut data).map_err(|e| e.to_string())?;
        } else {
            r.read_to_end(&mut data).map_err(|e| e.to_string())?;
        }
        let v: Value = serde_json::from_slice(&data).map_err(|e| format!("{e}: {}", String::from_utf8_lossy(&data)))?;
        if status.split(' ').nth(1).is_some_and(|c| c.starts_with('2')) {
            Ok(v)
        } else {
            Err(format!("{} {}", v["value"]["error"], v["value"]["message"]))
        }
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One browser (its own profile directory, so its own IndexedDB).
pub struct Browser<'d> {
    driver: &'d Driver,
    id: String,
}

impl<'d> Browser<'d> {
    /// A headless Chromium at 1280x800 with `profile` as its user data directory.
    ///
    /// # Panics
    /// The session cannot be made.
    #[must_use]
    pub fn open(driver: &'d Driver, binary: &Path, profile: &Path) -> Browser<'d> {
        let caps = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": binary,
                "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                         "--window-size=1280,800", format!("--user-data-dir={}", profile.display())],
            },
        }}});
        let v = driver.call("POST", "/session", Some(&caps)).expect("a WebDriver session");
        let id = v["value"]["sessionId"].as_str().expect("a session id").to_owned();
        Browser { driver, id }
    }

    fn cmd(&self, method: &str, path: &str, body: Option<Value>) -> Value {
        let path = format!("/session/{}{path}", self.id);
        match self.driver.call(method, &path, body.as_ref()) {
            Ok(v) => v["value"].clone(),
            Err(e) => panic!("WebDriver {method} {path}: {e}"),
        }
    }

    /// Opens `url`.
    pub fn goto(&self, url: &str) {
        let _ = self.cmd("POST", "/url", Some(json!({"url": url})));
    }

    /// Reloads the page.
    pub fn refresh(&self) {
        let _ = self.cmd("POST", "/refresh", Some(json!({})));
    }

    /// Opens a new tab of the same browser and switches to it; returns the
    /// handle of the tab that was current, for [`switch_to`](Self::switch_to).
    pub fn new_tab(&self) -> String {
        let current = self.cmd("GET", "/window", None).as_str().unwrap_or_default().to_owned();
        let made = self.cmd("POST", "/window/new", Some(json!({"type": "tab"})));
        let handle = made["handle"].as_str().unwrap_or_else(|| panic!("no new tab: {made}")).to_owned();
        self.switch_to(&handle);
        current
    }

    /// Switches to the tab `handle`.
    pub fn switch_to(&self, handle: &str) {
        let _ = self.cmd("POST", "/window", Some(json!({"handle": handle})));
    }

    /// Closes the current tab (then [`switch_to`](Self::switch_to) another).
    pub fn close_tab(&self) {
        let _ = self.cmd("DELETE", "/window", None);
    }

    /// Runs `script` (a function body; `arguments` are `args`) and returns its value.
    pub fn eval(&self, script: &str, args: &[Value]) -> Value {
        self.cmd("POST", "/execute/sync", Some(json!({"script": script, "args": args})))
    }

    /// Runs `script` asynchronously: it calls `arguments[arguments.length - 1]`
    /// with its result.
    pub fn eval_async(&self, script: &str) -> Value {
        self.cmd("POST", "/execute/async", Some(json!({"script": script, "args": []})))
    }

    /// The element `css` selects (the first).
    fn find(&self, css: &str) -> String {
        let v = self.cmd("POST", "/element", Some(json!({"using": "css selector", "value": css})));
        v[ELEMENT].as_str().unwrap_or_else(|| panic!("no element {css}: {v}")).to_owned()
    }

    /// Clicks the element `css` selects (found again if the page replaced
    /// it between the find and the click).
    pub fn click(&self, css: &str) {
        for _ in 0..20 {
            let el = self.find(css);
            let path = format!("/session/{}/element/{el}/click", self.id);
            match self.driver.call("POST", &path, Some(&json!({}))) {
                Ok(_) => return,
                Err(e) if e.contains("stale element") => std::thread::sleep(Duration::from_millis(50)),
                Err(e) => panic!("WebDriver click {css}: {e}"),
            }
        }
        panic!("{css} kept going stale");
    }

    /// Types `text` into the element `css` selects (after clearing it).
    pub fn type_into(&self, css: &str, text: &str) {
        let el = self.find(css);
        let _ = self.cmd("POST", &format!("/element/{el}/clear"), Some(json!({})));
        let _ = self.cmd("POST", &format!("/element/{el}/value"), Some(json!({"text": text})));
    }

    /// The visible text of the element `css` selects.
    #[must_use]
    pub fn text(&self, css: &str) -> String {
        let el = self.find(css);
        self.cmd("GET", &format!("/element/{el}/text"), None).as_str().unwrap_or_default().to_owned()
    }

    /// Waits until `script` (a function body) returns `true`.
    ///
    /// # Panics
    /// It does not within `timeout`; the message says `what`.
    pub fn wait(&self, what: &str, script: &str, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        loop {
            if self.eval(script, &[]) == Value::Bool(true) {
                return;
            }
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Saves a PNG screenshot of the window to `path`.
    pub fn screenshot(&self, path: &Path) {
        let v = self.cmd("GET", "/screenshot", None);
        let png = base64::engine::general_purpose::STANDARD.decode(v.as_str().unwrap_or_default()).expect("base64");
        std::fs::write(path, png).expect("write the screenshot");
    }
}

impl Drop for Browser<'_> {
    fn drop(&mut self) {
        let _ = self.driver.call("DELETE", &format!("/session/{}", self.id), None);
    }
}
