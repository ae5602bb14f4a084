//! Operator commands: **decide, then do**.
//!
//! [`decide`] is a pure function of the state and a command. It validates the command against
//! the transition table and the day's rules and returns the events that carry it out (an audit
//! record first, then the effects), without changing anything. The caller sequences, persists
//! and applies them; applying them in order cannot fail on a state that `decide` saw.

use super::day::DayState;
use super::event::{AuditRecord, EventKind, OperatorAction, Target};
use super::machine::{IllegalTransition, ShardEvent, ShardStatus, transition};
use super::status::StatusCounts;
use crate::graph::TaskIx;
use crate::model::TaskId;

/// An operator command on a task or a shard.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Command {
    /// Who acts (recorded in the audit log).
    pub actor: String,
    /// Where the action came from (client address or interface).
    pub from: String,
    /// Why (recorded in the audit log).
    pub reason: String,
    /// What to do.
    pub action: OperatorAction,
    /// On what.
    pub target: Target,
}

/// Why a command was refused. Every variant is a conflict with the day's state (HTTP 409)
/// except the unknown/out-of-range ones (HTTP 404).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CommandError {
    /// The day has not been opened.
    #[error("the business day is not open yet")]
    DayNotOpen,
    /// The day is closed.
    #[error("the business day is closed: no action is possible")]
    DayClosed,
    /// The task is not in the flow.
    #[error("unknown task `{0}`")]
    UnknownTask(TaskId),
    /// The task is not registered for the day.
    #[error("task `{0}` is not registered for the day: there is nothing to act on yet")]
    NotRegistered(TaskId),
    /// The shard index is out of range.
    #[error("task `{task}` has no shard {shard} (it has {count})")]
    ShardOutOfRange {
        /// The task.
        task: TaskId,
        /// The index asked for.
        shard: u32,
        /// The task's number of shards.
        count: u32,
    },
    /// The state machine refuses the action for the shard.
    #[error("{target}: {source}")]
    Illegal {
        /// The shard.
        target: Target,
        /// The refused transition.
        source: IllegalTransition,
    },
    /// Execute or retry while some dependency is not done.
    #[error(
        "cannot {} task `{task}`: it waits for {} to finish",
        action.verb(),
        list(waiting_for)
    )]
    DependenciesNotDone {
        /// The task.
        task: TaskId,
        /// The action.
        action: OperatorAction,
        /// The dependencies not done.
        waiting_for: Vec<TaskId>,
    },
    /// Rollback without cascade while dependents already ran.
    #[error(
        "cannot roll back task `{task}`: {} already ran on its results; roll back with cascade \
         to undo them first",
        list(dependents)
    )]
    DependentsRan {
        /// The task.
        task: TaskId,
        /// The dependents that ran, in topological order.
        dependents: Vec<TaskId>,
    },
    /// A cascading rollback while a dependent still has work in progress.
    #[error(
        "cannot roll back task `{task}` with cascade: dependent `{dependent}` has work in \
         progress ({counts}); stop it first"
    )]
    DependentBusy {
        /// The task.
        task: TaskId,
        /// The busy dependent.
        dependent: TaskId,
        /// Its shard counts.
        counts: StatusCounts,
    },
    /// A hold on what is held already (by `by`).
    #[error("{target} is already held by {by}")]
    AlreadyHeld {
        /// The task or shard.
        target: Target,
        /// Who holds it.
        by: String,
    },
    /// A free of what is not held.
    #[error("{target} is not held{}", if *task_held { " (its task is: free the task)" } else { "" })]
    NotHeld {
        /// The task or shard.
        target: Target,
        /// Whether the shard's task is held (the shard is not itself).
        task_held: bool,
    },
    /// Hold or force-start of a task (or shard) that is done already.
    #[error("{target} is done ({status}): there is nothing to {}", action.verb())]
    AlreadyDone {
        /// The task or shard.
        target: Target,
        /// The action.
        action: OperatorAction,
        /// Its status.
        status: String,
    },
    /// An action that needs a reason was given none (HTTP 400).
    #[error("{} needs a reason: say why (it is audited)", action.verb())]
    ReasonRequired {
        /// The action.
        action: OperatorAction,
    },
    /// Force-start on a shard: it applies to a whole task.
    #[error("force-start applies to a task, not to one shard: force-start task `{task}`")]
    ForceStartOfShard {
        /// The task.
        task: TaskId,
    },
    /// Force-start of a task that is force-started already and waits for its registration.
    #[error("task `{0}` is force-started already: it runs once registered")]
    AlreadyForced(TaskId),
    /// A task-level action that applies to none of the task's shards.
    #[error("no shard of task `{task}` can be {}: its shards are {counts}", past(*action))]
    NothingEligible {
        /// The task.
        task: TaskId,
        /// The action.
        action: OperatorAction,
        /// Its shard counts.
        counts: StatusCounts,
    },
}

fn list(ids: &[TaskId]) -> String {
    ids.iter().map(|t| format!("`{t}`")).collect::<Vec<_>>().join(", ")
}

fn past(action: OperatorAction) -> &'static str {
    match action {
        OperatorAction::Execute => "executed",
        OperatorAction::Stop => "stopped",
        OperatorAction::Skip => "skipped",
        OperatorAction::Retry => "retried",
        OperatorAction::Rollback { .. } => "rolled back",
        OperatorAction::Confirm => "confirmed",
        OperatorAction::MarkFailed => "marked failed",
        OperatorAction::Hold => "held",
        OperatorAction::Free => "freed",
        OperatorAction::ForceStart => "force-started",
    }
}

/// The shard event an operator action feeds to the state machine.
pub fn shard_event_for(action: OperatorAction) -> ShardEvent {
    match action {
        OperatorAction::Execute => ShardEvent::Ready,
        OperatorAction::Stop => ShardEvent::Stop,
        OperatorAction::Skip => ShardEvent::Skip,
        OperatorAction::Retry => ShardEvent::Retry,
        OperatorAction::Rollback { .. } => ShardEvent::Rollback,
        OperatorAction::Confirm => ShardEvent::Confirm,
        OperatorAction::MarkFailed => ShardEvent::MarkFailed,
        // Not shard transitions: `decide` handles them before it asks for one.
        OperatorAction::Hold | OperatorAction::Free | OperatorAction::ForceStart => {
            ShardEvent::Ready
        }
    }
}

/// Decides the events that carry out `cmd` on `state`, or why it is refused.
///
/// Rules beyond the transition table:
/// - execute and retry need every dependency of the task done;
/// - a task-level action applies to every shard whose status accepts it, and is refused when
///   there is none;
/// - a rollback (of a task or a shard) is refused while dependents that ran exist, unless
///   `cascade`: then each such dependent is rolled back first, newest first (reverse
///   topological order), its pending shards stopped, and it is refused if a dependent has
///   work in progress.
pub fn decide(state: &DayState, cmd: &Command) -> Result<Vec<EventKind>, CommandError> {
    if !state.is_open() {
        return Err(CommandError::DayNotOpen);
    }
    if state.is_closed() {
        return Err(CommandError::DayClosed);
    }
    let task = &cmd.target.task;
    let graph = state.graph();
    let ix =
        graph.index_of(task.as_str()).ok_or_else(|| CommandError::UnknownTask(task.clone()))?;
    if matches!(
        cmd.action,
        OperatorAction::Hold | OperatorAction::Free | OperatorAction::ForceStart
    ) {
        return decide_plan_action(state, cmd, ix);
    }
    if !state.is_registered(ix) {
        return Err(CommandError::NotRegistered(task.clone()));
    }
    if let Some(shard) = cmd.target.shard
        && shard >= state.shard_count(ix)
    {
        return Err(CommandError::ShardOutOfRange {
            task: task.clone(),
            shard,
            count: state.shard_count(ix),
        });
    }
    let event = shard_event_for(cmd.action);
    if matches!(cmd.action, OperatorAction::Execute | OperatorAction::Retry) && !state.may_run(ix) {
        return Err(CommandError::DependenciesNotDone {
            task: task.clone(),
            action: cmd.action,
            waiting_for: ids(state, &state.waiting_for(ix)),
        });
    }

    // The target's own effect, validated before anything else is decided.
    let effect = match cmd.target.shard {
        Some(shard) => {
            let from = state.shard_status_raw(ix, shard).unwrap_or(ShardStatus::Registered);
            transition(from, event.kind())
                .map_err(|source| CommandError::Illegal { target: cmd.target.clone(), source })?;
            EventKind::Shard { task: task.clone(), shard, event: event.clone() }
        }
        None => {
            let from = eligible(state.counts(ix), &event);
            if from.is_empty() {
                return Err(CommandError::NothingEligible {
                    task: task.clone(),
                    action: cmd.action,
                    counts: *state.counts(ix),
                });
            }
            if cmd.action == OperatorAction::Execute {
                EventKind::TaskReady { task: task.clone() }
            } else {
                EventKind::TaskShards { task: task.clone(), from, event: event.clone() }
            }
        }
    };

    let mut out = vec![EventKind::Audit(AuditRecord {
        actor: cmd.actor.clone(),
        action: cmd.action,
        target: cmd.target.clone(),
        reason: cmd.reason.clone(),
        from: cmd.from.clone(),
    })];
    if let OperatorAction::Rollback { cascade } = cmd.action {
        let ran = state.dependents_that_ran(ix);
        if !ran.is_empty() && !cascade {
            return Err(CommandError::DependentsRan {
                task: task.clone(),
                dependents: ids(state, &ran),
            });
        }
        for &d in ran.iter().rev() {
            out.extend(undo_dependent(state, task, d)?);
        }
    }
    out.push(effect);
    Ok(out)
}

/// Hold, free and force-start: they change what may be dispatched, not a shard's status.
/// A task is held in any status but done (before its registration too); a shard once its
/// task is registered, in any status but succeeded or skipped.
fn decide_plan_action(
    state: &DayState,
    cmd: &Command,
    ix: TaskIx,
) -> Result<Vec<EventKind>, CommandError> {
    let task = &cmd.target.task;
    let target = cmd.target.clone();
    if let Some(shard) = cmd.target.shard {
        if cmd.action == OperatorAction::ForceStart {
            return Err(CommandError::ForceStartOfShard { task: task.clone() });
        }
        if !state.is_registered(ix) {
            return Err(CommandError::NotRegistered(task.clone()));
        }
        if shard >= state.shard_count(ix) {
            return Err(CommandError::ShardOutOfRange {
                task: task.clone(),
                shard,
                count: state.shard_count(ix),
            });
        }
    }
    let done = |status: String| CommandError::AlreadyDone {
        target: target.clone(),
        action: cmd.action,
        status,
    };
    let effect = match cmd.action {
        OperatorAction::Hold => {
            if let Some(by) = state.held_by(ix, cmd.target.shard) {
                return Err(CommandError::AlreadyHeld { target, by: by.to_owned() });
            }
            match cmd.target.shard {
                Some(shard) => {
                    let status = state.shard_status_raw(ix, shard);
                    if let Some(s @ (ShardStatus::Succeeded | ShardStatus::Skipped)) = status {
                        return Err(done(s.to_string()));
                    }
                }
                None if state.is_done(ix) => return Err(done(state.task_status(ix).to_string())),
                None => {}
            }
            EventKind::Hold { task: task.clone(), shard: cmd.target.shard, by: cmd.actor.clone() }
        }
        OperatorAction::Free => {
            if state.held_by(ix, cmd.target.shard).is_none() {
                let task_held = cmd.target.shard.is_some() && state.held_by(ix, None).is_some();
                return Err(CommandError::NotHeld { target, task_held });
            }
            EventKind::Free { task: task.clone(), shard: cmd.target.shard }
        }
        _ => {
            if cmd.reason.trim().is_empty() {
                return Err(CommandError::ReasonRequired { action: cmd.action });
            }
            if state.is_done(ix) {
                return Err(done(state.task_status(ix).to_string()));
            }
            if state.is_registered(ix) {
                if state.counts(ix).get(ShardStatus::Registered) == 0 {
                    return Err(CommandError::NothingEligible {
                        task: task.clone(),
                        action: cmd.action,
                        counts: *state.counts(ix),
                    });
                }
            } else if state.is_forced(ix) {
                return Err(CommandError::AlreadyForced(task.clone()));
            }
            EventKind::ForceStarted { task: task.clone() }
        }
    };
    let mut out = vec![
        EventKind::Audit(AuditRecord {
            actor: cmd.actor.clone(),
            action: cmd.action,
            target: cmd.target.clone(),
            reason: cmd.reason.clone(),
            from: cmd.from.clone(),
        }),
        effect,
    ];
    if cmd.action == OperatorAction::ForceStart && state.is_registered(ix) {
        out.push(EventKind::TaskReady { task: task.clone() });
    }
    Ok(out)
}

/// The statuses present in `counts` that accept `event`, in status order.
fn eligible(counts: &StatusCounts, event: &ShardEvent) -> Vec<ShardStatus> {
    counts.non_zero().map(|(s, _)| s).filter(|&s| transition(s, event.kind()).is_ok()).collect()
}

/// The events rolling back one dependent in a cascade.
fn undo_dependent(
    state: &DayState,
    task: &TaskId,
    d: TaskIx,
) -> Result<Vec<EventKind>, CommandError> {
    let counts = state.counts(d);
    let id = state.graph().id(d).clone();
    if ShardStatus::ALL.iter().any(|s| s.is_active() && counts.get(*s) > 0) {
        return Err(CommandError::DependentBusy {
            task: task.clone(),
            dependent: id,
            counts: *counts,
        });
    }
    let mut out = Vec::new();
    let from = eligible(counts, &ShardEvent::Rollback);
    if !from.is_empty() {
        out.push(EventKind::TaskShards { task: id.clone(), from, event: ShardEvent::Rollback });
    }
    // Queued shards must not start on results that are being undone.
    if counts.get(ShardStatus::Pending) > 0 {
        out.push(EventKind::TaskShards {
            task: id,
            from: vec![ShardStatus::Pending],
            event: ShardEvent::Stop,
        });
    }
    Ok(out)
}

fn ids(state: &DayState, ixs: &[TaskIx]) -> Vec<TaskId> {
    ixs.iter().map(|&i| state.graph().id(i).clone()).collect()
}
