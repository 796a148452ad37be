//! `moziplus bb` without the database: when `MOZI_API` names the daemon's
//! socket (a sandboxed run, `runtime::sandbox`), the command line goes to
//! the daemon's `POST /api/runs/bb` (`api::runs`) with the run's key, and
//! its output and exit code come back. Blocking, no runtime: one request.

use std::ffi::OsString;
use std::io::{Read, Write};
use std::path::Path;

use crate::api::runs::{RunBbAnswer, BB_PATH};

/// Runs `bb` through the daemon when `MOZI_API` is set and the command is
/// `bb`; `None` otherwise (the local path).
pub fn maybe_bb(args: &[OsString]) -> Option<i32> {
    let api = std::env::var("MOZI_API").ok().filter(|s| !s.is_empty())?;
    if args.get(1).map(|a| a.as_os_str()) != Some("bb".as_ref()) {
        return None;
    }
    let rest: Vec<String> = args[2..]
        .iter()
        .map(|a| a.to_string_lossy().into_owned())
        .collect();
    Some(match run(&api, rest) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("moziplus bb: {e}");
            super::output::EXIT_ERROR
        }
    })
}

fn run(api: &str, mut args: Vec<String>) -> Result<i32, String> {
    let stdin = file_as_stdin(&mut args)?;
    let answer = call(api, &args, stdin)?;
    print!("{}", answer.stdout);
    eprint!("{}", answer.stderr);
    let _ = std::io::stdout().flush();
    Ok(answer.code)
}

/// One `bb` command line (the arguments after `bb`) run by the daemon at
/// `api` for this run, which presents `MOZI_RUN_KEY`; `stdin` is what
/// `--file -` reads. Also the path of `moziplus mcp` inside a sandbox
/// (`cli::mcp`).
pub(super) fn call(
    api: &str,
    args: &[String],
    stdin: Option<String>,
) -> Result<RunBbAnswer, String> {
    let key = std::env::var("MOZI_RUN_KEY").map_err(|_| {
        "MOZI_API is set but MOZI_RUN_KEY is not: run this inside an agent run".to_string()
    })?;
    let host = std::env::var("MOZI_GATEWAY")
        .ok()
        .and_then(|g| g.strip_prefix("http://").map(str::to_string))
        .unwrap_or_else(|| "localhost".into());
    let body = serde_json::json!({ "args": args, "stdin": stdin }).to_string();
    post(Path::new(api), &host, &key, &body)
}

/// `--file PATH` is read here, inside the sandbox, and sent as the
/// command's stdin (`--file -`, named after the file unless `--name` is
/// given); `--file -` sends this process's stdin.
fn file_as_stdin(args: &mut Vec<String>) -> Result<Option<String>, String> {
    let Some(i) = args
        .iter()
        .position(|a| a == "--file" || a.starts_with("--file="))
    else {
        return Ok(None);
    };
    let value = match args[i].strip_prefix("--file=") {
        Some(v) => v.to_string(),
        None => args
            .get(i + 1)
            .cloned()
            .ok_or("--file needs a value (a path, or - for stdin)")?,
    };
    let text = if value == "-" {
        let mut s = String::new();
        std::io::stdin()
            .read_to_string(&mut s)
            .map_err(|e| format!("cannot read stdin: {e}"))?;
        s
    } else {
        std::fs::read_to_string(&value).map_err(|e| format!("cannot read --file {value}: {e}"))?
    };
    if args[i].starts_with("--file=") {
        args[i] = "--file=-".into();
    } else {
        args[i + 1] = "-".into();
    }
    let named = args
        .iter()
        .any(|a| a == "--name" || a.starts_with("--name="));
    if value != "-" && !named {
        if let Some(name) = Path::new(&value).file_name() {
            args.extend(["--name".into(), name.to_string_lossy().into_owned()]);
        }
    }
    Ok(Some(text))
}

/// One HTTP/1.1 request over the daemon's socket.
fn post(socket: &Path, host: &str, key: &str, body: &str) -> Result<RunBbAnswer, String> {
    let mut s = std::os::unix::net::UnixStream::connect(socket)
        .map_err(|e| format!("cannot reach the daemon at {}: {e}", socket.display()))?;
    let request = format!(
        "POST {BB_PATH} HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {key}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    s.write_all(request.as_bytes())
        .map_err(|e| format!("cannot send to the daemon: {e}"))?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw)
        .map_err(|e| format!("cannot read the daemon's answer: {e}"))?;
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or("the daemon's answer has no headers")?;
    let head = String::from_utf8_lossy(&raw[..split]).to_string();
    let mut payload = raw[split + 4..].to_vec();
    if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        payload = dechunk(&payload)?;
    }
    let status: u16 = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or("the daemon's answer has no status")?;
    if status != 200 {
        let message = serde_json::from_slice::<serde_json::Value>(&payload)
            .ok()
            .and_then(|v| v["error"]["message"].as_str().map(str::to_string))
            .unwrap_or_else(|| String::from_utf8_lossy(&payload).into_owned());
        return Err(format!("the daemon refused ({status}): {message}"));
    }
    serde_json::from_slice(&payload).map_err(|e| format!("the daemon's answer is not JSON: {e}"))
}

fn dechunk(mut data: &[u8]) -> Result<Vec<u8>, String> {
    let mut out = Vec::new();
    loop {
        let line_end = data
            .windows(2)
            .position(|w| w == b"\r\n")
            .ok_or("a chunk without its size")?;
        let size = usize::from_str_radix(
            String::from_utf8_lossy(&data[..line_end])
                .split(';')
                .next()
                .unwrap_or("")
                .trim(),
            16,
        )
        .map_err(|_| "a chunk size that is not a number")?;
        data = &data[line_end + 2..];
        if size == 0 {
            return Ok(out);
        }
        if data.len() < size {
            return Err("a chunk cut short".into());
        }
        out.extend_from_slice(&data[..size]);
        data = data.get(size + 2..).unwrap_or_default();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_argument_becomes_stdin_named_after_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("notes.md");
        std::fs::write(&f, "hello").unwrap();
        let mut args: Vec<String> = vec![
            "output".into(),
            "--summary".into(),
            "s".into(),
            "--file".into(),
            f.display().to_string(),
        ];
        assert_eq!(file_as_stdin(&mut args).unwrap().as_deref(), Some("hello"));
        assert_eq!(args[4], "-");
        assert_eq!(&args[5..], ["--name", "notes.md"]);
        assert_eq!(dechunk(b"5\r\nhello\r\n0\r\n\r\n").unwrap(), b"hello");
    }
}
