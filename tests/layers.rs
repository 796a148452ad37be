//! The layer rules of docs/ARCHITECTURE.md ("Layer rules") that Cargo
//! cannot check, checked on the sources in the spirit of rust-analyzer's
//! tidy tests. The store and the gateway are workspace crates (`crates/`),
//! re-exported by `src/lib.rs` as `blackboard` and `gateway`: a crate cannot
//! import the crate that depends on it, so their imports upward are refused
//! by the compiler and not parsed here. What remains is read from `src/`:
//! every `crate::` path (and every `super::` path that climbs out of its
//! top-level module) is an import of the top-level module it names, comments
//! and string literals aside. The rules are read from the document itself,
//! so the document and the check cannot drift apart:
//!
//! * `` - `m` must not import `a`, `b::C` — why `` — no path of `m` starts
//!   with `a` or `b::C`;
//! * `` - `m` may import only `a`, `b::C` — why `` — every path of `m` into
//!   another module starts with one of them;
//! * `` - `m` imports no other module — why ``;
//! * `` - `m` must not contain `sqlx` — why `` — the text does not appear in
//!   `m`'s code (comments and string literals aside); `m` may be a crate's
//!   (its files under `crates/`), and `` `m` but `m::x` `` leaves `m::x` out;
//! * `` - every module but `h` must not contain `x` — why `` — the same for
//!   every module of `src/` except the ones named.
//!
//! A second test builds the graph of imports between top-level modules from
//! the same paths and refuses any cycle.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The top-level modules, from `src/lib.rs`: its `mod`s and the workspace
/// crates it re-exports (`pub use moziplus_store as blackboard;`).
fn modules() -> BTreeSet<String> {
    let mut all: BTreeSet<String> = crates().into_keys().collect();
    let lib = std::fs::read_to_string(root().join("src/lib.rs")).expect("src/lib.rs");
    let code = strip(&lib);
    all.extend(code.lines().filter_map(|l| {
        let l = l.trim();
        let rest = l
            .strip_prefix("pub mod ")
            .or_else(|| l.strip_prefix("mod "))?;
        Some(rest.trim_end_matches(';').trim().to_string())
    }));
    all
}

/// The workspace crates `src/lib.rs` re-exports as top-level modules, by
/// module name: `pub use moziplus_store as blackboard;` is `crates/store`.
fn crates() -> BTreeMap<String, PathBuf> {
    let lib = std::fs::read_to_string(root().join("src/lib.rs")).expect("src/lib.rs");
    let code = strip(&lib);
    code.lines()
        .filter_map(|l| {
            let rest = l.trim().strip_prefix("pub use moziplus_")?;
            let (krate, name) = rest.trim_end_matches(';').split_once(" as ")?;
            let dir = root().join("crates").join(krate.trim().replace('_', "-"));
            assert!(
                dir.join("src/lib.rs").is_file(),
                "src/lib.rs re-exports moziplus_{krate}, which is no crate at {}",
                dir.display()
            );
            Some((name.trim().to_string(), dir))
        })
        .collect()
}

/// One source file of a top-level module.
struct File {
    /// Relative to the repository, for messages.
    path: String,
    /// The module path of the file (`["daemon", "ticker"]`).
    module: Vec<String>,
    /// The code, comments and string literals blanked (lines kept).
    code: String,
    /// In a workspace crate: its imports are Cargo's to check.
    in_crate: bool,
}

impl File {
    fn top(&self) -> &str {
        &self.module[0]
    }
    /// The file is `module` or inside it (`cli::mcp` holds `cli/mcp/board.rs`).
    fn within(&self, module: &str) -> bool {
        let want: Vec<&str> = module.split("::").collect();
        self.module.len() >= want.len() && self.module.iter().zip(&want).all(|(a, b)| a == b)
    }
    fn line_of(&self, offset: usize) -> usize {
        self.code[..offset].matches('\n').count() + 1
    }
}

fn files(modules: &BTreeSet<String>) -> Vec<File> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        for entry in std::fs::read_dir(dir).expect("read src") {
            let path = entry.expect("dir entry").path();
            if path.is_dir() {
                walk(&path, out);
            } else if path.extension().is_some_and(|e| e == "rs") {
                out.push(path);
            }
        }
    }
    let mut out = Vec::new();
    // The main crate's `src/`, then each re-exported crate's `src/` under
    // its module name (its `lib.rs` is the module itself).
    let mut trees = vec![(root().join("src"), None)];
    trees.extend(
        crates()
            .into_iter()
            .map(|(name, dir)| (dir.join("src"), Some(name))),
    );
    for (src, krate) in trees {
        let mut paths = Vec::new();
        walk(&src, &mut paths);
        paths.sort();
        for path in paths {
            let rel = path.strip_prefix(&src).expect("under src");
            let mut module: Vec<String> = krate.iter().cloned().collect();
            module.extend(
                rel.with_extension("")
                    .components()
                    .map(|c| c.as_os_str().to_string_lossy().into_owned()),
            );
            if module.last().is_some_and(|m| m == "mod" || m == "lib") {
                module.pop();
            }
            // `lib.rs`, `main.rs` and build helpers are not in a module.
            if module.is_empty() || !modules.contains(&module[0]) {
                continue;
            }
            let text = std::fs::read_to_string(&path).expect("read source");
            out.push(File {
                path: path
                    .strip_prefix(root())
                    .expect("under the repository")
                    .display()
                    .to_string(),
                module,
                code: strip(&text),
                in_crate: krate.is_some(),
            });
        }
    }
    out
}

/// Blanks comments, string and character literals (keeping newlines), so
/// what remains is code: a path in a doc comment or an error message is not
/// an import, and `sqlx=warn` in a log filter is not SQL.
fn strip(text: &str) -> String {
    let b = text.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let blank = |out: &mut Vec<u8>, c: u8| out.push(if c == b'\n' { b'\n' } else { b' ' });
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        let next = b.get(i + 1).copied();
        if c == b'/' && next == Some(b'/') {
            while i < b.len() && b[i] != b'\n' {
                out.push(b' ');
                i += 1;
            }
        } else if c == b'/' && next == Some(b'*') {
            let mut depth = 0;
            while i < b.len() {
                if b[i] == b'/' && b.get(i + 1) == Some(&b'*') {
                    depth += 1;
                    out.extend(b"  ");
                    i += 2;
                } else if b[i] == b'*' && b.get(i + 1) == Some(&b'/') {
                    depth -= 1;
                    out.extend(b"  ");
                    i += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    blank(&mut out, b[i]);
                    i += 1;
                }
            }
        } else if (c == b'r' || (c == b'b' && next == Some(b'r')))
            && !prev_is_ident(b, i)
            && raw_string_start(b, if c == b'b' { i + 1 } else { i }).is_some()
        {
            let start = if c == b'b' { i + 1 } else { i };
            let hashes = raw_string_start(b, start).expect("checked");
            let body = start + 1 + hashes + 1;
            out.extend(std::iter::repeat_n(b' ', body - i));
            i = body;
            let close: Vec<u8> = std::iter::once(b'"')
                .chain(std::iter::repeat_n(b'#', hashes))
                .collect();
            while i < b.len() && !b[i..].starts_with(&close) {
                blank(&mut out, b[i]);
                i += 1;
            }
            out.extend(std::iter::repeat_n(b' ', close.len().min(b.len() - i)));
            i += close.len();
        } else if c == b'"' {
            out.push(b' ');
            i += 1;
            while i < b.len() && b[i] != b'"' {
                if b[i] == b'\\' {
                    out.push(b' ');
                    i += 1;
                }
                if i < b.len() {
                    blank(&mut out, b[i]);
                    i += 1;
                }
            }
            out.push(b' ');
            i += 1;
        } else if c == b'\'' {
            // A character literal ('x', '\n', '\u{1F600}') or a lifetime.
            let end = if next == Some(b'\\') {
                b[i + 2..]
                    .iter()
                    .position(|&x| x == b'\'')
                    .map(|p| i + 2 + p)
            } else {
                // One (possibly multi-byte) character, then a quote.
                let ch_len = text[i + 1..].chars().next().map_or(0, char::len_utf8);
                (b.get(i + 1 + ch_len) == Some(&b'\'')).then_some(i + 1 + ch_len)
            };
            match end {
                Some(end) => {
                    out.extend(std::iter::repeat_n(b' ', end + 1 - i));
                    i = end + 1;
                }
                None => {
                    out.push(c);
                    i += 1;
                }
            }
        } else {
            out.push(c);
            i += 1;
        }
    }
    // Blanking replaced whole UTF-8 sequences inside literals and comments
    // byte by byte; code outside them is copied unchanged.
    String::from_utf8_lossy(&out).into_owned()
}

fn prev_is_ident(b: &[u8], i: usize) -> bool {
    i > 0 && (b[i - 1].is_ascii_alphanumeric() || b[i - 1] == b'_')
}

/// At `r`: the number of `#` of a raw string literal starting here.
fn raw_string_start(b: &[u8], i: usize) -> Option<usize> {
    if b.get(i) != Some(&b'r') {
        return None;
    }
    let hashes = b[i + 1..].iter().take_while(|&&c| c == b'#').count();
    (b.get(i + 1 + hashes) == Some(&b'"')).then_some(hashes)
}

/// One import: the path below the crate root (`daemon::ticker::tick`) and
/// where it was written.
#[derive(Debug, Clone)]
struct Import {
    path: String,
    file: String,
    line: usize,
}

impl Import {
    fn target(&self) -> &str {
        self.path.split("::").next().unwrap_or("")
    }
}

/// Every path of `file` that reaches another top-level module (none for a
/// workspace crate's file: its `crate::` is its own crate, and it cannot
/// name the main crate).
fn imports(file: &File, modules: &BTreeSet<String>) -> Vec<Import> {
    if file.in_crate {
        return Vec::new();
    }
    let code = file.code.as_bytes();
    // Lines after the first inline `mod x {` (test modules sit at the end of
    // a file) are one module deeper for `super::`.
    let inline_at = find_inline_mod(&file.code);
    let mut out = Vec::new();
    let mut i = 0;
    while i < code.len() {
        let at_word = !prev_is_ident(code, i) && (i == 0 || code[i - 1] != b'$');
        let rest = &file.code[i..];
        let (base, after): (Vec<String>, usize) = if at_word && rest.starts_with("crate::") {
            (Vec::new(), i + "crate::".len())
        } else if at_word && rest.starts_with("super::") && (i == 0 || code[i - 1] != b':') {
            let mut k = 0;
            let mut j = i;
            while file.code[j..].starts_with("super::") {
                k += 1;
                j += "super::".len();
            }
            let mut scope = file.module.clone();
            if inline_at.is_some_and(|at| i > at) {
                scope.push("<inline>".into());
            }
            if k < scope.len() {
                // Stays inside its top-level module (or is a compile error).
                i = j;
                continue;
            }
            (Vec::new(), j)
        } else {
            i += 1;
            continue;
        };
        let mut paths = Vec::new();
        let end = parse_tree(&file.code, after, base, &mut paths);
        for p in paths {
            let p = p.strip_suffix("::self").unwrap_or(&p).to_string();
            let top = p.split("::").next().unwrap_or("");
            if modules.contains(top) && top != file.top() {
                out.push(Import {
                    path: p,
                    file: file.path.clone(),
                    line: file.line_of(i),
                });
            }
        }
        i = end.max(i + 1);
    }
    out
}

fn find_inline_mod(code: &str) -> Option<usize> {
    let mut offset = 0;
    for line in code.split_inclusive('\n') {
        let t = line.trim();
        let t = t.strip_prefix("pub ").unwrap_or(t);
        if let Some(rest) = t.strip_prefix("mod ") {
            if rest.trim_end().ends_with('{') {
                return Some(offset);
            }
        }
        offset += line.len();
    }
    None
}

fn skip_ws(s: &[u8], mut i: usize) -> usize {
    while i < s.len() && s[i].is_ascii_whitespace() {
        i += 1;
    }
    i
}

/// Parses a path or a `{…}` group at `i`, pushing every full path (with
/// `prefix` in front) to `out`; returns where it ended.
fn parse_tree(code: &str, i: usize, prefix: Vec<String>, out: &mut Vec<String>) -> usize {
    let s = code.as_bytes();
    let mut i = skip_ws(s, i);
    let mut path = prefix;
    loop {
        if i < s.len() && s[i] == b'{' {
            i += 1;
            loop {
                i = skip_ws(s, i);
                if i >= s.len() {
                    return i;
                }
                if s[i] == b'}' {
                    return i + 1;
                }
                if s[i] == b',' {
                    i += 1;
                    continue;
                }
                let before = i;
                i = parse_tree(code, i, path.clone(), out);
                i = skip_ws(s, i);
                // `name as alias`
                if code[i..].starts_with("as ") {
                    i = skip_ws(s, i + 3);
                    while i < s.len() && (s[i].is_ascii_alphanumeric() || s[i] == b'_') {
                        i += 1;
                    }
                }
                if i == before {
                    i += 1;
                }
            }
        }
        if i < s.len() && s[i] == b'*' {
            path.push("*".into());
            out.push(path.join("::"));
            return i + 1;
        }
        let start = i;
        while i < s.len() && (s[i].is_ascii_alphanumeric() || s[i] == b'_') {
            i += 1;
        }
        if i == start {
            if !path.is_empty() {
                out.push(path.join("::"));
            }
            return i;
        }
        path.push(code[start..i].to_string());
        if code[i..].starts_with("::") {
            i += 2;
            i = skip_ws(s, i);
            continue;
        }
        out.push(path.join("::"));
        return i;
    }
}

#[derive(Debug, PartialEq)]
enum Kind {
    MustNotImport,
    MayImportOnly,
    MustNotContain,
}

#[derive(Debug)]
struct Rule {
    subjects: Vec<String>,
    /// Parts of the subjects the rule leaves out (`` `m` but `m::x` ``).
    except: Vec<String>,
    /// "every module but …": the subjects are not named one by one.
    every: bool,
    kind: Kind,
    items: Vec<String>,
    text: String,
}

fn backticked(s: &str) -> Vec<String> {
    s.split('`')
        .enumerate()
        .filter(|(i, _)| i % 2 == 1)
        .map(|(_, t)| t.to_string())
        .collect()
}

/// The rules of the "Layer rules" section of docs/ARCHITECTURE.md.
fn rules(modules: &BTreeSet<String>) -> Vec<Rule> {
    let doc =
        std::fs::read_to_string(root().join("docs/ARCHITECTURE.md")).expect("ARCHITECTURE.md");
    let section = doc
        .split("\n## ")
        .find(|s| s.starts_with("Layer rules"))
        .expect("docs/ARCHITECTURE.md has a \"## Layer rules\" section");
    let mut out = Vec::new();
    for line in section.lines().filter(|l| l.starts_with("- ")) {
        let rule_part = line.split(" — ").next().unwrap_or(line);
        let (kind, verb) = [
            (Kind::MustNotImport, " must not import "),
            (Kind::MayImportOnly, " may import only "),
            (Kind::MayImportOnly, " imports no other module"),
            (Kind::MustNotContain, " must not contain "),
        ]
        .into_iter()
        .find(|(_, v)| rule_part.contains(v))
        .unwrap_or_else(|| panic!("layer rule without a known verb: {line}"));
        let (subject, items) = rule_part.split_once(verb).expect("verb found");
        let leaf = verb == " imports no other module";
        let mut except = Vec::new();
        let every = subject
            .trim_start_matches("- ")
            .starts_with("every module but");
        let subjects = if every {
            let except = backticked(subject);
            modules
                .iter()
                .filter(|m| !except.contains(m))
                .cloned()
                .collect()
        } else if let Some((named, left_out)) = subject.split_once(" but ") {
            except = backticked(left_out);
            backticked(named)
        } else {
            backticked(subject)
        };
        assert!(
            every || subjects.len() == 1,
            "a rule names one module: {line}"
        );
        let items = backticked(items);
        assert!(
            leaf || !items.is_empty(),
            "a rule names what it refuses: {line}"
        );
        out.push(Rule {
            subjects,
            except,
            every,
            kind,
            items,
            text: line.to_string(),
        });
    }
    out
}

fn covers(prefix: &str, path: &str) -> bool {
    path == prefix || path.starts_with(&format!("{prefix}::"))
}

#[test]
fn every_module_follows_its_layer_rules() {
    let modules = modules();
    let rules = rules(&modules);
    let files = files(&modules);
    let crates = crates();
    let mut broken = Vec::new();
    let mut ruled = BTreeSet::new();
    for rule in &rules {
        for subject in &rule.subjects {
            // An import rule on a crate would check nothing: Cargo holds it.
            if rule.every
                && rule.kind != Kind::MustNotContain
                && crates.contains_key(subject.as_str())
            {
                continue;
            }
            assert!(
                rule.kind == Kind::MustNotContain || !crates.contains_key(subject.as_str()),
                "docs/ARCHITECTURE.md has an import rule for `{subject}`, a workspace crate \
                 whose imports Cargo checks (its Cargo.toml lists what it may use): {}",
                rule.text
            );
            // A subject is a top-level module or one inside it (`cli::mcp`);
            // a rule about a module that does not exist is an error, so a
            // rule cannot go on checking nothing.
            assert!(
                files.iter().any(|f| f.within(subject)),
                "docs/ARCHITECTURE.md has a rule for `{subject}`, which is no module of \
                 src/: {}",
                rule.text
            );
            ruled.insert(subject.clone());
            for file in files
                .iter()
                .filter(|f| f.within(subject) && !rule.except.iter().any(|x| f.within(x)))
            {
                match rule.kind {
                    Kind::MustNotContain => {
                        for item in &rule.items {
                            for (at, _) in file.code.match_indices(item.as_str()) {
                                broken.push(format!(
                                    "{}:{}: contains `{item}`\n    rule: {}",
                                    file.path,
                                    file.line_of(at),
                                    rule.text
                                ));
                            }
                        }
                    }
                    Kind::MustNotImport | Kind::MayImportOnly => {
                        for imp in imports(file, &modules) {
                            let listed = rule.items.iter().any(|p| covers(p, &imp.path));
                            let refused = match rule.kind {
                                Kind::MustNotImport => listed,
                                _ => !listed,
                            };
                            if refused {
                                broken.push(format!(
                                    "{}:{}: imports `crate::{}`\n    rule: {}",
                                    imp.file, imp.line, imp.path, rule.text
                                ));
                            }
                        }
                    }
                }
            }
        }
    }
    // The crates need no import rule: Cargo refuses their imports upward.
    let unruled: Vec<&String> = modules
        .difference(&ruled)
        .filter(|m| !crates.contains_key(m.as_str()))
        .collect();
    assert!(
        unruled.is_empty(),
        "docs/ARCHITECTURE.md (Layer rules) states no rule for {unruled:?}: say what each \
         module must not import"
    );
    assert!(
        broken.is_empty(),
        "{} import(s) against the layer rules of docs/ARCHITECTURE.md:\n{}",
        broken.len(),
        broken.join("\n")
    );
}

#[test]
fn no_import_cycle_between_top_level_modules() {
    let modules = modules();
    let mut edges: BTreeMap<String, BTreeMap<String, Import>> = BTreeMap::new();
    for file in files(&modules) {
        for imp in imports(&file, &modules) {
            edges
                .entry(file.top().to_string())
                .or_default()
                .entry(imp.target().to_string())
                .or_insert(imp);
        }
    }
    // Depth-first search; a back edge closes a cycle.
    fn visit(
        m: &str,
        edges: &BTreeMap<String, BTreeMap<String, Import>>,
        state: &mut BTreeMap<String, u8>,
        stack: &mut Vec<String>,
        cycles: &mut Vec<Vec<String>>,
    ) {
        state.insert(m.to_string(), 1);
        stack.push(m.to_string());
        for next in edges.get(m).into_iter().flat_map(|e| e.keys()) {
            match state.get(next.as_str()).copied().unwrap_or(0) {
                0 => visit(next, edges, state, stack, cycles),
                1 => {
                    let from = stack.iter().position(|s| s == next).expect("on stack");
                    let mut cycle = stack[from..].to_vec();
                    cycle.push(next.clone());
                    cycles.push(cycle);
                }
                _ => {}
            }
        }
        stack.pop();
        state.insert(m.to_string(), 2);
    }
    let mut state = BTreeMap::new();
    let mut cycles = Vec::new();
    for m in &modules {
        if !state.contains_key(m.as_str()) {
            visit(m, &edges, &mut state, &mut Vec::new(), &mut cycles);
        }
    }
    let described: Vec<String> = cycles
        .iter()
        .map(|c| {
            let steps: Vec<String> = c
                .windows(2)
                .map(|w| {
                    let imp = &edges[&w[0]][&w[1]];
                    format!(
                        "  {} → {} ({}:{}: crate::{})",
                        w[0], w[1], imp.file, imp.line, imp.path
                    )
                })
                .collect();
            format!("{}\n{}", c.join(" → "), steps.join("\n"))
        })
        .collect();
    assert!(
        cycles.is_empty(),
        "import cycles between top-level modules:\n{}",
        described.join("\n")
    );
    // The graph is not empty: the parse found the imports it checks.
    assert!(
        edges
            .get("daemon")
            .is_some_and(|e| e.contains_key("blackboard")),
        "the import graph lacks daemon → blackboard: the source parse is broken"
    );
}

/// The parse itself: the shapes of paths the rules depend on.
#[test]
fn the_source_parse_finds_every_shape_of_import() {
    let modules: BTreeSet<String> = ["a", "b", "c", "d"].map(String::from).into();
    let file = |module: &[&str], text: &str| File {
        path: "src/x.rs".into(),
        module: module.iter().map(|s| s.to_string()).collect(),
        code: strip(text),
        in_crate: false,
    };
    let paths =
        |f: &File| -> Vec<String> { imports(f, &modules).into_iter().map(|i| i.path).collect() };
    let f = file(
        &["a", "x"],
        "use crate::b::{self, Thing};\nuse crate::{c::{One, two::Three as T}, d::*};\n\
         fn f() { crate::b::call(); let s = \"crate::c::in_a_string\"; } // crate::d::in_a_comment\n\
         /* crate::d::block */ let r = r#\"crate::d::raw\"#; let c = '\"'; let u = crate::a::own;\n",
    );
    assert_eq!(
        paths(&f),
        [
            "b",
            "b::Thing",
            "c::One",
            "c::two::Three",
            "d::*",
            "b::call"
        ]
    );
    // `super::` that climbs out of the top-level module is an import.
    let f = file(
        &["a", "x"],
        "use super::super::b::Item;\nuse super::sibling;\n",
    );
    assert_eq!(paths(&f), ["b::Item"]);
    // Inside the trailing test module, one level deeper.
    let f = file(
        &["a", "x"],
        "fn f() {}\n#[cfg(test)]\nmod tests {\n    use super::super::sibling;\n    fn t() { super::super::super::c::f(); }\n}\n",
    );
    assert_eq!(paths(&f), ["c::f"]);
    // Lifetimes are not character literals.
    let f = file(
        &["a"],
        "fn f<'a>(x: &'a str) -> crate::b::T<'a> { todo() }\n",
    );
    assert_eq!(paths(&f), ["b::T"]);
}
