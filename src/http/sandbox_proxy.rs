//! The sandbox's one way out to other hosts: an HTTP `CONNECT` proxy on the
//! socket of sandboxed runs ([`super::sandbox_router`]), reached inside the
//! sandbox at the daemon's own address through `moziplus sandbox-init`.
//!
//! A sandboxed run gets `HTTPS_PROXY=http://run:$MOZI_RUN_KEY@<server.bind>`
//! (`runtime::sandbox::proxy_env`). Each `CONNECT host:port`:
//!
//! 1. must present a run's key in `Proxy-Authorization` (Basic, the key as
//!    the password, or Bearer): only a run in flight may go out, and every
//!    line below is written in that run's log;
//! 2. must match `sandbox.allow_hosts` (`config::allow_hosts`); a name that
//!    resolves to a loopback or unspecified address is refused unless the
//!    entry names `localhost` or the address itself, so a listed name cannot
//!    be pointed at the daemon's machine;
//! 3. is then connected (10 s) and tunnelled byte for byte.
//!
//! Every refusal is a 403 (407 without a key) whose text names the host and
//! the rule, and a `[mozi:sandbox] refused …` line in the run's log; every
//! tunnel opened is a `[mozi:sandbox] connected …` line. A plain-HTTP proxy
//! request (`GET http://…`) is refused the same way: the proxy carries
//! `CONNECT` (https, or any TCP protocol a client tunnels) only.

use std::net::SocketAddr;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::config::allow_hosts::{split_host_port, AllowHosts};
use crate::daemon::Daemon;

/// How long the proxy waits for the allowed host to accept.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// The middleware in front of the sandbox socket's routes: `CONNECT` and
/// absolute-form requests are the proxy's; everything else goes on.
pub async fn proxy(State(d): State<Daemon>, req: Request, next: Next) -> Response {
    let absolute = req.uri().scheme().is_some();
    if req.method() != Method::CONNECT && !absolute {
        return next.run(req).await;
    }
    let Some(run) = proxy_key(req.headers()).and_then(|k| d.run_key(&k)) else {
        return refuse(
            StatusCode::PROXY_AUTHENTICATION_REQUIRED,
            "the sandbox's proxy needs the run's key: use HTTPS_PROXY as the run was given it (http://run:$MOZI_RUN_KEY@…)".into(),
        );
    };
    let session = run.session_id.clone();
    let target = req
        .uri()
        .authority()
        .map(|a| a.as_str().to_string())
        .unwrap_or_default();
    if req.method() != Method::CONNECT {
        let why = format!(
            "refused {} {}: the sandbox's proxy carries CONNECT (https) only; use https://",
            req.method(),
            req.uri()
        );
        note(&d, &session, &why).await;
        return refuse(StatusCode::FORBIDDEN, why);
    }
    let Some((host, Some(port))) = split_host_port(&target) else {
        let why = format!("refused CONNECT {target:?}: not a host:port");
        note(&d, &session, &why).await;
        return refuse(StatusCode::BAD_REQUEST, why);
    };
    let rules = AllowHosts::parse(&d.config().sandbox.allow_hosts).unwrap_or_default();
    let Some(rule) = rules.find(&host, port).cloned() else {
        let listed = if rules.is_empty() {
            "sandbox.allow_hosts is empty".to_string()
        } else {
            format!("sandbox.allow_hosts lists {}", rules.texts().join(", "))
        };
        let why = format!(
            "refused connection to {target}: not in sandbox.allow_hosts ({listed}); add it there to allow it"
        );
        note(&d, &session, &why).await;
        return refuse(StatusCode::FORBIDDEN, why);
    };
    let stream = match open(&host, port, rule.names_loopback()).await {
        Ok(s) => s,
        Err(e) => {
            let why = format!(
                "refused connection to {target} (allowed by {:?}): {e}",
                rule.text
            );
            note(&d, &session, &why).await;
            return refuse(StatusCode::BAD_GATEWAY, why);
        }
    };
    let peer = stream
        .peer_addr()
        .map(|a| a.to_string())
        .unwrap_or_default();
    note(
        &d,
        &session,
        &format!("connected to {target} ({peer}), allowed by {:?}", rule.text),
    )
    .await;
    tokio::spawn(async move {
        let mut stream = stream;
        match hyper::upgrade::on(req).await {
            Ok(upgraded) => {
                let mut client = hyper_util::rt::TokioIo::new(upgraded);
                let _ = tokio::io::copy_bidirectional(&mut client, &mut stream).await;
            }
            Err(e) => tracing::debug!(error = %e, target, "sandbox proxy: no upgrade"),
        }
    });
    Response::new(Body::empty())
}

/// Resolves and connects; a loopback or unspecified answer only when the
/// rule asked for one.
async fn open(host: &str, port: u16, loopback_ok: bool) -> Result<tokio::net::TcpStream, String> {
    let addrs: Vec<SocketAddr> = tokio::net::lookup_host((host, port))
        .await
        .map_err(|e| format!("cannot resolve {host}: {e}"))?
        .collect();
    let usable: Vec<SocketAddr> = addrs
        .iter()
        .copied()
        .filter(|a| loopback_ok || !(a.ip().is_loopback() || a.ip().is_unspecified()))
        .collect();
    if usable.is_empty() {
        return Err(format!(
            "{host} resolves to {} only; list the address itself or `localhost` to allow this machine",
            addrs
                .iter()
                .map(|a| a.ip().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        ));
    }
    match tokio::time::timeout(CONNECT_TIMEOUT, tokio::net::TcpStream::connect(&usable[..])).await {
        Ok(Ok(s)) => Ok(s),
        Ok(Err(e)) => Err(format!("cannot connect: {e}")),
        Err(_) => Err(format!("no answer within {} s", CONNECT_TIMEOUT.as_secs())),
    }
}

/// The run key a client presents: `Proxy-Authorization: Basic` with the
/// key as the password (what `HTTPS_PROXY=http://run:KEY@…` sends), or
/// `Bearer KEY`.
fn proxy_key(headers: &HeaderMap) -> Option<String> {
    use base64::Engine;
    let value = headers
        .get(header::PROXY_AUTHORIZATION)?
        .to_str()
        .ok()?
        .trim();
    let (scheme, rest) = value.split_once(' ')?;
    if scheme.eq_ignore_ascii_case("bearer") {
        return Some(rest.trim().to_string());
    }
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(rest.trim())
        .ok()?;
    let text = String::from_utf8(decoded).ok()?;
    let (_, password) = text.split_once(':')?;
    // Percent-encoding is kept by some clients; a run key never has a `%`.
    Some(password.to_string())
}

/// Writes one line in the run's log (the transcript the dashboard and
/// `moziplus logs` show) and the daemon's log.
async fn note(d: &Daemon, session: &str, line: &str) {
    tracing::info!(session, "sandbox proxy: {line}");
    let path = d.runs_lock().get(session).map(|r| r.log_path.clone());
    let Some(path) = path else { return };
    let text = format!("[mozi:sandbox] {line}\n");
    let written = async {
        use tokio::io::AsyncWriteExt;
        let mut f = tokio::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .await?;
        f.write_all(text.as_bytes()).await
    };
    if let Err(e) = written.await {
        tracing::warn!(session, error = %e, "sandbox proxy: cannot write the run's log");
    }
}

fn refuse(status: StatusCode, why: String) -> Response {
    let mut r = (status, format!("moziplus sandbox proxy: {why}\n")).into_response();
    if status == StatusCode::PROXY_AUTHENTICATION_REQUIRED {
        r.headers_mut().insert(
            header::PROXY_AUTHENTICATE,
            header::HeaderValue::from_static("Basic realm=\"moziplus\""),
        );
    }
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_key_is_read_from_basic_and_bearer() {
        use base64::Engine;
        let mut h = HeaderMap::new();
        let basic = base64::engine::general_purpose::STANDARD.encode("run:mozi-abc");
        h.insert(
            header::PROXY_AUTHORIZATION,
            format!("Basic {basic}").parse().unwrap(),
        );
        assert_eq!(proxy_key(&h).as_deref(), Some("mozi-abc"));
        h.insert(
            header::PROXY_AUTHORIZATION,
            "Bearer mozi-xyz".parse().unwrap(),
        );
        assert_eq!(proxy_key(&h).as_deref(), Some("mozi-xyz"));
        h.insert(header::PROXY_AUTHORIZATION, "Digest x".parse().unwrap());
        assert_eq!(proxy_key(&h), None);
    }
}
