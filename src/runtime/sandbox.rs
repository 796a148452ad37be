//! `permissions: sandbox`: a run inside bubblewrap (`bwrap`).
//!
//! The contract, the same for every runtime:
//!
//! * **read-write**: the task's workspace (for a git worktree also the
//!   repository's `.git`, fenced by [`git_fence`]: objects can be added and
//!   the run's own branch moved; the other refs, `HEAD`, the index, the
//!   configuration, the hooks and the other worktrees stay read-only), the
//!   run's `TMPDIR`, the agent's state folder
//!   `runtimes/<runtime>/<agent>/`, and `sandbox.read_write`;
//! * **read-only**: the system (`/usr`, `/etc` without its secrets, `/opt`),
//!   the toolchains the run needs (every absolute `PATH` folder, the CLI's
//!   package tree), the `moziplus` binary, the brief, `sandbox.read_only`;
//! * **hidden**: everything else — the rest of the moziplus home (other
//!   projects, their blackboards, `config/`, backups), the user's home
//!   (`~/.ssh`), the daemon's processes (own PID namespace and `/proc`);
//! * **network**: an empty network namespace. The in-sandbox `moziplus
//!   sandbox-init` listens on the daemon's own address (`server.bind`) inside
//!   it and forwards each connection to the daemon's socket bound in at
//!   [`SOCKET_INSIDE`]: the gateway and the API are reachable, nothing else.
//!
//! A user namespace with every capability dropped, a new session (no
//! terminal injection), `--die-with-parent`: killing the run's process group
//! (the `bwrap` process) takes the whole namespace down.

use std::path::{Path, PathBuf};

use super::{env, Launch};

/// The folder the daemon's socket is bound at inside the sandbox.
pub const SOCKET_DIR_INSIDE: &str = "/run/moziplus";
/// The daemon's socket inside the sandbox (`MOZI_API`).
pub const SOCKET_INSIDE: &str = "/run/moziplus/api.sock";
/// The name of the daemon's socket in its folder (`Home::sandbox_socket_file`).
pub const SOCKET_NAME: &str = "api.sock";

/// Files of `/etc` a run never sees (replaced by an empty file or folder).
const ETC_SECRETS: [&str; 6] = [
    "/etc/shadow",
    "/etc/gshadow",
    "/etc/shadow-",
    "/etc/gshadow-",
    "/etc/sudoers",
    "/etc/ssh",
];

/// Folders of the user's home never shown whole, even when a `PATH`
/// folder lies inside one (that folder alone is shown then).
const HOME_SECRETS: [&str; 11] = [
    ".ssh",
    ".gnupg",
    ".aws",
    ".azure",
    ".config",
    ".local",
    ".docker",
    ".kube",
    ".netrc",
    ".password-store",
    ".git-credentials",
];

/// What one run's sandbox shows; built by `daemon::runs`.
#[derive(Debug, Clone, Default, serde::Serialize, PartialEq)]
pub struct SandboxPlan {
    /// Folders the run may change.
    pub read_write: Vec<PathBuf>,
    /// Files and folders it may read.
    pub read_only: Vec<PathBuf>,
    /// The host folder holding the daemon's socket.
    #[serde(skip)]
    pub socket_dir: PathBuf,
    /// The address the gateway and API answer on inside (`server.bind`).
    pub listen: String,
    /// The user's home: an empty private folder inside.
    pub user_home: Option<PathBuf>,
    /// `sandbox.allow_hosts`: what the proxy lets through.
    pub allow_hosts: Vec<String>,
    /// Inside a git worktree's read-write repository, what stays
    /// read-only and what the run's own branch writes ([`git_fence`]).
    pub git_fence: Option<GitFence>,
}

/// A worktree's shared `.git`, fenced: the run can add objects and move
/// its own branch, not the repository's other refs, its `HEAD`, index,
/// configuration, hooks or the other worktrees.
#[derive(Debug, Clone, Default, serde::Serialize, PartialEq)]
pub struct GitFence {
    /// Bound read-only over the read-write `.git`.
    pub read_only: Vec<PathBuf>,
    /// Bound read-write again inside those: the folder of the run's branch
    /// ref and of its reflog, and its worktree's own admin folder.
    pub read_write: Vec<PathBuf>,
}

impl SandboxPlan {
    /// The address the run reaches the daemon at inside: `listen`, with an
    /// any-address bind named as loopback.
    pub fn inside_addr(&self) -> String {
        match self.listen.rsplit_once(':') {
            Some(("0.0.0.0", port)) => format!("127.0.0.1:{port}"),
            Some(("[::]", port)) => format!("[::1]:{port}"),
            _ => self.listen.clone(),
        }
    }

    /// One line for the run's log and the session's detail: what the run
    /// may change, read and reach.
    pub fn describe(&self) -> String {
        let list = |v: &[PathBuf]| {
            v.iter()
                .map(|p| p.display().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        };
        let hosts = if self.allow_hosts.is_empty() {
            "none".to_string()
        } else {
            self.allow_hosts.join(", ")
        };
        format!(
            "sandbox: read-write {}; read-only {} and the system; network: the gateway and the API at {}, other hosts through the proxy: {hosts}",
            list(&self.read_write),
            list(&self.read_only),
            self.inside_addr()
        )
    }
}

/// The variables that send a run's HTTP clients through the daemon's
/// proxy (`http::sandbox_proxy`), with the run's key; the gateway and the
/// API stay direct (`NO_PROXY`). They replace any the run inherited: no
/// other proxy is reachable from inside.
fn proxy_env(e: &mut Vec<(String, String)>, plan: &SandboxPlan) {
    let Some(key) = env::get(e, "MOZI_RUN_KEY").map(str::to_string) else {
        return;
    };
    let addr = plan.inside_addr();
    let url = format!("http://run:{key}@{addr}");
    let host = addr
        .rsplit_once(':')
        .map(|(h, _)| h.trim_start_matches('[').trim_end_matches(']').to_string())
        .unwrap_or_default();
    let no_proxy = format!("127.0.0.1,localhost,::1,{host}");
    for (name, value) in [
        ("HTTPS_PROXY", &url),
        ("https_proxy", &url),
        ("HTTP_PROXY", &url),
        ("http_proxy", &url),
        ("ALL_PROXY", &url),
        ("all_proxy", &url),
        ("NO_PROXY", &no_proxy),
        ("no_proxy", &no_proxy),
    ] {
        env::set(e, name, value.clone());
    }
}

/// Whether the daemon's socket for sandboxed runs can be bound at `path`:
/// a Unix socket's path holds at most 107 bytes. The error says what to do.
pub fn socket_path_fits(path: &Path) -> Result<(), String> {
    const MAX: usize = 107;
    let len = path.as_os_str().len();
    if len <= MAX {
        return Ok(());
    }
    Err(format!(
        "the socket of sandboxed runs, {}, is {len} bytes long and a Unix socket's path holds at most {MAX}: move the moziplus home to a shorter path",
        path.display()
    ))
}

/// The `bwrap` program: `configured` (`sandbox.bwrap`), else
/// `/usr/bin/bwrap` or the first on `PATH`.
pub fn find_bwrap(configured: Option<&Path>) -> Option<PathBuf> {
    if let Some(p) = configured {
        return p.is_file().then(|| p.to_path_buf());
    }
    let path = crate::secrets::env_var("PATH").unwrap_or_default();
    std::iter::once(PathBuf::from("/usr/bin"))
        .chain(std::env::split_paths(&path))
        .map(|d| d.join("bwrap"))
        .find(|p| p.is_file())
}

/// Checks that bubblewrap can make a sandbox here (user, PID and network
/// namespaces); the error says what failed and what to do.
pub fn probe(configured: Option<&Path>) -> Result<PathBuf, String> {
    let Some(bwrap) = find_bwrap(configured) else {
        let what = match configured {
            Some(p) => format!("sandbox.bwrap names {}, which is not a file", p.display()),
            None => "bubblewrap (`bwrap`) is not installed".into(),
        };
        return Err(format!("{what}: install it (Debian/Ubuntu: `apt-get install bubblewrap`), or give the agent `permissions: workspace`"));
    };
    let mut cmd = std::process::Command::new(&bwrap);
    cmd.args(namespace_args())
        .args(system_args())
        .args(["--", "/bin/true"])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped());
    match cmd.output() {
        Ok(o) if o.status.success() => Ok(bwrap),
        Ok(o) => Err(format!(
            "{} cannot make a sandbox (user, PID and network namespaces): {} — allow unprivileged user namespaces (sysctl kernel.unprivileged_userns_clone=1, or the AppArmor restriction on Ubuntu), or give the agent `permissions: workspace`",
            bwrap.display(),
            String::from_utf8_lossy(&o.stderr).trim()
        )),
        Err(e) => Err(format!("cannot run {}: {e}", bwrap.display())),
    }
}

fn namespace_args() -> Vec<String> {
    [
        "--unshare-user",
        "--unshare-pid",
        "--unshare-net",
        "--unshare-ipc",
        "--unshare-uts",
        "--unshare-cgroup-try",
        "--cap-drop",
        "ALL",
        "--die-with-parent",
        "--new-session",
        "--proc",
        "/proc",
        "--dev",
        "/dev",
        "--tmpfs",
        "/tmp",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

/// The read-only system: `/usr`, the merged-`/usr` links (or folders),
/// `/etc` without [`ETC_SECRETS`], `/opt`.
fn system_args() -> Vec<String> {
    let mut a: Vec<String> = Vec::new();
    let mut ro = |p: &str| a.extend(["--ro-bind".into(), p.into(), p.into()]);
    ro("/usr");
    for top in ["/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32"] {
        match std::fs::read_link(top) {
            Ok(target) => a.extend(["--symlink".into(), target.display().to_string(), top.into()]),
            Err(_) if Path::new(top).is_dir() => {
                a.extend(["--ro-bind".into(), top.into(), top.into()]);
            }
            Err(_) => {}
        }
    }
    for dir in ["/etc", "/opt"] {
        if Path::new(dir).is_dir() {
            a.extend(["--ro-bind".into(), dir.into(), dir.into()]);
        }
    }
    for secret in ETC_SECRETS {
        match std::fs::symlink_metadata(secret) {
            Ok(m) if m.is_dir() => a.extend(["--tmpfs".into(), secret.into()]),
            Ok(_) => a.extend(["--ro-bind".into(), "/dev/null".into(), secret.into()]),
            Err(_) => {}
        }
    }
    a
}

/// One mount of a run's own paths.
#[derive(Debug)]
enum Mount {
    Tmpfs(PathBuf),
    ReadOnly(PathBuf),
    ReadWrite(PathBuf),
}

impl Mount {
    fn dest(&self) -> &Path {
        match self {
            Mount::Tmpfs(p) | Mount::ReadOnly(p) | Mount::ReadWrite(p) => p,
        }
    }
}

/// The toolchain folders a launch needs read-only: every absolute folder
/// of its `PATH` (as written and resolved) and, for a program inside a
/// `node_modules` tree, the folder holding that tree. A folder that holds
/// the moziplus home or the user's home is never shown whole.
pub fn toolchain_paths(launch: &Launch, home: &Path, user_home: Option<&Path>) -> Vec<PathBuf> {
    let too_wide = |p: &Path| {
        p == Path::new("/") || home.starts_with(p) || user_home.is_some_and(|h| h.starts_with(p))
    };
    let mut out: Vec<PathBuf> = Vec::new();
    // Already shown with the system (`/bin` is a link to `/usr/bin`).
    let system = |p: &Path| {
        p.canonicalize()
            .is_ok_and(|c| ["/usr", "/etc", "/opt"].iter().any(|s| c.starts_with(s)))
    };
    let add = |p: PathBuf, out: &mut Vec<PathBuf>| {
        if p.is_absolute() && p.exists() && !too_wide(&p) && !system(&p) && !out.contains(&p) {
            out.push(p);
        }
    };
    // A folder inside a `node_modules` tree: the whole tree (a `.bin`
    // entry is a relative link into it), unless that is too wide.
    let tree_of = |p: &Path| -> Option<PathBuf> {
        p.ancestors()
            .filter(|a| a.file_name().is_some_and(|n| n == "node_modules"))
            .last()
            .and_then(Path::parent)
            .filter(|t| !too_wide(t))
            .map(Path::to_path_buf)
    };
    // A folder of a toolchain kept in a dot-folder (`~/.pyenv/shims`,
    // `~/.cargo/bin`): that dot-folder whole, whose shims need the rest of
    // it — never one known to hold secrets or settings.
    let home_tool = |p: &Path| -> Option<PathBuf> {
        let top = p
            .ancestors()
            .filter(|a| {
                a.file_name()
                    .is_some_and(|n| n.to_string_lossy().starts_with('.'))
            })
            .last()?;
        let name = top.file_name()?.to_string_lossy().into_owned();
        (!HOME_SECRETS.contains(&name.as_str()) && !too_wide(top)).then(|| top.to_path_buf())
    };
    let path = env::get(&launch.env, "PATH").unwrap_or_default();
    for dir in std::env::split_paths(path).filter(|d| d.is_absolute()) {
        let real = dir.canonicalize().ok();
        for d in std::iter::once(dir).chain(real) {
            add(tree_of(&d).or_else(|| home_tool(&d)).unwrap_or(d), &mut out);
        }
    }
    let program = if launch.program.contains('/') {
        Some(PathBuf::from(&launch.program))
    } else {
        std::env::split_paths(path)
            .map(|d| d.join(&launch.program))
            .find(|p| p.is_file())
    };
    if let Some(literal) = program {
        let real = literal.canonicalize().ok();
        for p in std::iter::once(literal).chain(real) {
            match (tree_of(&p), p.parent()) {
                (Some(t), _) => add(t, &mut out),
                // A program in a folder that is not shown whole (a script
                // in the home): the file alone.
                (None, Some(parent)) if !too_wide(parent) => add(parent.to_path_buf(), &mut out),
                _ => add(p, &mut out),
            }
        }
    }
    out
}

/// For a git worktree: the repository's common `.git` folder (read from the
/// worktree's `.git` file and its `commondir`), which a commit writes.
pub fn git_common_dir(workspace: &Path) -> Option<PathBuf> {
    let text = std::fs::read_to_string(workspace.join(".git")).ok()?;
    let admin = PathBuf::from(text.strip_prefix("gitdir:")?.trim());
    let common = std::fs::read_to_string(admin.join("commondir")).ok()?;
    let common = admin.join(common.trim());
    common.canonicalize().ok()
}

/// The fence of the worktree at `workspace` inside its repository's
/// shared `.git` (`common`, as [`git_common_dir`] found it): read-only
/// `config` and `hooks` (they run code in the daemon's own git calls),
/// `refs`, `logs`, `packed-refs`, `HEAD`, `index` and `worktrees`;
/// read-write again the folder holding the run's branch ref
/// (`refs/heads/mozi/<project>`: a ref is written as a lock file renamed
/// into place, so its folder must be writable, which leaves the project's
/// other task branches movable, never `main` or another project's), the
/// same folder of `logs/` (the branch's reflog), and the worktree's admin
/// folder (its `HEAD`, index and logs). Those folders are created when
/// missing (a packed ref has no loose file), and so are `hooks` and an
/// empty `packed-refs`, which the run could otherwise create. `None` when
/// the worktree's branch cannot be read (a detached checkout: nothing to
/// move).
pub fn git_fence(workspace: &Path, common: &Path) -> Option<GitFence> {
    let text = std::fs::read_to_string(workspace.join(".git")).ok()?;
    let admin = PathBuf::from(text.strip_prefix("gitdir:")?.trim())
        .canonicalize()
        .ok()?;
    let head = std::fs::read_to_string(admin.join("HEAD")).ok()?;
    let branch = head.strip_prefix("ref:")?.trim();
    let folder = Path::new(branch).parent()?;
    if !folder.starts_with("refs/heads")
        || folder.components().any(|c| {
            matches!(
                c,
                std::path::Component::ParentDir | std::path::Component::RootDir
            )
        })
    {
        return None;
    }
    let own_refs = common.join(folder);
    let own_logs = common.join("logs").join(folder);
    for dir in [&own_refs, &own_logs, &common.join("hooks")] {
        std::fs::create_dir_all(dir).ok()?;
    }
    // A file missing now could be created by the run inside the writable
    // `.git`: a `packed-refs` naming refs, a hook the daemon's next git
    // call runs. An empty `packed-refs` is a valid one (and `hooks` was
    // made above).
    let packed = common.join("packed-refs");
    if !packed.exists() {
        match std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&packed)
        {
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(_) => return None,
        }
    }
    let read_only = [
        "config",
        "hooks",
        "refs",
        "logs",
        "packed-refs",
        "HEAD",
        "index",
        "worktrees",
    ]
    .iter()
    .map(|part| common.join(part))
    .filter(|p| p.exists())
    .collect();
    Some(GitFence {
        read_only,
        read_write: vec![own_refs, own_logs, admin],
    })
}

/// Wraps `launch` in bubblewrap: the program becomes `bwrap`, which runs
/// `moziplus sandbox-init` (the network forwarder) inside, which execs the
/// CLI. The environment is the launch's own plus `MOZI_API`.
pub fn wrap(launch: Launch, plan: &SandboxPlan, bwrap: &Path, exe: &Path) -> Launch {
    let mut args = namespace_args();
    args.extend(system_args());
    let mut mounts: Vec<Mount> = Vec::new();
    if let Some(h) = &plan.user_home {
        mounts.push(Mount::Tmpfs(h.clone()));
    }
    for p in &plan.read_only {
        mounts.push(Mount::ReadOnly(p.clone()));
    }
    for p in &plan.read_write {
        mounts.push(Mount::ReadWrite(p.clone()));
    }
    // Parents first, so a folder bound inside another lands on top of it;
    // at one depth tmpfs, then read-only, then read-write (kept order).
    mounts.sort_by_key(|m| m.dest().components().count());
    for m in &mounts {
        let p = m.dest().display().to_string();
        match m {
            Mount::Tmpfs(_) => args.extend(["--tmpfs".into(), p]),
            Mount::ReadOnly(_) => args.extend(["--ro-bind".into(), p.clone(), p]),
            Mount::ReadWrite(_) => args.extend(["--bind".into(), p.clone(), p]),
        }
    }
    // A git worktree's repository: read-only over the read-write `.git`,
    // then the run's own branch read-write again (see `git_fence`).
    if let Some(fence) = &plan.git_fence {
        for p in &fence.read_only {
            let p = p.display().to_string();
            args.extend(["--ro-bind".into(), p.clone(), p]);
        }
        for p in &fence.read_write {
            let p = p.display().to_string();
            args.extend(["--bind".into(), p.clone(), p]);
        }
    }
    args.extend([
        "--ro-bind".into(),
        plan.socket_dir.display().to_string(),
        SOCKET_DIR_INSIDE.into(),
        // The root itself (where the mount points were made) is read-only:
        // a write outside the bound folders, `/tmp` and `HOME` fails.
        "--remount-ro".into(),
        "/".into(),
        "--chdir".into(),
        launch.cwd.display().to_string(),
        "--".into(),
        exe.display().to_string(),
        "sandbox-init".into(),
        "--listen".into(),
        plan.listen.clone(),
        "--socket".into(),
        SOCKET_INSIDE.into(),
        "--".into(),
        launch.program.clone(),
    ]);
    args.extend(launch.args.iter().cloned());
    let mut e = launch.env.clone();
    // The board is the daemon's, through MOZI_API; the store's URL (and
    // any password in it) stays outside.
    e.retain(|(k, _)| k != "MOZI_STORE__URL");
    env::set(&mut e, "MOZI_API", SOCKET_INSIDE);
    proxy_env(&mut e, plan);
    Launch {
        program: bwrap.display().to_string(),
        args,
        env: e,
        ..launch
    }
}

/// Inside the sandbox: forwards every connection to `listen` (in the run's
/// own network namespace) to the daemon's `socket`, runs `argv` and returns
/// its exit code. Blocking; threads only (no runtime to start).
pub fn init(listen: &str, socket: &Path, argv: &[String]) -> i32 {
    use std::os::unix::process::ExitStatusExt;
    let Some((program, args)) = argv.split_first() else {
        eprintln!("moziplus sandbox-init: no command to run");
        return 2;
    };
    match std::net::TcpListener::bind(listen) {
        Ok(listener) => {
            let socket = socket.to_path_buf();
            let spawned = std::thread::Builder::new()
                .name("sandbox-forward".into())
                .spawn(move || forward_all(listener, &socket));
            if let Err(e) = spawned {
                eprintln!("moziplus sandbox-init: cannot start the forwarder: {e}");
                return 1;
            }
        }
        Err(e) => {
            eprintln!(
                "moziplus sandbox-init: cannot listen on {listen} inside the sandbox: {e}; the gateway will be unreachable"
            );
        }
    }
    match std::process::Command::new(program).args(args).status() {
        Ok(s) => s.code().unwrap_or_else(|| 128 + s.signal().unwrap_or(0)),
        Err(e) => {
            eprintln!("moziplus sandbox-init: cannot run {program}: {e}");
            if e.kind() == std::io::ErrorKind::NotFound {
                127
            } else {
                126
            }
        }
    }
}

fn forward_all(listener: std::net::TcpListener, socket: &Path) {
    for conn in listener.incoming() {
        let Ok(tcp) = conn else { continue };
        let socket = socket.to_path_buf();
        let _ = std::thread::Builder::new()
            .name("sandbox-conn".into())
            .spawn(move || {
                let Ok(unix) = std::os::unix::net::UnixStream::connect(&socket) else {
                    return;
                };
                pipe(tcp, unix);
            });
    }
}

/// Copies both ways until either side closes.
fn pipe(tcp: std::net::TcpStream, unix: std::os::unix::net::UnixStream) {
    let (Ok(mut tcp_r), Ok(mut unix_r)) = (tcp.try_clone(), unix.try_clone()) else {
        return;
    };
    let (mut tcp_w, mut unix_w) = (tcp, unix);
    let up = std::thread::spawn(move || {
        let _ = std::io::copy(&mut tcp_r, &mut unix_w);
        let _ = unix_w.shutdown(std::net::Shutdown::Write);
    });
    let _ = std::io::copy(&mut unix_r, &mut tcp_w);
    let _ = tcp_w.shutdown(std::net::Shutdown::Write);
    let _ = up.join();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_node_cli_shows_its_package_tree_but_never_a_home() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().canonicalize().unwrap();
        let pkg = root.join("tools/node_modules/cli/bin");
        std::fs::create_dir_all(&pkg).unwrap();
        std::fs::write(pkg.join("cli.js"), "").unwrap();
        let bin = root.join("tools/node_modules/.bin");
        std::fs::create_dir_all(&bin).unwrap();
        std::os::unix::fs::symlink(pkg.join("cli.js"), bin.join("cli")).unwrap();
        let home = root.join("home");
        std::fs::create_dir_all(&home).unwrap();
        let launch = Launch {
            program: "cli".into(),
            env: vec![(
                "PATH".into(),
                format!(
                    "{}:{}:{}:relative",
                    bin.display(),
                    home.display(),
                    root.display()
                ),
            )],
            ..Launch::default()
        };
        let paths = toolchain_paths(&launch, &home, None);
        assert!(
            paths.contains(&root.join("tools")),
            "the whole tree, where .bin's links point: {paths:?}"
        );
        assert!(!paths.contains(&home), "the home is never shown: {paths:?}");
        assert!(
            !paths.contains(&root),
            "an ancestor of the home neither: {paths:?}"
        );
    }

    #[test]
    fn the_wrapped_launch_runs_the_forwarder_then_the_cli() {
        let plan = SandboxPlan {
            read_write: vec!["/w/ws".into()],
            read_only: vec!["/w".into()],
            socket_dir: "/h/run".into(),
            listen: "127.0.0.1:9".into(),
            user_home: Some("/root".into()),
            allow_hosts: vec!["github.com".into()],
            git_fence: None,
        };
        let launch = Launch {
            program: "claude".into(),
            args: vec!["-p".into()],
            cwd: "/w/ws".into(),
            ..Launch::default()
        };
        let w = wrap(
            launch,
            &plan,
            Path::new("/usr/bin/bwrap"),
            Path::new("/m/moziplus"),
        );
        assert_eq!(w.program, "/usr/bin/bwrap");
        let line = w.args.join(" ");
        assert!(line.contains("--unshare-net"), "{line}");
        assert!(line.contains("--cap-drop ALL"), "{line}");
        let ro = line.find("--ro-bind /w /w").unwrap();
        let rw = line.find("--bind /w/ws /w/ws").unwrap();
        assert!(ro < rw, "the parent is mounted first: {line}");
        assert!(line.ends_with(
            "-- /m/moziplus sandbox-init --listen 127.0.0.1:9 --socket /run/moziplus/api.sock -- claude -p"
        ), "{line}");
        assert_eq!(env::get(&w.env, "MOZI_API"), Some(SOCKET_INSIDE));
    }

    #[test]
    fn a_run_goes_out_through_the_daemons_proxy_with_its_key() {
        let plan = SandboxPlan {
            listen: "0.0.0.0:8083".into(),
            allow_hosts: vec!["github.com".into()],
            ..SandboxPlan::default()
        };
        let launch = Launch {
            program: "codex".into(),
            env: vec![
                ("MOZI_RUN_KEY".into(), "mozi-k".into()),
                ("HTTPS_PROXY".into(), "http://corp-proxy:3128".into()),
            ],
            ..Launch::default()
        };
        let w = wrap(
            launch,
            &plan,
            Path::new("/usr/bin/bwrap"),
            Path::new("/m/moziplus"),
        );
        for name in ["HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "ALL_PROXY"] {
            assert_eq!(
                env::get(&w.env, name),
                Some("http://run:mozi-k@127.0.0.1:8083"),
                "{name}: an inherited proxy is unreachable inside and is replaced"
            );
        }
        assert_eq!(
            env::get(&w.env, "NO_PROXY"),
            Some("127.0.0.1,localhost,::1,127.0.0.1")
        );
        assert!(plan
            .describe()
            .contains("other hosts through the proxy: github.com"));
    }

    #[test]
    fn a_worktrees_fence_leaves_only_its_own_branch_writable() {
        let dir = tempfile::tempdir().unwrap();
        let repo = dir.path().join("repo");
        let git = |cwd: &Path, args: &[&str]| {
            let out = std::process::Command::new("git")
                .current_dir(cwd)
                .args(["-c", "user.email=t@t", "-c", "user.name=t"])
                .args(args)
                .output()
                .unwrap();
            assert!(out.status.success(), "git {args:?}: {out:?}");
        };
        std::fs::create_dir_all(&repo).unwrap();
        git(&repo, &["init", "-q", "-b", "main"]);
        git(&repo, &["commit", "-q", "--allow-empty", "-m", "base"]);
        let ws = dir.path().join("ws");
        let ws_text = ws.display().to_string();
        git(
            &repo,
            &["worktree", "add", "-q", "-b", "mozi/p/T-0001", &ws_text],
        );
        // The branch packed: its loose ref and folder are gone.
        git(&repo, &["pack-refs", "--all"]);
        let common = git_common_dir(&ws).expect("a worktree");
        let fence = git_fence(&ws, &common).expect("a branch");
        for part in [
            "config",
            "hooks",
            "refs",
            "logs",
            "HEAD",
            "worktrees",
            "packed-refs",
        ] {
            assert!(
                fence.read_only.contains(&common.join(part)),
                "{part} read-only: {fence:?}"
            );
        }
        let admin = common.join("worktrees/ws");
        assert_eq!(
            fence.read_write,
            [
                common.join("refs/heads/mozi/p"),
                common.join("logs/refs/heads/mozi/p"),
                admin.canonicalize().unwrap(),
            ]
        );
        assert!(
            common.join("refs/heads/mozi/p").is_dir(),
            "the branch's folder is made again for its next ref"
        );
        // A repository without `packed-refs` gets an empty one (valid for
        // git), which the fence then holds read-only.
        let fresh = dir.path().join("fresh");
        std::fs::create_dir_all(&fresh).unwrap();
        git(&fresh, &["init", "-q", "-b", "main"]);
        git(&fresh, &["commit", "-q", "--allow-empty", "-m", "base"]);
        let fresh_ws = dir.path().join("fresh-ws");
        let fresh_text = fresh_ws.display().to_string();
        git(
            &fresh,
            &["worktree", "add", "-q", "-b", "mozi/p/T-0002", &fresh_text],
        );
        let fresh_common = git_common_dir(&fresh_ws).expect("a worktree");
        assert!(!fresh_common.join("packed-refs").exists());
        let fence = git_fence(&fresh_ws, &fresh_common).expect("a branch");
        assert_eq!(
            std::fs::read(fresh_common.join("packed-refs")).unwrap(),
            b""
        );
        assert!(fence.read_only.contains(&fresh_common.join("packed-refs")));
        git(&fresh, &["branch", "--list", "main"]);
        // A detached checkout (a review's) has no branch to move.
        let review = dir.path().join("review");
        let review_text = review.display().to_string();
        git(
            &repo,
            &["worktree", "add", "-q", "--detach", &review_text, "main"],
        );
        assert_eq!(git_fence(&review, &common), None);
    }
}
