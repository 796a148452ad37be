//! Loading the configuration: reading each layer, checking it on its own
//! (so an error names its file, variable or flag, and the line), merging the
//! layers, and the checks that need the merged result.

use std::path::{Path, PathBuf};

use serde_yaml_ng::{Mapping, Value};

use super::schema::{Config, ProjectFile, ProjectSettings};
use super::validate::find_key_line;

/// Where a configuration layer came from, for error messages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    Defaults,
    File(PathBuf),
    Env(String),
    Flag(String),
}

impl std::fmt::Display for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Source::Defaults => write!(f, "built-in defaults"),
            Source::File(p) => write!(f, "{}", p.display()),
            Source::Env(v) => write!(f, "environment variable {v}"),
            Source::Flag(v) => write!(f, "command-line flag {v}"),
        }
    }
}

/// A configuration error. The message always names the source, and the key and
/// line where they are known.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{origin}: cannot read: {error}")]
    Read {
        origin: Source,
        error: std::io::Error,
    },
    /// YAML syntax error, unknown key or wrong type (serde names line/column).
    #[error("{origin}: {message}")]
    Invalid { origin: Source, message: String },
    /// A well-typed value outside its allowed range.
    #[error("{origin}{}: `{key}` {message}", line.map(|l| format!(" line {l}")).unwrap_or_default())]
    OutOfRange {
        origin: Source,
        key: String,
        line: Option<usize>,
        message: String,
    },
}

/// One parsed and individually validated layer.
#[derive(Debug, Clone)]
pub struct Layer {
    pub source: Source,
    pub value: Value,
}

impl Layer {
    /// Parses YAML text as a global-config layer, validating it on its own.
    pub fn from_yaml(source: Source, text: &str) -> Result<Layer, ConfigError> {
        if text.trim().is_empty() {
            return Ok(Layer {
                source,
                value: Value::Mapping(Mapping::new()),
            });
        }
        let typed: Config = serde_yaml_ng::from_str(text).map_err(|e| ConfigError::Invalid {
            origin: source.clone(),
            message: e.to_string(),
        })?;
        typed
            .validate()
            .map_err(|(key, message)| ConfigError::OutOfRange {
                line: find_key_line(text, &key),
                origin: source.clone(),
                key,
                message,
            })?;
        let value = serde_yaml_ng::from_str(text).map_err(|e| ConfigError::Invalid {
            origin: source.clone(),
            message: e.to_string(),
        })?;
        Ok(Layer { source, value })
    }

    /// Reads a file layer; a missing file is an empty layer.
    pub fn from_file(path: &Path) -> Result<Layer, ConfigError> {
        let source = Source::File(path.to_path_buf());
        match std::fs::read_to_string(path) {
            Ok(text) => Layer::from_yaml(source, &text),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Layer {
                source,
                value: Value::Mapping(Mapping::new()),
            }),
            Err(error) => Err(ConfigError::Read {
                origin: source,
                error,
            }),
        }
    }

    /// `MOZI_<SECTION>__<KEY>=value` variables (values parsed as YAML scalars).
    /// Variables without `__` (`MOZI_HOME`, `MOZI_TASK`, …) are not configuration.
    pub fn from_env_vars<I>(vars: I) -> Result<Vec<Layer>, ConfigError>
    where
        I: IntoIterator<Item = (String, String)>,
    {
        let mut layers = Vec::new();
        let mut vars: Vec<_> = vars
            .into_iter()
            .filter(|(k, _)| k.starts_with("MOZI_") && k.contains("__"))
            .collect();
        vars.sort();
        for (name, raw) in vars {
            let path: Vec<String> = name["MOZI_".len()..]
                .split("__")
                .map(|s| s.to_ascii_lowercase())
                .collect();
            layers.push(Layer::from_override(
                Source::Env(name.clone()),
                &path,
                &raw,
            )?);
        }
        Ok(layers)
    }

    /// A single `section.key = value` override (env var or flag).
    pub fn from_override(source: Source, path: &[String], raw: &str) -> Result<Layer, ConfigError> {
        let scalar: Value = serde_yaml_ng::from_str(raw).unwrap_or(Value::String(raw.to_string()));
        let mut value = scalar;
        for key in path.iter().rev() {
            let mut m = Mapping::new();
            m.insert(Value::String(key.clone()), value);
            value = Value::Mapping(m);
        }
        let typed: Config =
            serde_yaml_ng::from_value(value.clone()).map_err(|e| ConfigError::Invalid {
                origin: source.clone(),
                message: format!("{} (key `{}`)", e, path.join(".")),
            })?;
        typed
            .validate()
            .map_err(|(key, message)| ConfigError::OutOfRange {
                origin: source.clone(),
                key,
                line: None,
                message,
            })?;
        Ok(Layer { source, value })
    }
}

/// Deep-merges `overlay` into `base`: mappings merge key by key, anything else
/// replaces.
pub fn merge_values(base: &mut Value, overlay: &Value) {
    match (base, overlay) {
        (Value::Mapping(b), Value::Mapping(o)) => {
            for (k, v) in o {
                match b.get_mut(k) {
                    Some(existing) => merge_values(existing, v),
                    None => {
                        b.insert(k.clone(), v.clone());
                    }
                }
            }
        }
        (b, o) => *b = o.clone(),
    }
}

impl Config {
    /// Builds a config from layers (defaults are implied underneath).
    pub fn from_layers(layers: &[Layer]) -> Result<Config, ConfigError> {
        let mut merged = serde_yaml_ng::to_value(Config::default()).expect("defaults serialize");
        for layer in layers {
            merge_values(&mut merged, &layer.value);
        }
        let last = layers
            .last()
            .map(|l| l.source.clone())
            .unwrap_or(Source::Defaults);
        let config: Config =
            serde_yaml_ng::from_value(merged).map_err(|e| ConfigError::Invalid {
                origin: last.clone(),
                message: e.to_string(),
            })?;
        config
            .validate()
            .map_err(|(key, message)| ConfigError::OutOfRange {
                origin: last,
                key,
                line: None,
                message,
            })?;
        Ok(config)
    }

    /// The global configuration of a home: defaults, `config/default.yaml`,
    /// `MOZI_*__*` environment variables, then `overrides` (flags).
    pub fn load_global(
        home: &crate::home::Home,
        overrides: &[Layer],
    ) -> Result<Config, ConfigError> {
        Config::from_layers(&global_layers(home, overrides)?)
    }

    /// The configuration as seen by one project: the global layers with the
    /// project's section overrides in between the file and the environment.
    pub fn load_for_project(
        home: &crate::home::Home,
        project: &crate::home::ProjectId,
        overrides: &[Layer],
    ) -> Result<(Config, ProjectSettings), ConfigError> {
        let (project_layer, settings) = load_project_file(&home.project_config_file(project))?;
        let mut layers = vec![Layer::from_file(&home.default_config_file())?];
        layers.push(project_layer);
        layers.extend(Layer::from_env_vars(crate::secrets::vars())?);
        layers.extend(overrides.iter().cloned());
        let config = Config::from_layers(&layers)?;
        if let Some(cap) = settings.max_global_agents {
            if cap > config.daemon.max_global_agents {
                return Err(ConfigError::OutOfRange {
                    origin: Source::File(home.project_config_file(project)),
                    key: "max_global_agents".into(),
                    line: None,
                    message: format!(
                        "({cap}) exceeds the global daemon.max_global_agents ({})",
                        config.daemon.max_global_agents
                    ),
                });
            }
        }
        Ok((config, settings))
    }
}

fn global_layers(home: &crate::home::Home, overrides: &[Layer]) -> Result<Vec<Layer>, ConfigError> {
    let mut layers = vec![Layer::from_file(&home.default_config_file())?];
    layers.extend(Layer::from_env_vars(crate::secrets::vars())?);
    layers.extend(overrides.iter().cloned());
    Ok(layers)
}

/// Parses `project.yaml`: validates it with line numbers, returns the section
/// overrides as a layer plus the project-only settings.
///
/// Over 100 lines on purpose: one check per project-only key, in the
/// file's order, each naming its key and line.
pub fn load_project_file(path: &Path) -> Result<(Layer, ProjectSettings), ConfigError> {
    let source = Source::File(path.to_path_buf());
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(error) => {
            return Err(ConfigError::Read {
                origin: source,
                error,
            })
        }
    };
    if text.trim().is_empty() {
        return Ok((
            Layer {
                source,
                value: Value::Mapping(Mapping::new()),
            },
            ProjectSettings::default(),
        ));
    }
    let file: ProjectFile = serde_yaml_ng::from_str(&text).map_err(|e| ConfigError::Invalid {
        origin: source.clone(),
        message: e.to_string(),
    })?;
    let out_of_range = |key: &str, message: String| ConfigError::OutOfRange {
        origin: source.clone(),
        key: key.to_string(),
        line: find_key_line(&text, key),
        message,
    };
    if let Some(cap) = file.max_global_agents {
        if cap == 0 {
            return Err(out_of_range(
                "max_global_agents",
                "must be at least 1".into(),
            ));
        }
    }
    if let Some(agents) = &file.agents {
        for a in agents {
            if !crate::blackboard::ids::is_valid_agent_id(a) {
                return Err(out_of_range(
                    "agents",
                    format!("has an invalid agent id {a:?}"),
                ));
            }
        }
    }
    if file
        .workspace
        .as_ref()
        .is_some_and(|w| w.as_os_str().is_empty())
    {
        return Err(out_of_range(
            "workspace",
            "must name a directory (absolute, or relative to the project folder)".into(),
        ));
    }
    let mut all: Value = serde_yaml_ng::from_str(&text).map_err(|e| ConfigError::Invalid {
        origin: source.clone(),
        message: e.to_string(),
    })?;
    let mut sections = Mapping::new();
    if let Value::Mapping(m) = &mut all {
        for key in ["daemon", "review", "experience"] {
            if let Some(v) = m.remove(key) {
                sections.insert(Value::String(key.into()), v);
            }
        }
    }
    // Validate the section overrides as a global layer (range checks), but
    // report the project file's own line numbers.
    let sections_value = Value::Mapping(sections);
    let typed: Config =
        serde_yaml_ng::from_value(sections_value.clone()).map_err(|e| ConfigError::Invalid {
            origin: source.clone(),
            message: e.to_string(),
        })?;
    if let Err((key, message)) = typed.validate() {
        return Err(ConfigError::OutOfRange {
            line: find_key_line(&text, &key),
            origin: source,
            key,
            message,
        });
    }
    let settings = ProjectSettings {
        max_global_agents: file.max_global_agents,
        agents: file.agents,
        context: file.context,
        workspace: file.workspace,
        schedules: file.schedules.unwrap_or_default(),
    };
    Ok((
        Layer {
            source,
            value: sections_value,
        },
        settings,
    ))
}
