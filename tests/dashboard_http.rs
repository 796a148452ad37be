//! How the daemon serves the embedded dashboard over HTTP: the page for `/`
//! and the app's own routes, content types, cache headers, gzip, and JSON 404s
//! kept for the machine interfaces.

mod support;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use support::*;

/// A raw request with extra headers → (status, lowercase headers, body bytes).
fn request(port: u16, path: &str, headers: &str) -> (u16, String, Vec<u8>) {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n{headers}Connection: close\r\n\r\n"
    )
    .unwrap();
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).unwrap();
    let split = buf
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("header end");
    let head = String::from_utf8_lossy(&buf[..split]).to_ascii_lowercase();
    let code = head.split_whitespace().nth(1).unwrap().parse().unwrap();
    (code, head, buf[split + 4..].to_vec())
}

fn header<'a>(head: &'a str, name: &str) -> Option<&'a str> {
    head.lines()
        .find_map(|l| l.strip_prefix(&format!("{name}: ")))
        .map(str::trim)
}

#[test]
fn page_assets_and_api_404s() {
    let home = TestHome::with_config("", "");
    let d = Daemon::start(&home);

    // The page, for `/` and for an app route (a reload on /projects/x).
    for path in ["/", "/projects/demo/tasks/T-0001", "/gateway"] {
        let (code, head, body) = request(d.port, path, "");
        assert_eq!(code, 200, "{path}");
        assert_eq!(
            header(&head, "content-type"),
            Some("text/html; charset=utf-8"),
            "{path}"
        );
        assert_eq!(header(&head, "cache-control"), Some("no-cache"), "{path}");
        let text = String::from_utf8_lossy(&body);
        assert!(text.contains("<html"), "{path}: {text}");
    }

    // Machine interfaces keep their JSON 404.
    for path in [
        "/api/nope",
        "/v1/nope",
        "/health/nope",
        "/metrics/x",
        "/api",
    ] {
        let (code, head, body) = request(d.port, path, "");
        assert_eq!(code, 404, "{path}");
        assert!(
            header(&head, "content-type").is_some_and(|c| c.starts_with("application/json")),
            "{path}: {head}"
        );
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        let kind = v["error"]["type"].as_str().unwrap_or_default();
        assert!(kind.starts_with("not_found"), "{path}: {v}");
    }

    if !moziplus::dashboard::is_built() {
        let (_, _, body) = request(d.port, "/", "");
        let text = String::from_utf8_lossy(&body);
        assert!(
            text.contains("npm ci && npm run build")
                || text.contains("npm ci &amp;&amp; npm run build")
        );
        eprintln!(
            "the dashboard bundle is not embedded (no Node at build time): asset checks skipped"
        );
        return;
    }

    // Hashed bundle files: a year of cache, gzip when accepted.
    let (_, _, page) = request(d.port, "/", "");
    let page = String::from_utf8_lossy(&page).to_string();
    let script = page
        .split("src=\"")
        .nth(1)
        .and_then(|s| s.split('"').next())
        .expect("a script tag")
        .to_string();
    assert!(script.starts_with("/assets/"), "{script}");
    let (code, head, plain) = request(d.port, &script, "");
    assert_eq!(code, 200);
    assert_eq!(
        header(&head, "content-type"),
        Some("text/javascript; charset=utf-8")
    );
    assert!(header(&head, "cache-control").is_some_and(|c| c.contains("immutable")));
    assert!(header(&head, "content-encoding").is_none());
    let (code, head, gz) = request(d.port, &script, "Accept-Encoding: gzip, br\r\n");
    assert_eq!(code, 200);
    assert_eq!(header(&head, "content-encoding"), Some("gzip"));
    assert_eq!(header(&head, "vary"), Some("accept-encoding"));
    assert!(gz.starts_with(&[0x1f, 0x8b]), "gzip magic");
    assert!(
        gz.len() < plain.len() / 2,
        "{} vs {}",
        gz.len(),
        plain.len()
    );

    // A missing bundle file is a 404, never the page.
    let (code, _, _) = request(d.port, "/assets/gone-123.js", "");
    assert_eq!(code, 404);
}
