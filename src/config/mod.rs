//! Layered, strictly validated configuration.
//!
//! Layers, later wins: built-in defaults → `config/default.yaml` →
//! `projects/<id>/config/project.yaml` → `MOZI_<SECTION>__<KEY>` environment
//! variables → command-line flags.
//!
//! Every layer is checked on its own before it is merged, so an error can name
//! the file (or variable) it came from: YAML syntax errors and unknown keys carry
//! serde's line and column, out-of-range values name the key and the line we find
//! it on. Nothing is ever silently reset to a default.
//!
//! Merging is done on YAML values (a deep merge of mappings), then the merged
//! value is deserialized into [`Config`]; this is what makes a project file that
//! sets one review key inherit the rest from `default.yaml`.
//!
//! [`schema`] holds the shape (sections, defaults); [`load`] reads, checks and
//! layers it; `validate` holds the range checks and the line finder.

pub mod agents;
pub mod allow_hosts;
pub mod budgets;
pub mod load;
pub mod schema;
mod validate;

pub use budgets::{BudgetLimit, BudgetsConfig, PeriodLimits};
pub use load::{load_project_file, merge_values, ConfigError, Layer, Source};
pub use schema::{
    parse_size, AdmissionConfig, BackupConfig, Config, DaemonConfig, ExperienceConfig, InboxConfig,
    LoggingConfig, NotificationsConfig, ProjectSettings, ReviewConfig, ServerConfig, UnstaffedSeat,
    WebhookConfig,
};
pub use validate::find_key_line;

#[cfg(test)]
mod tests;
