//! The browser client's files, embedded in the server binary and served on
//! the WebSocket listener (its "web address", `http://ADDR/` or
//! `https://ADDR/`): the page (`index.html`, `app.js`, `store.js`,
//! `ui.js`, `style.css`) and the wasm-bindgen bundle of `confab-web` (`pkg/`).
//!
//! The bundle is committed (client/web/static/pkg/), so building the
//! server needs no wasm toolchain; `client/web/build.sh` rebuilds it from
//! source, and CI rebuilds it before the browser test runs against it.

use confab_transports::ws::{Site, SiteFile};

macro_rules! file {
    ($path:literal, $type:literal) => {
        SiteFile {
            path: concat!("/", $path),
            content_type: $type,
            body: include_bytes!(concat!(env!("CARGO_MANIFEST_DIR"), "/../client/web/static/", $path)),
        }
    };
}

/// The embedded browser client.
#[must_use]
pub fn site() -> Site {
    Site {
        files: vec![
            file!("index.html", "text/html; charset=utf-8"),
            file!("app.js", "text/javascript; charset=utf-8"),
            file!("store.js", "text/javascript; charset=utf-8"),
            file!("ui.js", "text/javascript; charset=utf-8"),
            file!("style.css", "text/css; charset=utf-8"),
            file!("pkg/confab_web.js", "text/javascript; charset=utf-8"),
            file!("pkg/confab_web_bg.wasm", "application/wasm"),
        ],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_page_and_the_bundle_are_embedded() {
        let site = site();
        let get = |p: &str| site.files.iter().find(|f| f.path == p).unwrap_or_else(|| panic!("{p} embedded"));
        assert!(get("/index.html").body.starts_with(b"<!doctype html>"));
        assert!(get("/pkg/confab_web_bg.wasm").body.starts_with(b"\0asm"), "a WebAssembly module");
        let js = String::from_utf8_lossy(get("/pkg/confab_web.js").body);
        assert!(js.contains("class WebClient"), "the bindings of confab-web");
        // No inline script: the policy forbids it, so the page must not need it.
        let html = String::from_utf8_lossy(get("/index.html").body);
        assert_eq!(html.matches("<script").count(), html.matches("<script type=\"module\" src=").count());
        assert!(!html.contains(" on") || !html.contains("onclick="), "no inline handlers");
    }
}
