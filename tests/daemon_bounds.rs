//! Issue 23 ("the second adversarial pass"): the bounds a real
//! `moziplus serve` now holds against a client or an agent of the same user
//! — secrets, body read time, CPU and memory per request. Each test failed
//! on the code before its fix.

mod support;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use support::*;

/// A raw HTTP/1.1 request with extra header lines → (status, body).
fn request(port: u16, method: &str, path: &str, headers: &str, body: &[u8]) -> (u16, String) {
    let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: {}\r\n{headers}Connection: close\r\n\r\n",
        body.len()
    )
    .unwrap();
    s.write_all(body).unwrap();
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).ok();
    let (code, _, body) = parse_response(&String::from_utf8_lossy(&buf));
    (code, body)
}

/// Finding 12: a same-user agent read the daemon's `/proc/<pid>/environ`
/// (`NVIDIA_API_KEY`, `MOZI_SERVER__API_TOKEN`, …), and
/// `/api/gateway/status` showed the key's first and last 4 characters.
#[test]
fn the_daemon_keeps_no_secret_in_its_environment_or_on_its_status_pages() {
    let home = TestHome::new();
    let key = "nvapi-SECRETKEY-0123456789";
    let token = "tok-SECRETTOKEN-abcdef";
    let d = Daemon::start_env(
        &home,
        &[
            ("NVIDIA_API_KEY", key),
            ("MOZI_SERVER__API_TOKEN", token),
            ("MOZI_TEST_VISIBLE", "plain-marker"),
        ],
    );
    let environ = std::fs::read(format!("/proc/{}/environ", d.pid())).expect("read environ");
    let environ = String::from_utf8_lossy(&environ);
    // Positive control: the probe reads the daemon's start environment.
    assert!(
        environ.contains("MOZI_TEST_VISIBLE=plain-marker"),
        "the probe sees the daemon's variables"
    );
    assert!(
        !environ.contains("SECRETKEY") && !environ.contains("SECRETTOKEN"),
        "a secret is readable in /proc/{}/environ",
        d.pid()
    );

    // The withdrawn token still guards the API, and still opens it.
    let (code, _) = request(d.port, "POST", "/api/daemon/tick", "", b"");
    assert_eq!(code, 401, "a write without the token is refused");
    let auth = format!("Authorization: Bearer {token}\r\n");
    let (code, body) = request(d.port, "POST", "/api/daemon/tick", &auth, b"");
    assert_eq!(code, 200, "the token read at start still works: {body}");

    let (code, body) = request(d.port, "GET", "/api/gateway/status", &auth, b"");
    assert_eq!(code, 200, "{body}");
    assert!(
        !body.contains("nvap") && !body.contains("6789"),
        "key characters shown: {body}"
    );
    let status: serde_json::Value = serde_json::from_str(&body).unwrap();
    let nvidia = status["providers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["api_key_env"] == "NVIDIA_API_KEY")
        .expect("the NVIDIA provider");
    assert_eq!(nvidia["api_key"], "****", "set, without its characters");
}
