//! moziplus — a multi-agent orchestration daemon.
//!
//! The crate is cut along the product's seams (see `docs/ARCHITECTURE.md`).
//! Three of them are workspace crates under `crates/`, re-exported here under
//! their module names so Cargo holds their boundaries: [`blackboard`]
//! (`moziplus-store`), [`gateway`] (`moziplus-gateway`) and [`locks`]
//! (`moziplus-locks`).
//!
//! * [`home`] — where everything lives on disk (`$MOZI_HOME`).
//! * [`config`] — layered, strictly validated configuration.
//! * [`blackboard`] — one SQLite blackboard per project: tasks, their lifecycle,
//!   and every record agents and the daemon write.
//! * [`wire`] — the JSON and OpenAPI shape of the board's records (the store's
//!   model derives no serde).
//! * [`service`] — the project service: who may do what on a blackboard
//!   (identities, allowed agents, leases, holders, decisions, artifacts),
//!   called by every front door.
//! * [`registry`] — the project registry (`projects/_registry.yaml`) and the
//!   project folder tree.
//! * [`inbox`] — the append-only `inbox/daemon.jsonl` that wakes the daemon.
//! * [`backup`] — online snapshots and restore.
//! * [`daemon`] — the ticker, inbox consumer, agent runs and their supervision.
//! * [`gateway`] — the OpenAI-compatible LLM gateway (`/v1`): NVIDIA rate limiter,
//!   priority queue, circuit breaker, fallback.
//! * [`locks`] — the one lock policy: a poisoned lock is used as it is.
//! * [`http`] — the axum server: health, status, control, metrics.
//! * [`dashboard`] — the embedded web dashboard, served for `/` and the app's routes.
//! * [`cli`] — the `moziplus` command line (admin and agent CLIs).
//! * [`brief`] — agent briefs rendered from `prompt_templates/` (minijinja).
//! * [`review`] — review protocols and the verdict rule.
//! * [`skills`] — skill folders, and distilling experiences into skills.
//! * [`runtime`] — the agent runtimes (Codex, Claude Code, OpenClaw, any
//!   command, the built-in demo agent): flags, environment, transcripts.

pub mod api;
pub mod backup;
pub use moziplus_store as blackboard;
pub mod brief;
pub mod cli;
pub mod config;
pub mod daemon;
pub mod dashboard;
pub use moziplus_gateway as gateway;
pub mod home;
pub mod http;
pub mod inbox;
pub use moziplus_locks as locks;
pub mod registry;
pub mod review;
pub mod runtime;
pub mod safe_fs;
pub mod secrets;
pub mod service;
pub mod skills;
pub mod wire;
pub mod workspace;
