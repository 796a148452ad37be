//! Any program (`runtime: command` with a per-agent `command:`, or a
//! `runtimes:` entry of `agents.yaml`): a command template whose
//! placeholders `{agent}` `{session}` `{brief}` `{timeout}` `{project}`
//! `{task}` `{home}` `{model}` are filled in. The program reaches the gateway
//! through `OPENAI_BASE_URL` / `OPENAI_API_KEY` (the run key), as the official
//! `openai` SDKs read them. Its stdout is the transcript, line by line; with
//! `json_result` the last JSON document on stdout is judged like OpenClaw's.
//! Permissions are the program's own business.

use super::{env, model_of, Launch, OutputFormat, PrepareError, RunContext};

/// Replaces `{placeholder}`s in a command template.
pub fn render(template: &[String], vars: &[(&str, String)]) -> Vec<String> {
    template
        .iter()
        .map(|part| {
            let mut s = part.clone();
            for (k, v) in vars {
                s = s.replace(&format!("{{{k}}}"), v);
            }
            s
        })
        .collect()
}

pub fn prepare(
    run: &RunContext<'_>,
    template: &[String],
    json_result: bool,
) -> Result<Launch, PrepareError> {
    let argv = render(
        template,
        &[
            ("agent", run.agent.id.clone()),
            ("session", run.session_id.to_string()),
            ("brief", run.brief_path.display().to_string()),
            ("timeout", run.timeout_secs.to_string()),
            ("project", run.project.to_string()),
            ("task", run.task.to_string()),
            ("home", run.home.display().to_string()),
            ("model", model_of(run.agent).unwrap_or_default().to_string()),
        ],
    );
    let Some((program, args)) = argv.split_first() else {
        return Err(PrepareError::Config(format!(
            "agent {} has an empty command",
            run.agent.id
        )));
    };
    Ok(Launch {
        program: program.clone(),
        args: args.to_vec(),
        env: env::base_from_process(run),
        stdin: None,
        cwd: run.home.to_path_buf(),
        format: if json_result {
            OutputFormat::OpenClawJson
        } else {
            OutputFormat::Plain
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholders_are_substituted() {
        let t: Vec<String> = [
            "run",
            "--agent",
            "{agent}",
            "--file={brief}",
            "-m",
            "{model}",
            "{unknown}",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let out = render(
            &t,
            &[
                ("agent", "a1".into()),
                ("brief", "/b.md".into()),
                ("model", "m1".into()),
            ],
        );
        assert_eq!(
            out,
            [
                "run",
                "--agent",
                "a1",
                "--file=/b.md",
                "-m",
                "m1",
                "{unknown}"
            ]
        );
    }
}
