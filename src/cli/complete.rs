//! Completion of ids: `moziplus complete-ids projects|agents|tasks`
//! (hidden) prints the ids a shell may offer, one a line, and the bash
//! script of `moziplus completions bash` ends with [`BASH_IDS`], which asks
//! it for projects after `--project`/`-p`, agents after `--agent` and
//! `--assignee`, and the project's open tasks for a word that starts with
//! `T`. A home or project that cannot be read offers nothing (a completion
//! must never print an error into the command line).

use clap::{Args, ValueEnum};

use crate::blackboard::{Blackboard, OpenMode, TaskFilter, TaskStatus};
use crate::config::agents::AgentsFile;
use crate::home::Home;

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum IdKind {
    Projects,
    Agents,
    Tasks,
}

#[derive(Debug, Args)]
pub struct CompleteIdsArgs {
    what: IdKind,
    /// The project whose tasks (default: $MOZI_PROJECT).
    #[arg(long, short = 'p', env = "MOZI_PROJECT")]
    project: Option<String>,
}

/// Open tasks offered, most urgent first.
const MAX_TASKS: i64 = 500;

pub async fn run(home: &Home, args: CompleteIdsArgs) -> anyhow::Result<()> {
    let ids: Vec<String> = match args.what {
        IdKind::Projects => crate::registry::load(home)
            .map(|list| {
                list.into_iter()
                    .filter(|p| p.status == crate::registry::ProjectStatus::Active)
                    .map(|p| p.id)
                    .collect()
            })
            .unwrap_or_default(),
        IdKind::Agents => AgentsFile::load(&home.agents_file())
            .map(|f| f.agents.into_iter().map(|a| a.id).collect())
            .unwrap_or_default(),
        IdKind::Tasks => match args.project {
            Some(p) => open_tasks(home, &p).await.unwrap_or_default(),
            None => Vec::new(),
        },
    };
    let mut text = ids.join("\n");
    if !text.is_empty() {
        text.push('\n');
    }
    use std::io::Write;
    match std::io::stdout().lock().write_all(text.as_bytes()) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => Err(e.into()),
        _ => Ok(()),
    }
}

async fn open_tasks(home: &Home, project: &str) -> anyhow::Result<Vec<String>> {
    let id = crate::registry::active_project(home, project)?;
    let bb = Blackboard::open(&home.blackboard_file(&id), id.as_str(), OpenMode::CLI).await?;
    let filter = TaskFilter {
        statuses: vec![
            TaskStatus::Pending,
            TaskStatus::Working,
            TaskStatus::Review,
            TaskStatus::Blocked,
            TaskStatus::Failed,
        ],
        limit: MAX_TASKS,
        ..TaskFilter::default()
    };
    let tasks = bb.list_tasks(&filter).await?;
    bb.close().await;
    Ok(tasks.into_iter().map(|t| t.id).collect())
}

/// Appended to `moziplus completions bash`: ids from `moziplus complete-ids`,
/// then clap's own completion (`_moziplus`) for everything else.
pub const BASH_IDS: &str = r#"
# Ids (projects, agents, open tasks) from `moziplus complete-ids`.
_moziplus_ids() {
    local cur="${COMP_WORDS[COMP_CWORD]}" prev="${COMP_WORDS[COMP_CWORD-1]}"
    local i home=() project=()
    for ((i = 1; i < COMP_CWORD; i++)); do
        case "${COMP_WORDS[i]}" in
            --home) home=(--home "${COMP_WORDS[i+1]}") ;;
            --project|-p) project=(--project "${COMP_WORDS[i+1]}") ;;
        esac
    done
    local kind=""
    case "$prev" in
        --project|-p) kind=projects ;;
        --agent|--assignee) kind=agents ;;
        *) [[ "$cur" == T* ]] && kind=tasks ;;
    esac
    if [[ -n "$kind" ]]; then
        local ids
        ids="$(moziplus "${home[@]}" complete-ids "$kind" "${project[@]}" 2>/dev/null)"
        if [[ -n "$ids" ]]; then
            COMPREPLY=($(compgen -W "$ids" -- "$cur"))
            return 0
        fi
    fi
    _moziplus "$@"
}
complete -F _moziplus_ids -o bashdefault -o default moziplus
"#;
