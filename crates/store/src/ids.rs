//! Identifier rules. Ids become paths and command-line arguments, so they are
//! validated at every boundary before they are used.

/// Project ids: `^[a-z0-9][a-z0-9_-]{0,63}$`.
pub fn is_valid_project_id(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.len() <= 64
        && (b[0].is_ascii_lowercase() || b[0].is_ascii_digit())
        && b[1..]
            .iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'_' || *c == b'-')
}

/// Agent ids: like project ids but case-insensitive letters and dots are fine
/// (`openclaw.zhuge`), never slashes or `..`.
pub fn is_valid_agent_id(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.len() <= 64
        && b[0].is_ascii_alphanumeric()
        && !s.contains("..")
        && b.iter()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'_' | b'-' | b'.'))
}

/// Task ids: `T-` followed by at least four digits (`T-0042`, `T-12345`).
pub fn is_valid_task_id(s: &str) -> bool {
    parse_task_seq(s).is_some()
}

/// The number inside a task id.
pub fn parse_task_seq(s: &str) -> Option<i64> {
    let digits = s.strip_prefix("T-")?;
    if digits.len() < 4 || digits.len() > 12 || !digits.bytes().all(|c| c.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// Formats a task number as an id (`42` → `T-0042`).
pub fn format_task_id(seq: i64) -> String {
    format!("T-{seq:04}")
}

/// How a decision is named wherever one is shown: `D7` (the CLI, the
/// service's messages, the gateway's `requires_approval`, the dashboard).
pub fn format_decision_id(id: i64) -> String {
    format!("D{id}")
}

/// The number of a decision named in any form people have seen: `7`, `D7`,
/// `d7`, `D-7`, `#7`. `None` for anything else.
pub fn parse_decision_id(s: &str) -> Option<i64> {
    let s = s.trim();
    let digits = s
        .strip_prefix("D-")
        .or_else(|| s.strip_prefix("d-"))
        .or_else(|| s.strip_prefix('D'))
        .or_else(|| s.strip_prefix('d'))
        .or_else(|| s.strip_prefix('#'))
        .unwrap_or(s);
    if digits.is_empty() || digits.len() > 18 || !digits.bytes().all(|c| c.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok().filter(|n| *n > 0)
}

/// Tags: short lowercase words (`rust`, `data-validation`).
pub fn is_valid_tag(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.bytes().all(|c| {
            c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, b'_' | b'-' | b'.' | b':')
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decision_ids_in_every_form() {
        for s in ["7", "D7", "d7", "D-7", "d-7", "#7", " D7 "] {
            assert_eq!(parse_decision_id(s), Some(7), "{s}");
        }
        for s in [
            "", "D", "D-", "#", "x7", "D7x", "T-0007", "0", "D0", "-7", "D--7",
        ] {
            assert_eq!(parse_decision_id(s), None, "{s}");
        }
        assert_eq!(format_decision_id(7), "D7");
        assert_eq!(parse_decision_id(&format_decision_id(123)), Some(123));
    }

    #[test]
    fn project_ids() {
        for ok in ["a", "demo", "quant_live-2", "0abc", &"a".repeat(64)] {
            assert!(is_valid_project_id(ok), "{ok}");
        }
        for bad in [
            "",
            "-a",
            "_a",
            "A",
            "a.b",
            "a/b",
            "..",
            "../x",
            "a b",
            "é",
            &"a".repeat(65),
            "a\0",
        ] {
            assert!(!is_valid_project_id(bad), "{bad:?}");
        }
    }

    #[test]
    fn agent_ids() {
        assert!(is_valid_agent_id("zhuge.liang-2"));
        for bad in ["", ".a", "a/b", "a..b", "a b", &"x".repeat(65)] {
            assert!(!is_valid_agent_id(bad), "{bad:?}");
        }
    }

    #[test]
    fn task_ids() {
        assert_eq!(parse_task_seq("T-0042"), Some(42));
        assert_eq!(parse_task_seq("T-12345"), Some(12345));
        for bad in ["T-42", "t-0042", "T-00a1", "0042", "T-", "T-0042/..", ""] {
            assert!(!is_valid_task_id(bad), "{bad:?}");
        }
        assert_eq!(format_task_id(7), "T-0007");
        assert_eq!(format_task_id(12345), "T-12345");
    }
}
