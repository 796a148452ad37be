//! What a finished `moziplus` child left behind, and waiting for a child
//! without letting a hang stall the suite.

use std::process::{Child, Output};
use std::sync::mpsc;
use std::time::Duration;

/// How long any single child process may take before the test fails. Generous:
/// the suite must pass on a loaded 2-core machine.
pub const CHILD_TIMEOUT: Duration = Duration::from_secs(120);

/// What a finished child process left behind.
#[derive(Debug, Clone)]
pub struct Out {
    /// Exit code; -1 when killed by a signal.
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
    /// The command line, for failure messages.
    pub what: String,
}

impl std::fmt::Display for Out {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "`{}` exited {}\n--- stdout ---\n{}--- stderr ---\n{}",
            self.what, self.code, self.stdout, self.stderr
        )
    }
}

impl Out {
    /// The outcome of `what` from its collected output.
    pub fn from_output(what: String, o: Output) -> Out {
        Out {
            code: o.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
            what,
        }
    }

    /// Whether it exited 0.
    pub fn success(&self) -> bool {
        self.code == 0
    }

    /// Asserts exit 0 and returns trimmed stdout.
    #[track_caller]
    pub fn ok(&self) -> String {
        assert_eq!(self.code, 0, "expected success:\n{self}");
        self.stdout.trim().to_string()
    }

    /// Asserts the exit code and that stderr contains every needle.
    #[track_caller]
    pub fn fails(&self, code: i32, needles: &[&str]) -> &Out {
        assert_eq!(self.code, code, "wrong exit code (want {code}):\n{self}");
        for n in needles {
            assert!(
                self.stderr.contains(n),
                "stderr does not mention {n:?}:\n{self}"
            );
        }
        self
    }

    /// Parses stdout as JSON (for `--json` commands).
    #[track_caller]
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.ok())
            .unwrap_or_else(|e| panic!("stdout is not JSON ({e}):\n{self}"))
    }
}

/// Waits for a spawned child with [`CHILD_TIMEOUT`], killing it (and failing
/// the test) if it hangs.
pub fn wait_child(child: Child, what: String) -> Out {
    let pid = child.id() as i32;
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    match rx.recv_timeout(CHILD_TIMEOUT) {
        Ok(Ok(o)) => Out::from_output(what, o),
        Ok(Err(e)) => panic!("waiting for `{what}`: {e}"),
        Err(_) => {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            );
            panic!("`{what}` did not finish within {CHILD_TIMEOUT:?}");
        }
    }
}
