//! The README's tutorial ("Tutorial: your own team in ten minutes"), run as
//! a new user runs it: its code blocks are read from README.md itself, so
//! the test breaks when the README and the product drift apart.
//!
//! Each block the test runs is preceded in the README by a marker line:
//!
//! - `<!-- tutorial: shell -->`: commands typed in the first terminal. The
//!   shell blocks run in order in one `bash` session (its exports, working
//!   directory and variables carry over), every command must succeed.
//! - `<!-- tutorial: file PATH -->`: a file the user writes, relative to the
//!   first terminal's directory at that point.
//! - `<!-- tutorial: daemon -->`: a second terminal, a fresh shell in the
//!   user's home that ends in `moziplus serve`.
//! - `<!-- tutorial: output COMMAND -->`: what COMMAND prints once the team
//!   has done its work (compared line by line, runs of spaces as one).
//! - `<!-- tutorial: refused -->`: one command a line, each of which must be
//!   refused with a message naming what is wrong.
//!
//! The user is real: a fresh temporary `HOME` (so `~/team` is inside it),
//! an environment holding only `PATH`, `HOME` and `LANG`, the real
//! `moziplus` binary on `PATH` under that name, the real daemon, the
//! tutorial's command agents and the real Codex CLI (installed by
//! `scripts/test.sh`; `MOZI_TEST_CODEX`). Permissions are the shipped
//! default (`auto`: the sandbox where bubblewrap works).
//!
//! What differs from a user's machine, and only this:
//! - NVIDIA cannot be reached from tests: a scripted fake model
//!   (`support/scripted_llm.rs`, speaking chat completions only, like
//!   NVIDIA's free tier) stands in for it. The test writes
//!   `config/default.yaml` with the `nvidia` provider's `base_url` set to the
//!   fake, after the first terminal's blocks and before the daemon starts.
//! - The key the daemon's terminal exports is a placeholder in the README
//!   (`nvapi-…`); the test fills the `…` in and checks that this very key
//!   reached the provider.
//! - Port 8083 may be taken on a test machine: both terminals get
//!   `MOZI_SERVER__BIND=127.0.0.1:<free port>` (the documented environment
//!   override of `server.bind`).

#[path = "support/scripted_llm.rs"]
mod scripted_llm;
mod support;

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use support::*;

/// The marker kinds the tutorial has, in order. A README whose tutorial
/// changes shape must change this test with it.
const SHAPE: &[&str] = &[
    "shell", "file", "shell", "daemon", "shell", "output", "refused",
];

/// What the `…` placeholder of the daemon's terminal becomes.
const KEY_FILL: &str = "tutorial-test-key";

/// One marked code block of the README.
#[derive(Debug)]
struct Block {
    kind: String,
    arg: String,
    body: String,
    /// 1-based line of the marker, for messages.
    line: usize,
}

/// The README's marked blocks: a `<!-- tutorial: KIND [ARG] -->` line, then
/// (after blank lines at most) a fenced code block.
fn tutorial_blocks(readme: &str) -> Vec<Block> {
    let lines: Vec<&str> = readme.lines().collect();
    let mut blocks = Vec::new();
    let mut i = 0;
    while i < lines.len() {
        let l = lines[i].trim();
        let Some(spec) = l
            .strip_prefix("<!-- tutorial:")
            .and_then(|r| r.strip_suffix("-->"))
        else {
            i += 1;
            continue;
        };
        let spec = spec.trim();
        let (kind, arg) = spec.split_once(' ').unwrap_or((spec, ""));
        let marker = i + 1;
        i += 1;
        while i < lines.len() && lines[i].trim().is_empty() {
            i += 1;
        }
        assert!(
            i < lines.len() && lines[i].starts_with("```"),
            "README.md line {marker}: the tutorial marker is not followed by a fenced code block"
        );
        i += 1;
        let mut body = String::new();
        while i < lines.len() && !lines[i].starts_with("```") {
            body.push_str(lines[i]);
            body.push('\n');
            i += 1;
        }
        assert!(
            i < lines.len(),
            "README.md line {marker}: the code block is not closed"
        );
        i += 1;
        blocks.push(Block {
            kind: kind.to_string(),
            arg: arg.trim().to_string(),
            body,
            line: marker,
        });
    }
    blocks
}

/// Lines with their runs of spaces collapsed, blank lines dropped.
fn normalized(text: &str) -> Vec<String> {
    text.lines()
        .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
        .filter(|l| !l.is_empty())
        .collect()
}

/// The user's machine: a temporary folder holding the user's `HOME` and a
/// `bin/` with `moziplus` (the binary under test), and the environment of
/// a fresh terminal.
struct Machine {
    root: tempfile::TempDir,
    env: Vec<(String, String)>,
    /// Where the first terminal's shell leaves its state between blocks.
    state: PathBuf,
}

impl Machine {
    fn new(codex: &Path, port: u16) -> Machine {
        let root = tempfile::Builder::new()
            .prefix("moziplus-tutorial-")
            .tempdir()
            .expect("temp dir");
        let home = root.path().join("user");
        let bin = root.path().join("bin");
        std::fs::create_dir_all(&home).unwrap();
        std::fs::create_dir_all(&bin).unwrap();
        std::os::unix::fs::symlink(BIN, bin.join("moziplus")).unwrap();
        let mut path = vec![bin];
        if let Some(node) = std::env::var_os("MOZI_TEST_NODE_DIR") {
            path.push(PathBuf::from(node));
        }
        path.push(codex.parent().unwrap().to_path_buf());
        path.extend(std::env::split_paths(
            &std::env::var_os("PATH").unwrap_or_default(),
        ));
        let env = vec![
            (
                "PATH".to_string(),
                std::env::join_paths(path).unwrap().into_string().unwrap(),
            ),
            ("HOME".to_string(), home.display().to_string()),
            ("LANG".to_string(), "C.UTF-8".to_string()),
            ("MOZI_SERVER__BIND".to_string(), format!("127.0.0.1:{port}")),
        ];
        let state = root.path().join("first-terminal.state");
        Machine { root, env, state }
    }

    fn home(&self) -> PathBuf {
        self.root.path().join("user")
    }

    /// `bash -c script` in a fresh terminal's environment, started in the
    /// user's home.
    fn bash(&self, script: &str) -> Command {
        let mut c = Command::new("bash");
        c.env_clear();
        c.envs(self.env.iter().map(|(k, v)| (k, v)));
        c.current_dir(self.home());
        c.arg("-c").arg(script);
        c.stdin(Stdio::null());
        c
    }

    /// Runs `script` in the first terminal: after the state the previous
    /// blocks left (exports, variables, directory), saving its own.
    fn first_terminal(&self, script: &str, what: &str) -> Out {
        let state = self.state.display();
        let full = format!(
            "{restore}{script}\n__mozi_status=$?\n{{ declare -p | grep -v -e ' BASH' -e ' SHELLOPTS=' -e ' EUID=' -e ' PPID=' -e ' UID=' -e ' _=' ; echo \"cd '$PWD'\"; }} > '{state}.new' && mv '{state}.new' '{state}'\nexit $__mozi_status",
            restore = if self.state.exists() {
                format!("source '{state}'\n")
            } else {
                String::new()
            },
        );
        let mut c = self.bash(&full);
        c.stdout(Stdio::piped()).stderr(Stdio::piped());
        let child = c.spawn().expect("spawning bash");
        wait_child(child, what.to_string())
    }

    /// The first terminal's directory after the last block.
    fn first_terminal_dir(&self) -> PathBuf {
        let state = std::fs::read_to_string(&self.state).expect("the first terminal's state");
        let line = state
            .lines()
            .rev()
            .find_map(|l| l.strip_prefix("cd '"))
            .expect("the saved directory");
        PathBuf::from(line.trim_end_matches('\''))
    }
}

/// The second terminal: `bash` running the daemon block, in its own
/// process group so nothing it starts outlives the test.
struct SecondTerminal {
    child: Child,
}

impl Drop for SecondTerminal {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let pgid = nix::unistd::Pid::from_raw(self.child.id() as i32);
            nix::sys::signal::killpg(pgid, nix::sys::signal::Signal::SIGKILL).ok();
            self.child.wait().ok();
        }
    }
}

/// A shell block as one script: stop at the first failing command, and
/// trace each command on stderr for the failure message.
fn strict(body: &str) -> String {
    format!("set -euo pipefail\nset -x\n{body}")
}

#[test]
fn the_readme_tutorial_works_as_written() {
    let readme_path = Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md");
    let readme = std::fs::read_to_string(&readme_path).expect("README.md");
    let blocks = tutorial_blocks(&readme);
    let shape: Vec<&str> = blocks.iter().map(|b| b.kind.as_str()).collect();
    assert_eq!(
        shape, SHAPE,
        "README.md's tutorial markers changed shape ({blocks:#?}); update tests/tutorial.rs with it"
    );
    let Some(codex) = test_tool("MOZI_TEST_CODEX") else {
        return;
    };
    let llm = scripted_llm::ScriptedLlm::start(BIN);
    let port = free_port();
    let machine = Machine::new(&codex, port);
    let [setup, agents, create, daemon, watch, expected, refused] = &blocks[..] else {
        unreachable!("the shape was checked")
    };

    // The first terminal: the home, the team, the project and its tasks.
    let file = format!(
        "mkdir -p \"$(dirname '{path}')\"\ncat > '{path}' <<'MOZI_TUTORIAL_EOF'\n{body}MOZI_TUTORIAL_EOF\n",
        path = agents.arg,
        body = agents.body
    );
    assert!(
        !agents.arg.is_empty(),
        "README.md line {}: the file marker names no path",
        agents.line
    );
    let before = machine.first_terminal(
        &strict(&format!("{}\n{file}\n{}", setup.body, create.body)),
        "the tutorial's first terminal: setup and tasks",
    );
    assert_eq!(
        before.code, 0,
        "the tutorial's first commands failed:\n{before}"
    );
    let team = machine.first_terminal_dir();
    assert_eq!(
        team,
        machine.home().join("team"),
        "the first terminal is in ~/team"
    );
    assert!(
        before.stdout.contains("T-0003") && before.stdout.contains("T-0004"),
        "the last two `bb create`s print their ids:\n{before}"
    );
    assert!(
        before.stdout.contains("ok   agents.yaml") && before.stdout.contains("4 agents"),
        "doctor reads the team of four:\n{before}"
    );
    assert!(
        before.stdout.contains("runtime codex") || before.stdout.contains("agent coder"),
        "doctor checks the Codex agent's CLI:\n{before}"
    );
    assert!(
        before.stdout.contains("all required checks passed"),
        "doctor passes:\n{before}"
    );
    // "Nothing runs yet: `bb read` says T-0001 is waiting for the daemon."
    let read = before
        .stdout
        .split("project site")
        .last()
        .unwrap_or_default()
        .to_string();
    assert!(
        read.contains("T-0001") && read.contains("waiting for: the daemon"),
        "bb read says T-0001 waits for the daemon:\n{read}"
    );

    // The fake stands in for NVIDIA (see the module doc).
    std::fs::write(
        team.join("config/default.yaml"),
        format!(
            "gateway:\n  providers:\n    - name: nvidia\n      base_url: {}\n      api_key_env: NVIDIA_API_KEY\n      limited: true\n",
            llm.base_url
        ),
    )
    .unwrap();

    // The second terminal: the daemon.
    let log_path = machine.root.path().join("second-terminal.log");
    let log = std::fs::File::create(&log_path).unwrap();
    let mut second = machine.bash(&format!("set -eu\n{}", daemon.body.replace('…', KEY_FILL)));
    second
        .stdout(Stdio::from(log.try_clone().unwrap()))
        .stderr(Stdio::from(log))
        .process_group(0);
    let mut second = SecondTerminal {
        child: second.spawn().expect("spawning the second terminal"),
    };
    let daemon_log = || std::fs::read_to_string(&log_path).unwrap_or_default();
    wait_for(
        Duration::from_secs(60),
        "the tutorial's daemon to answer",
        || {
            if let Ok(Some(status)) = second.child.try_wait() {
                panic!("the daemon's terminal ended ({status}):\n{}", daemon_log());
            }
            http(port, "GET", "/health").is_some_and(|(c, _)| c == 200)
        },
    );

    // "Within a minute or two every task is done": the output block's
    // command prints what the README shows.
    let (command, want) = (expected.arg.as_str(), normalized(&expected.body));
    assert!(
        !command.is_empty(),
        "README.md line {}: the output marker names no command",
        expected.line
    );
    let deadline = Instant::now() + Duration::from_secs(300);
    let mut last;
    loop {
        last = machine.first_terminal(command, command);
        if last.code == 0 && normalized(&last.stdout) == want {
            break;
        }
        if Instant::now() > deadline {
            let db = team.join("projects/site/blackboard.db");
            panic!(
                "after 300 s `{command}` does not print what README.md (line {}) shows.\nwant:\n{}\ngot:\n{last}\nobservations:\n{}\ndaemon:\n{}",
                expected.line,
                want.join("\n"),
                query_strings(&db, "SELECT body FROM observation").join("\n"),
                daemon_log()
            );
        }
        std::thread::sleep(Duration::from_secs(1));
    }

    // Back in the first terminal: the watch commands.
    let watched = machine.first_terminal(&strict(&watch.body), "the tutorial's watch commands");
    assert_eq!(watched.code, 0, "the watch commands failed:\n{watched}");
    let out = &watched.stdout;
    for needle in [
        "T-0002 [done] Write the copy",
        "output (round 1, writer): the copy",
        "runs:",
        "writer  round 1",
        "succeeded",
        "T-0002 is now done",
        "paused: no new run starts",
        "resumed",
    ] {
        assert!(
            out.contains(needle),
            "the watch commands print {needle:?}:\n{watched}"
        );
    }

    // The Codex agent worked T-0004 through the daemon's gateway: its calls
    // reached the provider (the fake) with the key of the daemon's terminal
    // and the model of agents.yaml, and its tool call posted the output.
    // `bb done` comes from the tool call; the CLI still sends its final turn
    // before its run ends.
    let mut t4 = machine.first_terminal("moziplus bb read T-0004", "bb read T-0004");
    let deadline = Instant::now() + Duration::from_secs(120);
    while !t4
        .stdout
        .lines()
        .any(|l| l.contains("coder  round 1") && l.contains("succeeded"))
    {
        assert!(
            Instant::now() < deadline,
            "the Codex run of T-0004 did not end as succeeded:\n{t4}\ndaemon:\n{}",
            daemon_log()
        );
        std::thread::sleep(Duration::from_millis(500));
        t4 = machine.first_terminal("moziplus bb read T-0004", "bb read T-0004");
    }
    assert!(
        t4.stdout.contains("scripted result"),
        "codex posted its output:\n{t4}"
    );
    {
        let served = llm.served.lock().unwrap();
        assert!(
            served.calls >= 2 && served.tool_calls >= 1,
            "a tool call and a final answer at least: {served:?}"
        );
        assert!(
            served.requests.iter().all(|(_, model, auth)| {
                model == "qwen/qwen3-coder-480b-a35b-instruct"
                    && auth.as_deref() == Some(&*format!("Bearer nvapi-{KEY_FILL}"))
            }),
            "the provider got agents.yaml's model with the exported key: {:?}",
            served.requests
        );
    }

    // Mistakes are named, and nothing is written.
    for line in refused.body.lines().filter(|l| !l.trim().is_empty()) {
        let out = machine.first_terminal(line, line);
        assert_ne!(
            out.code, 0,
            "README.md line {}: `{line}` is refused:\n{out}",
            refused.line
        );
        let needles: Vec<String> = if line.contains("--kind design") {
            vec!["no agent takes kind \"design\"".into(), "--force".into()]
        } else if line.contains("-p shop") {
            vec!["\"shop\"".into(), team.display().to_string()]
        } else {
            panic!(
                "README.md line {}: tests/tutorial.rs does not know what `{line}` should say",
                refused.line
            )
        };
        for n in &needles {
            assert!(
                out.stderr.contains(n.as_str()),
                "`{line}` names {n:?}:\n{out}"
            );
        }
    }
    let after = machine.first_terminal(command, command);
    assert_eq!(
        normalized(&after.stdout),
        want,
        "the refusals wrote nothing:\n{after}"
    );

    // Ctrl-C in the second terminal: the daemon stops cleanly.
    let pid: i32 = std::fs::read_to_string(team.join("daemon.lock"))
        .unwrap_or_default()
        .trim()
        .parse()
        .expect("daemon.lock names the daemon's pid");
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid),
        nix::sys::signal::Signal::SIGINT,
    )
    .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(s) = second.child.try_wait().unwrap() {
            break s;
        }
        assert!(
            Instant::now() < deadline,
            "the daemon did not stop on Ctrl-C:\n{}",
            daemon_log()
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(
        status.success(),
        "the daemon exits 0 on Ctrl-C ({status}):\n{}",
        daemon_log()
    );
    assert_eq!(
        processes_of_home(&team),
        Vec::<i32>::new(),
        "nothing of the team is left running"
    );
}
