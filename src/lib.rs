//! moziplus — a multi-agent orchestration daemon.
//!
//! The crate is cut along the product's seams (see `docs/ARCHITECTURE.md`):
//!
//! * [`home`] — where everything lives on disk (`$MOZI_HOME`).
//! * [`config`] — layered, strictly validated configuration.
//! * [`blackboard`] — one SQLite blackboard per project: tasks, their lifecycle,
//!   and every record agents and the daemon write.
//! * [`wire`] — the JSON and OpenAPI shape of the board's records (the store's
//!   model carries no serde).
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
pub mod blackboard;
pub mod brief;
pub mod cli;
pub mod config;
pub mod daemon;
pub mod dashboard;
pub mod gateway;
pub mod home;
pub mod http;
pub mod inbox;
pub mod locks;
pub mod registry;
pub mod review;
pub mod runtime;
pub mod safe_fs;
pub mod secrets;
pub mod service;
pub mod skills;
pub mod wire;
pub mod workspace;
