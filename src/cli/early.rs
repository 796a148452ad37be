//! Early start of `moziplus bb …`: open the blackboard while clap parses.
//!
//! An agent calls `moziplus bb` many times per step, so the whole process is
//! on its critical path. Two of its largest pieces do not depend on each
//! other: clap building and matching the command tree, and opening the
//! project's database (sqlx's connection thread opening the file, parsing the
//! schema, rebuilding the WAL index). [`bb_hint`] reads the home and project
//! from the raw arguments without clap; when it finds a `bb` command line,
//! [`super::main`] parses with clap on a second thread while the main thread
//! opens that project's blackboard, so the two overlap on a two-core machine.
//!
//! The hint is only a guess: the parsed command line decides. `bb::run`
//! compares the home and the project clap resolved (flags, then `MOZI_HOME` /
//! `MOZI_PROJECT`) with the hint's and uses the early connection only when
//! both match; otherwise it closes it and opens the right one. A wrong guess
//! costs time, never correctness. Nothing is written before that check:
//! opening only reads, and a write needs a verb that clap has parsed.

use std::ffi::OsString;
use std::path::PathBuf;

use anyhow::Context;

use super::project_config::ProjectConfig;
use crate::blackboard::{Blackboard, OpenMode};
use crate::home::Home;
use crate::registry::{self, ProjectId};

/// Where a `moziplus bb …` command line will most likely work.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BbHint {
    /// `--home`, if given (else `MOZI_HOME` or the current directory, as
    /// [`Home::resolve`] decides).
    pub home: Option<PathBuf>,
    /// `--project` / `-p`, else `MOZI_PROJECT`.
    pub project: String,
}

/// Reads the home and project of a `moziplus [--home H] bb …` command line
/// (`args` includes the program name), or `None` for any other command, a
/// non-UTF-8 argument, or no project. `env_project` is `MOZI_PROJECT`.
///
/// Accepted forms are clap's: `--home H`, `--home=H` (anywhere, it is a
/// global flag); `--project P`, `--project=P`, `-p P`, `-pP`, `-p=P` after
/// `bb`; nothing after `--` is read.
pub fn bb_hint(args: &[OsString], env_project: Option<&str>) -> Option<BbHint> {
    let mut home = None;
    let mut project = None;
    let mut in_bb = false;
    let mut it = args.iter().skip(1);
    while let Some(arg) = it.next() {
        let arg = arg.to_str()?;
        if arg == "--" {
            break;
        }
        if arg == "--home" {
            home = Some(PathBuf::from(it.next()?));
            continue;
        }
        if let Some(v) = arg.strip_prefix("--home=") {
            home = Some(PathBuf::from(v));
            continue;
        }
        if !in_bb {
            // Before the subcommand only global flags may come.
            if arg == "bb" {
                in_bb = true;
                continue;
            }
            return None;
        }
        if arg == "--project" || arg == "-p" {
            project = Some(it.next()?.to_str()?.to_string());
        } else if let Some(v) = arg.strip_prefix("--project=") {
            project = Some(v.to_string());
        } else if let Some(v) = arg.strip_prefix("-p").filter(|v| !v.is_empty()) {
            project = Some(v.strip_prefix('=').unwrap_or(v).to_string());
        }
    }
    if !in_bb {
        return None;
    }
    let project = project.or_else(|| env_project.filter(|p| !p.is_empty()).map(str::to_string))?;
    Some(BbHint { home, project })
}

/// A blackboard opened before the command line was parsed, with the home and
/// project it belongs to, and that project's configuration if the verb needs
/// it (loaded on the parsing thread meanwhile).
pub struct EarlyBlackboard {
    pub home: Home,
    pub project: ProjectId,
    pub bb: Blackboard,
    pub config: Option<ProjectConfig>,
}

/// Opens the hinted project's blackboard the way `bb::run` would, or `None`
/// when the hint does not name an active project or the open fails: the
/// normal path then repeats the open and reports the error.
pub async fn open(hint: &BbHint) -> Option<EarlyBlackboard> {
    let home = Home::resolve(hint.home.as_deref());
    let project = registry::active_project(&home, &hint.project).ok()?;
    let bb = open_blackboard(&home, &project).await.ok()?;
    Some(EarlyBlackboard {
        home,
        project,
        bb,
        config: None,
    })
}

/// Opens a project's blackboard for one `moziplus bb` command.
pub async fn open_blackboard(home: &Home, project: &ProjectId) -> anyhow::Result<Blackboard> {
    crate::registry::open_blackboard(home, project, OpenMode::Agent)
        .await
        .with_context(|| format!("project {project}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::{Cli, Command};

    fn hint(args: &[&str], env: Option<&str>) -> Option<BbHint> {
        let args: Vec<OsString> = std::iter::once("moziplus")
            .chain(args.iter().copied())
            .map(OsString::from)
            .collect();
        bb_hint(&args, env)
    }

    fn bb(home: Option<&str>, project: &str) -> Option<BbHint> {
        Some(BbHint {
            home: home.map(PathBuf::from),
            project: project.into(),
        })
    }

    #[test]
    fn reads_every_form_clap_accepts() {
        assert_eq!(
            hint(&["bb", "--project", "demo", "read"], None),
            bb(None, "demo")
        );
        assert_eq!(
            hint(&["bb", "--project=demo", "read"], None),
            bb(None, "demo")
        );
        assert_eq!(hint(&["bb", "-p", "demo", "read"], None), bb(None, "demo"));
        assert_eq!(hint(&["bb", "-pdemo", "read"], None), bb(None, "demo"));
        assert_eq!(hint(&["bb", "-p=demo", "read"], None), bb(None, "demo"));
        assert_eq!(
            hint(&["--home", "/h", "bb", "claim", "T-1", "-p", "x"], None),
            bb(Some("/h"), "x")
        );
        assert_eq!(
            hint(&["bb", "--project", "x", "--home=/h", "claim", "T-1"], None),
            bb(Some("/h"), "x")
        );
        // The last occurrence wins, as in clap.
        assert_eq!(
            hint(&["bb", "-p", "a", "-p", "b", "read"], None),
            bb(None, "b")
        );
    }

    #[test]
    fn the_flag_wins_over_the_environment() {
        assert_eq!(hint(&["bb", "read"], Some("env")), bb(None, "env"));
        assert_eq!(
            hint(&["bb", "-p", "flag", "read"], Some("env")),
            bb(None, "flag")
        );
        assert_eq!(hint(&["bb", "read"], Some("")), None);
        assert_eq!(hint(&["bb", "read"], None), None);
    }

    #[test]
    fn no_hint_for_other_commands_or_unreadable_lines() {
        assert_eq!(hint(&["project", "list"], Some("demo")), None);
        assert_eq!(hint(&["serve", "--demo"], Some("demo")), None);
        assert_eq!(hint(&["--version"], Some("demo")), None);
        assert_eq!(hint(&[], Some("demo")), None);
        // A dangling flag: clap will report it.
        assert_eq!(hint(&["--home"], Some("demo")), None);
        assert_eq!(hint(&["bb", "--project"], None), None);
        // Nothing after `--` is an option.
        assert_eq!(hint(&["bb", "comment", "--", "-p", "x"], None), None);
    }

    /// A wrong guess: the early connection is closed and the command runs on
    /// the project the parsed arguments name.
    #[test]
    fn a_wrong_guess_is_dropped_for_the_parsed_project() {
        use crate::blackboard::{OpenMode, TaskFilter};
        use clap::Parser;

        let dir = tempfile::tempdir().unwrap();
        let home = Home::new(dir.path());
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            for id in ["right", "wrong"] {
                registry::create_project(
                    &home,
                    registry::NewProject {
                        id: ProjectId::parse(id).unwrap(),
                        name: id.into(),
                        description: String::new(),
                        agents: Vec::new(),
                    },
                )
                .await
                .unwrap();
            }
            let guess = BbHint {
                home: Some(dir.path().into()),
                project: "wrong".into(),
            };
            let early = open(&guess).await.expect("the guessed project opens");
            let cli = Cli::try_parse_from([
                "moziplus",
                "bb",
                "--project",
                "right",
                "create",
                "--title",
                "t",
                "--agent",
                "op",
            ])
            .unwrap();
            let Command::Bb(args) = cli.command else {
                panic!("not a bb command line")
            };
            super::super::bb::run(&home, args, Some(early))
                .await
                .unwrap();
            for (id, tasks) in [("right", 1), ("wrong", 0)] {
                let project = ProjectId::parse(id).unwrap();
                let bb = crate::registry::open_blackboard(&home, &project, OpenMode::CLI)
                    .await
                    .unwrap();
                let found = bb.list_tasks(&TaskFilter::default()).await.unwrap();
                assert_eq!(found.len(), tasks, "tasks in project {id}");
                bb.close().await;
            }
        });
    }

    #[cfg(unix)]
    #[test]
    fn a_non_utf8_argument_gives_no_hint() {
        use std::os::unix::ffi::OsStringExt;
        let args = vec![
            OsString::from("moziplus"),
            OsString::from("bb"),
            OsString::from_vec(vec![0xff, 0xfe]),
        ];
        assert_eq!(bb_hint(&args, Some("demo")), None);
    }
}
