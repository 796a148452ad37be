//! Completion of ids: `moziplus complete-ids projects|agents|tasks`
//! (hidden) prints the ids a shell may offer, one a line, and the scripts
//! of `moziplus completions bash|zsh|fish` ([`with_ids`]) ask it for
//! projects after `--project`/`-p`, agents after `--agent` and
//! `--assignee`, and the project's open tasks for a word that starts with
//! `T` (honouring a `--home` and `--project` given earlier on the line).
//! A home or project that cannot be read offers nothing (a completion must
//! never print an error into the command line).

use clap::{Args, ValueEnum};

use crate::blackboard::{OpenMode, TaskFilter, TaskStatus};
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
    let bb = crate::registry::open_blackboard(home, &id, OpenMode::CLI).await?;
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

/// clap's completion script for `shell`, with the ids added for bash, zsh
/// and fish: bash and fish get [`BASH_IDS`] / [`FISH_IDS`] appended; zsh's
/// `_moziplus` becomes `_moziplus_clap`, called by [`ZSH_IDS`]'s own
/// `_moziplus` for anything but an id (so the script works both sourced and
/// from `$fpath`).
pub fn with_ids(shell: clap_complete::Shell, mut script: Vec<u8>) -> Vec<u8> {
    use clap_complete::Shell;
    match shell {
        Shell::Bash => script.extend_from_slice(BASH_IDS.as_bytes()),
        Shell::Fish => script.extend_from_slice(FISH_IDS.as_bytes()),
        Shell::Zsh => {
            let text = String::from_utf8_lossy(&script);
            let mut text = text.replacen("\n_moziplus() {", "\n_moziplus_clap() {", 1);
            if let Some(at) = text.rfind(ZSH_CLAP_TAIL) {
                text.truncate(at);
            }
            text.push_str(ZSH_IDS);
            script = text.into_bytes();
        }
        _ => {}
    }
    script
}

/// How clap's zsh script ends: replaced by [`ZSH_IDS`]'s own dispatch.
const ZSH_CLAP_TAIL: &str = "if [ \"$funcstack[1]\" = \"_moziplus\" ]; then";

/// The end of `moziplus completions zsh`: ids from `moziplus complete-ids`,
/// then clap's completion (`_moziplus_clap`) for everything else.
pub const ZSH_IDS: &str = r#"
# Ids (projects, agents, open tasks) from `moziplus complete-ids`.
_moziplus() {
    local cur="${words[CURRENT]}" prev="${words[CURRENT-1]}" kind="" i
    local -a home project ids
    for ((i = 2; i < CURRENT; i++)); do
        case "${words[i]}" in
            --home) home=(--home "${words[i+1]}") ;;
            --project|-p) project=(--project "${words[i+1]}") ;;
        esac
    done
    case "$prev" in
        --project|-p) kind=projects ;;
        --agent|--assignee) kind=agents ;;
        *) [[ "$cur" == T* ]] && kind=tasks ;;
    esac
    if [[ -n "$kind" ]]; then
        ids=("${(@f)$(moziplus "${home[@]}" complete-ids "$kind" "${project[@]}" 2>/dev/null)}")
        ids=(${ids:#})
        if (( ${#ids} )); then
            compadd -a ids
            return 0
        fi
    fi
    _moziplus_clap "$@"
}

if [ "$funcstack[1]" = "_moziplus" ]; then
    _moziplus "$@"
else
    compdef _moziplus moziplus
fi
"#;

/// Appended to `moziplus completions fish`: ids from `moziplus
/// complete-ids`, offered beside clap's completions.
pub const FISH_IDS: &str = r#"
# Ids (projects, agents, open tasks) from `moziplus complete-ids`.
function __moziplus_ids
    set -l tokens (commandline -opc)
    set -l home
    set -l project
    set -l n (count $tokens)
    for i in (seq 2 (math $n - 1))
        switch $tokens[$i]
            case --home
                set home --home $tokens[(math $i + 1)]
            case --project -p
                set project --project $tokens[(math $i + 1)]
        end
    end
    moziplus $home complete-ids $argv[1] $project 2>/dev/null
end
function __moziplus_task_word
    string match -q 'T*' -- (commandline -ct)
end
complete -c moziplus -s p -l project -x -a '(__moziplus_ids projects)'
complete -c moziplus -l agent -x -a '(__moziplus_ids agents)'
complete -c moziplus -l assignee -x -a '(__moziplus_ids agents)'
complete -c moziplus -n __moziplus_task_word -f -a '(__moziplus_ids tasks)'
"#;

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
