//! The long-running scheduler: the hourly job on a cron schedule in UTC.
//!
//! Runs never overlap (one loop, plus the lake's leases against other processes). After
//! downtime the missed slots are caught up with a single run. SIGINT or SIGTERM stops the loop
//! cleanly: a run in progress finishes first; a second signal aborts it.

use chrono::{DateTime, Utc};
use croner::Cron;
use cryptolake_lake::{paths, state};
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc::UnboundedReceiver;
use tracing::{error, info, warn};

use crate::{CronSchedule, Error, Pipeline, Result, RunSummary};

#[derive(Debug, Serialize, Deserialize)]
struct ScheduleState {
    /// The last slot a run was started for.
    last_slot: DateTime<Utc>,
}

/// The slot to run now, if any: the latest slot at or before `now` when it is newer than the
/// last one run. Several missed slots give one run.
pub fn due_slot(
    cron: &Cron,
    last: Option<DateTime<Utc>>,
    now: DateTime<Utc>,
) -> Option<DateTime<Utc>> {
    let latest = cron.find_previous_occurrence(&now, true).ok()?;
    match last {
        Some(l) if l >= latest => None,
        Some(_) => Some(latest),
        // First start: wait for the next slot rather than run at an arbitrary moment.
        None => None,
    }
}

/// SIGINT and SIGTERM as a channel. The handlers are installed once, for the scheduler's whole
/// life, so a signal that arrives between two waits is queued, never lost.
pub fn shutdown_signals() -> std::io::Result<UnboundedReceiver<()>> {
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let mut term = signal(SignalKind::terminate())?;
        let mut int = signal(SignalKind::interrupt())?;
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = int.recv() => {}
                }
                if tx.send(()).is_err() {
                    return;
                }
            }
        });
    }
    #[cfg(not(unix))]
    tokio::spawn(async move {
        while tokio::signal::ctrl_c().await.is_ok() {
            if tx.send(()).is_err() {
                return;
            }
        }
    });
    Ok(rx)
}

/// Runs the hourly job on `schedule` (UTC) until `stop` receives a signal. `on_run` sees
/// each run's summary (a front end prints or counts it).
pub async fn run(
    pipeline: &Pipeline,
    schedule: &CronSchedule,
    mut stop: UnboundedReceiver<()>,
    on_run: &(dyn Fn(&RunSummary) + Sync),
) -> Result<()> {
    let cron = schedule.cron();
    let lake = pipeline.lake();
    info!(
        cron = schedule.as_str(),
        lake = lake.root_url(),
        "scheduler started (UTC)"
    );
    loop {
        let now = pipeline.now();
        let last = state::read::<ScheduleState>(lake, &paths::schedule_state())
            .await?
            .map(|s| s.last_slot);
        let slot = match due_slot(cron, last, now) {
            Some(slot) => slot,
            None => {
                if last.is_none() {
                    // Remember where we started so that later downtime is caught up.
                    let start = cron.find_previous_occurrence(&now, true).unwrap_or(now);
                    state::write(
                        lake,
                        &paths::schedule_state(),
                        &ScheduleState { last_slot: start },
                    )
                    .await?;
                }
                let next = cron.find_next_occurrence(&now, false).map_err(|e| {
                    Error::Invalid(format!("cron {schedule:?} has no next run: {e}"))
                })?;
                info!(next = %next, "waiting for the next slot");
                let wait = (next - pipeline.now()).to_std().unwrap_or_default();
                tokio::select! {
                    _ = tokio::time::sleep(wait) => continue,
                    _ = stop.recv() => {
                        info!("signal received; scheduler stopped");
                        return Ok(());
                    }
                }
            }
        };
        if let Some(l) = last
            && cron.find_next_occurrence(&l, false).ok() != Some(slot)
        {
            warn!(last_run_slot = %l, slot = %slot, "slots were missed while down; catching up with one run");
        }
        info!(slot = %slot, "run starting");
        state::write(
            lake,
            &paths::schedule_state(),
            &ScheduleState { last_slot: slot },
        )
        .await?;
        let job = pipeline.run_once();
        tokio::pin!(job);
        let mut stopping = false;
        let outcome = loop {
            tokio::select! {
                r = &mut job => break Some(r),
                _ = stop.recv() => {
                    if stopping {
                        warn!("second signal: aborting the run in progress");
                        break None;
                    }
                    stopping = true;
                    warn!("signal received; finishing the run in progress, then stopping (signal again to abort)");
                }
            }
        };
        match outcome {
            Some(summary) => {
                let problems = summary.problems();
                if problems.is_empty() {
                    info!(run_id = %summary.run_id, "run finished");
                } else {
                    for p in &problems {
                        error!(run_id = %summary.run_id, problem = %p, "run problem");
                    }
                }
                on_run(&summary);
            }
            None => return Ok(()),
        }
        if stopping {
            info!("scheduler stopped");
            return Ok(());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cryptolake_model::parse_time;

    #[test]
    fn catches_up_once_and_never_twice() {
        let cron: Cron = "5 * * * *".parse().unwrap();
        let t = |s| parse_time(s).unwrap();
        // Ran at 10:05, down until 13:20: one run, for the 13:05 slot.
        assert_eq!(
            due_slot(
                &cron,
                Some(t("2024-01-01T10:05:00Z")),
                t("2024-01-01T13:20:00Z")
            ),
            Some(t("2024-01-01T13:05:00Z"))
        );
        // Already ran the 13:05 slot.
        assert_eq!(
            due_slot(
                &cron,
                Some(t("2024-01-01T13:05:00Z")),
                t("2024-01-01T13:59:00Z")
            ),
            None
        );
        // On time.
        assert_eq!(
            due_slot(
                &cron,
                Some(t("2024-01-01T13:05:00Z")),
                t("2024-01-01T14:05:00Z")
            ),
            Some(t("2024-01-01T14:05:00Z"))
        );
        assert_eq!(due_slot(&cron, None, t("2024-01-01T14:05:00Z")), None);
    }
}
