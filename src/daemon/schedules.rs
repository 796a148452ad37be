//! The daemon's side of schedules (`service::schedules` has the rules):
//! syncing `project.yaml` `schedules:` into the store when a project opens,
//! recording the due slots on every tick, and telling the ticker when the
//! next one is due so it wakes for it rather than at its next interval.

use serde_json::json;

use super::projects::{OpenProject, ProjectSlot};
use super::tick_error::TickError;
use super::Daemon;
use crate::blackboard::{Actor, EventLevel, ObservationLevel, ScheduleDef};
use crate::service::schedules;

/// Records the due slots of `slot`'s schedules and when the next is due.
/// A schedule that cannot fire (a bad stored definition, a refused task)
/// is reported as an observation and left for the next tick; it never stops
/// the others or the rest of the tick.
pub async fn fire_due(d: &Daemon, proj: &OpenProject) -> Result<(), TickError> {
    let (project, service) = (proj.id.as_str(), &proj.service);
    let tick = service.fire_due_schedules().await?;
    d.set_schedule_due(project, tick.next_due);
    for task in &tick.fired {
        tracing::info!(project, task = %task.id, "schedule fired");
    }
    for (id, why) in &tick.problems {
        tracing::warn!(project, schedule = %id, error = %why, "schedule cannot fire");
        let body = format!("schedule {id} cannot fire: {why}");
        let bb = service.blackboard();
        bb.add_observation(ObservationLevel::Warn, &Actor::daemon(), None, &body)
            .await?;
        bb.record_event(
            EventLevel::Attention,
            "schedule.failed",
            None,
            &Actor::daemon(),
            json!({ "schedule": id, "error": why }),
        )
        .await?;
    }
    Ok(())
}

/// Reads `project.yaml` `schedules:` (already parsed into the slot's
/// settings) into definitions; an entry that does not fit is named by its
/// position and id.
pub fn config_schedules(slot: &ProjectSlot) -> (Vec<ScheduleDef>, Vec<String>) {
    let mut defs = Vec::new();
    let mut errors = Vec::new();
    for (i, value) in slot.settings.schedules.iter().enumerate() {
        let parsed: Result<crate::wire::NewSchedule, _> = serde_yaml_ng::from_value(value.clone());
        let result = parsed
            .map_err(|e| e.to_string())
            .and_then(schedules::def_from_wire);
        match result {
            Ok((def, _force)) => defs.push(def),
            Err(why) => errors.push(format!(
                "project.yaml schedules[{i}]{}: {why}",
                value
                    .get("id")
                    .and_then(|v| v.as_str())
                    .map(|id| format!(" (id {id})"))
                    .unwrap_or_default()
            )),
        }
    }
    (defs, errors)
}

/// Brings `project.yaml` `schedules:` into the store (the file wins for the
/// ids it names; file schedules it no longer names are removed). A bad entry
/// becomes an alert observation naming it; the good ones are synced.
pub async fn sync_from_config(d: &Daemon, slot: &ProjectSlot) {
    let Some(service) = slot.service(d.home()) else {
        return;
    };
    let project = slot.id.as_str();
    let (defs, mut errors) = config_schedules(slot);
    if errors.is_empty() {
        match service.sync_config_schedules(&defs).await {
            Ok(refused) => errors.extend(
                refused
                    .into_iter()
                    .map(|(id, why)| format!("project.yaml schedule {id}: {why}")),
            ),
            Err(e) => errors.push(format!("project.yaml schedules: {e}")),
        }
    } else {
        errors.push("no schedule of project.yaml was synced; fix the entries above".into());
    }
    if !errors.is_empty() {
        let body = errors.join("\n");
        tracing::warn!(project, error = %body, "project.yaml schedules refused");
        let _ = service
            .blackboard()
            .add_observation(ObservationLevel::Alert, &Actor::daemon(), None, &body)
            .await;
    }
}
