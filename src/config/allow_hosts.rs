//! `sandbox.allow_hosts`: the hosts a sandboxed run may reach through the
//! daemon's proxy (`http::sandbox_proxy`). Parsed once when the
//! configuration loads, so a bad entry is a config error naming the entry,
//! never a surprise at connect time.
//!
//! An entry is `host`, `host:port`, `*.domain` or `*.domain:port` (every
//! name below `domain`, not `domain` itself), or an IP literal with or
//! without a port (`10.0.0.5`, `10.0.0.5:443`, `[fd00::1]:443`). Names are
//! compared without case. Without a port, every port of the host is
//! allowed.

use std::net::IpAddr;

/// One parsed entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostRule {
    /// The entry as written (quoted in logs and refusals).
    pub text: String,
    /// Lower-case name without the `*.`, or an IP literal's text.
    host: String,
    wildcard: bool,
    port: Option<u16>,
    /// The entry is an IP literal (a name resolving to loopback is refused
    /// unless the entry names the address itself or `localhost`).
    pub literal: bool,
}

/// The whole list, in file order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AllowHosts(Vec<HostRule>);

impl AllowHosts {
    /// Parses every entry; the error names the first bad one and the forms
    /// accepted.
    pub fn parse(entries: &[String]) -> Result<AllowHosts, String> {
        entries
            .iter()
            .map(|e| {
                HostRule::parse(e).ok_or_else(|| {
                    format!(
                        "{e:?} is not a host: write `host`, `host:port`, `*.domain[:port]` or an IP address (`10.0.0.5:443`, `[fd00::1]:443`)"
                    )
                })
            })
            .collect::<Result<Vec<_>, _>>()
            .map(AllowHosts)
    }

    /// The first rule that lets a connection to `host:port` through.
    pub fn find(&self, host: &str, port: u16) -> Option<&HostRule> {
        let host = normalize(host);
        self.0.iter().find(|r| r.matches(&host, port))
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The entries as written, for messages.
    pub fn texts(&self) -> Vec<&str> {
        self.0.iter().map(|r| r.text.as_str()).collect()
    }
}

impl HostRule {
    fn parse(entry: &str) -> Option<HostRule> {
        let text = entry.trim();
        let (wildcard, rest) = match text.strip_prefix("*.") {
            Some(r) => (true, r),
            None => (false, text),
        };
        let (host, port) = split_host_port(rest)?;
        let literal = host.parse::<IpAddr>().is_ok();
        if host.is_empty() || (wildcard && literal) || !(literal || valid_name(&host)) {
            return None;
        }
        Some(HostRule {
            text: text.to_string(),
            host: normalize(&host),
            wildcard,
            port,
            literal,
        })
    }

    fn matches(&self, host: &str, port: u16) -> bool {
        if self.port.is_some_and(|p| p != port) {
            return false;
        }
        if self.wildcard {
            host.strip_suffix(self.host.as_str())
                .is_some_and(|head| head.len() > 1 && head.ends_with('.'))
        } else {
            host == self.host
        }
    }

    /// The entry names `localhost` or an address itself: a loopback
    /// answer was asked for.
    pub fn names_loopback(&self) -> bool {
        self.literal || self.host == "localhost"
    }
}

/// `host[:port]` or `[v6][:port]` or a bare IPv6 address; `None` when the
/// port is not a number from 1 to 65535.
pub fn split_host_port(s: &str) -> Option<(String, Option<u16>)> {
    if let Some(rest) = s.strip_prefix('[') {
        let (host, after) = rest.split_once(']')?;
        let port = match after {
            "" => None,
            p => Some(parse_port(p.strip_prefix(':')?)?),
        };
        return Some((host.to_string(), port));
    }
    if s.parse::<std::net::Ipv6Addr>().is_ok() {
        return Some((s.to_string(), None));
    }
    match s.rsplit_once(':') {
        Some((h, p)) => Some((h.to_string(), Some(parse_port(p)?))),
        None => Some((s.to_string(), None)),
    }
}

fn parse_port(p: &str) -> Option<u16> {
    p.parse::<u16>().ok().filter(|p| *p > 0)
}

fn normalize(host: &str) -> String {
    host.trim_end_matches('.').to_ascii_lowercase()
}

fn valid_name(host: &str) -> bool {
    host.len() <= 253
        && host.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
                && !label.starts_with('-')
                && !label.ends_with('-')
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn list(entries: &[&str]) -> AllowHosts {
        AllowHosts::parse(&entries.iter().map(|s| s.to_string()).collect::<Vec<_>>())
            .expect("valid list")
    }

    #[test]
    fn names_ports_wildcards_and_addresses_match_as_documented() {
        let a = list(&[
            "github.com",
            "registry.npmjs.org:443",
            "*.pythonhosted.org",
            "10.0.0.5:8080",
            "[fd00::1]:443",
        ]);
        assert_eq!(
            a.find("GitHub.com", 22).map(|r| r.text.as_str()),
            Some("github.com")
        );
        assert!(
            a.find("api.github.com", 443).is_none(),
            "a name is not its subdomains"
        );
        assert!(a.find("registry.npmjs.org", 443).is_some());
        assert!(
            a.find("registry.npmjs.org", 80).is_none(),
            "the port is part of the rule"
        );
        assert!(a.find("files.pythonhosted.org", 443).is_some());
        assert!(
            a.find("pythonhosted.org", 443).is_none(),
            "*.domain is not domain itself"
        );
        assert!(a.find("evilpythonhosted.org", 443).is_none());
        assert!(a.find("10.0.0.5", 8080).is_some());
        assert!(a.find("10.0.0.5", 8081).is_none());
        assert!(a.find("fd00::1", 443).is_some());
        assert!(a.find("example.com", 443).is_none());
    }

    #[test]
    fn a_bad_entry_is_named_with_the_forms_accepted() {
        for bad in [
            "",
            "host:0",
            "host:99999",
            "*.10.0.0.5",
            "bad host",
            "a..b",
            "[::1",
        ] {
            let e = AllowHosts::parse(&[bad.to_string()]).expect_err(bad);
            assert!(
                e.contains(&format!("{bad:?}")) && e.contains("host:port"),
                "{e}"
            );
        }
    }

    #[test]
    fn loopback_answers_are_only_for_entries_that_ask_for_them() {
        let a = list(&["localhost:3000", "127.0.0.1", "example.com"]);
        assert!(a
            .find("localhost", 3000)
            .is_some_and(HostRule::names_loopback));
        assert!(a.find("127.0.0.1", 9).is_some_and(HostRule::names_loopback));
        assert!(!a
            .find("example.com", 443)
            .is_some_and(HostRule::names_loopback));
    }
}
