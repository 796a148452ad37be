//! The dashboard's API types (`frontend/src/api.gen.ts`) are generated from
//! the daemon's OpenAPI document by `openapi-typescript` (pinned in
//! `frontend/package.json`); this test fails when the committed file is not
//! what the generator makes of the document this build serves.
//!
//! It starts `moziplus serve` in a temporary home, reads
//! `/api/openapi.json`, runs the generator on it and compares. To regenerate
//! after an API change: `MOZI_UPDATE_API_TYPES=1 cargo test --test
//! dashboard_api_types`, then commit `frontend/src/api.gen.ts` (never edit it
//! by hand).
//!
//! `scripts/test.sh` installs the frontend's packages and exports
//! `MOZI_OPENAPI_TS`; without the generator the test skips with a loud
//! message, unless `CI` is set: then it fails.

mod support;

use std::path::{Path, PathBuf};
use std::process::Command;

use support::{Daemon, TestHome};

const REPO: &str = env!("CARGO_MANIFEST_DIR");

/// The generator's script, or `None` (after a loud message) outside CI.
fn generator() -> Option<PathBuf> {
    let path = std::env::var_os("MOZI_OPENAPI_TS")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(REPO).join("frontend/node_modules/.bin/openapi-typescript"));
    if path.exists() {
        return Some(path);
    }
    let msg = format!(
        "openapi-typescript missing at {} — run scripts/test.sh (it installs the frontend's packages)",
        path.display()
    );
    if std::env::var_os("CI").is_some() {
        panic!("{msg}");
    }
    eprintln!("\n!!!!!!!!!! SKIPPED dashboard API types check: {msg} !!!!!!!!!!\n");
    None
}

#[test]
fn generated_api_types_match_the_openapi_document() {
    let Some(generator) = generator() else { return };
    let home = TestHome::with_config("", "");
    let d = Daemon::start(&home);
    let (code, spec) = d.get("/api/openapi.json").expect("GET /api/openapi.json");
    assert_eq!(code, 200, "{spec}");
    serde_json::from_str::<serde_json::Value>(&spec).expect("the document is JSON");
    d.stop();

    let spec_path = home.path().join("openapi.json");
    std::fs::write(&spec_path, &spec).unwrap();
    let out_path = home.path().join("api.gen.ts");
    let out = Command::new(&generator)
        .arg(&spec_path)
        .arg("-o")
        .arg(&out_path)
        .current_dir(Path::new(REPO).join("frontend"))
        .output()
        .expect("run openapi-typescript");
    assert!(
        out.status.success(),
        "openapi-typescript failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let fresh = std::fs::read_to_string(&out_path).unwrap();
    let committed_path = Path::new(REPO).join("frontend/src/api.gen.ts");
    if std::env::var_os("MOZI_UPDATE_API_TYPES").is_some_and(|v| v == "1") {
        std::fs::write(&committed_path, &fresh).unwrap();
        eprintln!("wrote {}", committed_path.display());
        return;
    }
    let committed = std::fs::read_to_string(&committed_path).unwrap_or_default();
    if committed != fresh {
        let first = committed
            .lines()
            .zip(fresh.lines())
            .position(|(a, b)| a != b)
            .unwrap_or_else(|| committed.lines().count().min(fresh.lines().count()));
        panic!(
            "frontend/src/api.gen.ts is stale (first difference at line {}: committed {:?}, generated {:?}); \
             regenerate with MOZI_UPDATE_API_TYPES=1 cargo test --test dashboard_api_types and commit it",
            first + 1,
            committed.lines().nth(first).unwrap_or("<end>"),
            fresh.lines().nth(first).unwrap_or("<end>"),
        );
    }
}
