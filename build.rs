//! Builds the dashboard (`frontend/`, SPEC §10) into `$OUT_DIR/dashboard`,
//! which `src/dashboard.rs` embeds with `rust-embed`.
//!
//! Node is optional: when npm is missing, `MOZI_SKIP_FRONTEND=1` is set, or
//! the frontend build fails, the folder is left empty, the Rust build still
//! succeeds (with a cargo warning), and `/` serves a short page saying how to
//! build the dashboard. Without npm, a `frontend/dist/` built elsewhere
//! (`npm run build`) is embedded as it is. Cargo reruns this script only when
//! the frontend's sources, manifest, lock file or build configuration change
//! (and `frontend/dist/` when it exists); a path that does not exist is never
//! watched, since Cargo would then rerun the script on every build.

use std::path::{Path, PathBuf};
use std::process::Command;

/// Inputs of the frontend build; a change to any of them reruns this script.
const FRONTEND_INPUTS: &[&str] = &[
    "frontend/src",
    "frontend/index.html",
    "frontend/package.json",
    "frontend/package-lock.json",
    "frontend/vite.config.ts",
    "frontend/tsconfig.json",
];

/// Links the `moziplus` binary as a fixed-address executable (`-no-pie`) on
/// Linux.
///
/// `moziplus bb` is a process started many times per agent run, so its
/// start-up is on every blackboard call's critical path. As a
/// position-independent executable the dynamic loader first has to apply
/// ~19,000 relative relocations, which copies every page of `.data.rel.ro`
/// and reads the whole relocation table (~80 extra page faults per start);
/// linked at a fixed address the pointers are final and those pages are only
/// read when used. Measured with `bench/bb_cli.sh`: about 0.6 ms less per
/// `moziplus --version` and 0.9 ms less per `bb claim` (see
/// bench/RESULTS-bb.md). The price is that the binary's own code is not
/// randomised by ASLR; shared libraries, heap, stacks and mmaps still are.
///
/// Only the package's binaries: tests, benches, build scripts and
/// proc-macros keep the toolchain default. The code itself stays
/// position-independent (relocation-model is unchanged), so nothing else
/// has to be rebuilt.
fn link_fixed_address() {
    if std::env::var("CARGO_CFG_TARGET_OS").as_deref() == Ok("linux") {
        println!("cargo:rustc-link-arg-bins=-no-pie");
    }
}

fn main() {
    link_fixed_address();
    for input in FRONTEND_INPUTS {
        println!("cargo:rerun-if-changed={input}");
    }
    let prebuilt = Path::new("frontend/dist");
    if prebuilt.join("index.html").exists() {
        println!("cargo:rerun-if-changed=frontend/dist");
    }
    println!("cargo:rerun-if-env-changed=MOZI_SKIP_FRONTEND");

    let out_dir = PathBuf::from(std::env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    let dist = out_dir.join("dashboard");
    // Start empty: a stale or half-written bundle must never be embedded.
    let _ = std::fs::remove_dir_all(&dist);
    std::fs::create_dir_all(&dist).expect("create $OUT_DIR/dashboard");

    if std::env::var("MOZI_SKIP_FRONTEND").is_ok_and(|v| v == "1") {
        println!("cargo:warning=MOZI_SKIP_FRONTEND=1: the dashboard is not built; `/` serves build instructions");
        return;
    }
    let frontend = Path::new("frontend");
    if !frontend.join("package.json").exists() {
        return;
    }
    if !npm_works() && prebuilt.join("index.html").exists() {
        copy_dir(prebuilt, &dist).expect("copy frontend/dist into $OUT_DIR/dashboard");
        println!("cargo:warning=npm not found: embedding the prebuilt frontend/dist as it is");
        return;
    }
    if let Err(why) = build_frontend(frontend, &dist) {
        println!("cargo:warning=dashboard not built ({why}); `/` serves build instructions. To build it: install Node.js 20+ and npm, then cargo clean -p moziplus && cargo build");
        let _ = std::fs::remove_dir_all(&dist);
        std::fs::create_dir_all(&dist).expect("create $OUT_DIR/dashboard");
    }
}

/// Installs the locked packages when `node_modules` is missing, then
/// `npm run build` into `dist`.
///
/// `npm install --no-save` rather than `npm ci`: both install the versions in
/// `package-lock.json` without changing it, but `npm ci` refuses a lock that
/// lacks other platforms' optional packages (rollup's and esbuild's native
/// builds), which npm 11 leaves out of locks written with
/// `omit-lockfile-registry-resolved` — as on our CI machines.
fn build_frontend(frontend: &Path, dist: &Path) -> Result<(), String> {
    if !npm_works() {
        return Err("npm not found".into());
    }
    if !frontend.join("node_modules").is_dir() {
        run(
            Command::new("npm")
                .args([
                    "install",
                    "--no-save",
                    "--no-audit",
                    "--no-fund",
                    "--loglevel=error",
                ])
                .current_dir(frontend),
            "npm install",
        )?;
    }
    run(
        Command::new("npm")
            .args(["run", "build", "--silent"])
            .env("MOZI_DASHBOARD_OUT", dist)
            .current_dir(frontend),
        "npm run build",
    )?;
    if !dist.join("index.html").exists() {
        return Err("npm run build wrote no index.html".into());
    }
    Ok(())
}

fn npm_works() -> bool {
    Command::new("npm")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
}

fn copy_dir(from: &Path, to: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(to)?;
    for entry in std::fs::read_dir(from)? {
        let entry = entry?;
        let target = to.join(entry.file_name());
        if entry.file_type()?.is_dir() {
            copy_dir(&entry.path(), &target)?;
        } else {
            std::fs::copy(entry.path(), target)?;
        }
    }
    Ok(())
}

fn run(cmd: &mut Command, what: &str) -> Result<(), String> {
    let out = cmd.output().map_err(|e| format!("{what}: {e}"))?;
    if out.status.success() {
        return Ok(());
    }
    let stderr = String::from_utf8_lossy(&out.stderr);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let tail: String = format!("{stdout}\n{stderr}")
        .lines()
        .filter(|l| !l.trim().is_empty())
        .rev()
        .take(3)
        .collect::<Vec<_>>()
        .into_iter()
        .rev()
        .collect::<Vec<_>>()
        .join(" | ");
    Err(format!("{what} failed: {tail}"))
}
