//! Leases: at most one holder of a named lease at a time, on any object store.
//!
//! A lease is a sequence of generation objects `_locks/{name}/{generation}.json`, each created
//! with a conditional put (`PutMode::Create`), so of two processes racing for the same generation
//! exactly one wins. The newest generation is the lease. It is free when released or expired; a
//! stale lease (its holder died) is taken over by creating the next generation, which again only
//! one contender can do. A holder renews its own generation while it works and checks it is still
//! the newest before committing state.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use bytes::Bytes;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use tracing::{info, warn};

use crate::{Error, Lake, Result, paths, state};

#[derive(Debug, Clone, Serialize, Deserialize)]
struct LeaseDoc {
    owner: String,
    /// Where the holder runs: the kernel's boot id and pid namespace, so that a contender on the
    /// same machine and namespace can see the holder's process is gone.
    #[serde(default)]
    machine: Option<String>,
    #[serde(default)]
    pid: Option<u32>,
    acquired_at: DateTime<Utc>,
    expires_at: DateTime<Utc>,
    released: bool,
}

/// Identifies this kernel boot and pid namespace (Linux); `None` elsewhere.
fn machine_id() -> Option<String> {
    let boot = std::fs::read_to_string("/proc/sys/kernel/random/boot_id").ok()?;
    let pidns = std::fs::read_link("/proc/self/ns/pid").ok()?;
    Some(format!("{}/{}", boot.trim(), pidns.display()))
}

impl LeaseDoc {
    /// The holder is known to be dead: same machine and pid namespace, and its pid is gone.
    /// A crashed run's lease is then free at once instead of after its expiry.
    fn holder_dead(&self) -> bool {
        match (&self.machine, self.pid, machine_id()) {
            (Some(theirs), Some(pid), Some(ours)) if *theirs == ours => {
                !std::path::Path::new(&format!("/proc/{pid}")).exists()
            }
            _ => false,
        }
    }

    fn is_free(&self, now: DateTime<Utc>) -> bool {
        self.released || self.expires_at <= now || self.holder_dead()
    }
}

/// How to take a lease.
#[derive(Debug, Clone)]
pub struct LeaseOptions {
    /// A lease not renewed for this long is stale and may be taken over.
    pub ttl: Duration,
    /// How long to wait for a busy lease before giving up.
    pub wait: Duration,
}

impl Default for LeaseOptions {
    fn default() -> Self {
        LeaseOptions {
            ttl: Duration::from_secs(120),
            wait: Duration::from_secs(0),
        }
    }
}

/// A held lease. It renews itself in the background until released or dropped.
pub struct Lease {
    lake: Lake,
    name: String,
    generation: u64,
    owner: String,
    acquired_at: DateTime<Utc>,
    lost: Arc<AtomicBool>,
    renewer: tokio::task::JoinHandle<()>,
}

async fn latest(lake: &Lake, name: &str) -> Result<Option<(u64, LeaseDoc)>> {
    let gens = lake.list(&paths::lease_dir(name)).await?;
    let Some(g) = gens
        .iter()
        .filter_map(|m| paths::parse_lease_generation(&m.location))
        .max()
    else {
        return Ok(None);
    };
    let key = paths::lease_generation(name, g);
    match state::read::<LeaseDoc>(lake, &key).await? {
        Some(doc) => Ok(Some((g, doc))),
        // Deleted by a pruning contender between list and read: look again.
        None => Box::pin(latest(lake, name)).await,
    }
}

impl Lease {
    pub async fn acquire(
        lake: &Lake,
        name: &str,
        owner: &str,
        opts: &LeaseOptions,
    ) -> Result<Lease> {
        let deadline = tokio::time::Instant::now() + opts.wait;
        loop {
            let now = Utc::now();
            let current = latest(lake, name).await?;
            if let Some((_, doc)) = &current
                && !doc.is_free(now)
            {
                if tokio::time::Instant::now() >= deadline {
                    return Err(Error::Busy {
                        name: name.to_string(),
                        holder: doc.owner.clone(),
                        expires_at: doc.expires_at,
                    });
                }
                tokio::time::sleep(Duration::from_millis(250)).await;
                continue;
            }
            if let Some((g, doc)) = &current
                && !doc.released
            {
                warn!(lease = name, generation = g, holder = %doc.owner, "taking over an expired lease or one whose holder died");
            }
            let generation = current.as_ref().map_or(0, |(g, _)| g + 1);
            let doc = LeaseDoc {
                owner: owner.to_string(),
                machine: machine_id(),
                pid: Some(std::process::id()),
                acquired_at: now,
                expires_at: now + chrono::Duration::from_std(opts.ttl).unwrap_or_default(),
                released: false,
            };
            let body = Bytes::from(serde_json::to_vec(&doc).expect("lease doc serialises"));
            if lake
                .put_new(&paths::lease_generation(name, generation), body)
                .await?
            {
                // Older generations are history now.
                for g in current.iter().map(|(g, _)| *g) {
                    let _ = lake.delete(&paths::lease_generation(name, g)).await;
                }
                info!(lease = name, generation, owner, "lease acquired");
                let lost = Arc::new(AtomicBool::new(false));
                let renewer = tokio::spawn(renew_loop(
                    lake.clone(),
                    name.to_string(),
                    generation,
                    doc.clone(),
                    opts.ttl,
                    lost.clone(),
                ));
                return Ok(Lease {
                    lake: lake.clone(),
                    name: name.to_string(),
                    generation,
                    owner: owner.to_string(),
                    acquired_at: now,
                    lost,
                    renewer,
                });
            }
            // Another contender created this generation first: look again.
        }
    }

    /// Fails if another process has taken the lease over; call before committing state.
    pub async fn check(&self) -> Result<()> {
        let current = latest(&self.lake, &self.name).await?;
        match current {
            Some((g, _)) if g == self.generation && !self.lost.load(Ordering::SeqCst) => Ok(()),
            Some((_, doc)) => Err(Error::LeaseLost {
                name: self.name.clone(),
                holder: doc.owner,
            }),
            None => Err(Error::LeaseLost {
                name: self.name.clone(),
                holder: "nobody".into(),
            }),
        }
    }

    pub async fn release(self) -> Result<()> {
        self.renewer.abort();
        if self.check().await.is_err() {
            return Ok(());
        }
        let doc = LeaseDoc {
            owner: self.owner.clone(),
            machine: machine_id(),
            pid: Some(std::process::id()),
            acquired_at: self.acquired_at,
            expires_at: Utc::now(),
            released: true,
        };
        state::write(
            &self.lake,
            &paths::lease_generation(&self.name, self.generation),
            &doc,
        )
        .await
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        self.renewer.abort();
    }
}

async fn renew_loop(
    lake: Lake,
    name: String,
    generation: u64,
    mut doc: LeaseDoc,
    ttl: Duration,
    lost: Arc<AtomicBool>,
) {
    let every = ttl / 3;
    loop {
        tokio::time::sleep(every).await;
        match latest(&lake, &name).await {
            Ok(Some((g, _))) if g == generation => {}
            _ => {
                lost.store(true, Ordering::SeqCst);
                warn!(lease = %name, generation, "lease lost");
                return;
            }
        }
        doc.expires_at = Utc::now() + chrono::Duration::from_std(ttl).unwrap_or_default();
        if let Err(e) = state::write(&lake, &paths::lease_generation(&name, generation), &doc).await
        {
            warn!(lease = %name, error = %e, "lease renewal failed");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts(ttl_ms: u64) -> LeaseOptions {
        LeaseOptions {
            ttl: Duration::from_millis(ttl_ms),
            wait: Duration::ZERO,
        }
    }

    #[tokio::test]
    async fn exclusive_then_free_after_release() {
        let dir = tempfile::tempdir().unwrap();
        let lake = Lake::open(dir.path().to_str().unwrap()).unwrap();
        let a = Lease::acquire(&lake, "pipeline", "a", &opts(60_000))
            .await
            .unwrap();
        let err = Lease::acquire(&lake, "pipeline", "b", &opts(60_000))
            .await
            .err()
            .unwrap();
        assert!(err.to_string().contains("held by a"), "{err}");
        a.release().await.unwrap();
        let b = Lease::acquire(&lake, "pipeline", "b", &opts(60_000))
            .await
            .unwrap();
        b.check().await.unwrap();
    }

    #[tokio::test]
    async fn stale_lease_is_taken_over_and_old_holder_notices() {
        let dir = tempfile::tempdir().unwrap();
        let lake = Lake::open(dir.path().to_str().unwrap()).unwrap();
        let a = Lease::acquire(&lake, "pipeline", "a", &opts(300))
            .await
            .unwrap();
        a.renewer.abort(); // the holder "hangs": no more renewals
        tokio::time::sleep(Duration::from_millis(400)).await;
        let b = Lease::acquire(&lake, "pipeline", "b", &opts(60_000))
            .await
            .unwrap();
        assert!(matches!(a.check().await, Err(Error::LeaseLost { .. })));
        b.check().await.unwrap();
    }

    #[tokio::test]
    async fn lease_of_a_dead_process_is_free_at_once() {
        let dir = tempfile::tempdir().unwrap();
        let lake = Lake::open(dir.path().to_str().unwrap()).unwrap();
        let Some(machine) = machine_id() else {
            return; // not Linux: only expiry frees a lease
        };
        // A holder on this machine whose process has exited.
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let dead_pid = child.id();
        child.wait().unwrap();
        let doc = LeaseDoc {
            owner: "crashed".into(),
            machine: Some(machine.clone()),
            pid: Some(dead_pid),
            acquired_at: Utc::now(),
            expires_at: Utc::now() + chrono::Duration::hours(1),
            released: false,
        };
        state::write(&lake, &paths::lease_generation("pipeline", 0), &doc)
            .await
            .unwrap();
        let b = Lease::acquire(&lake, "pipeline", "b", &opts(60_000))
            .await
            .unwrap();
        b.check().await.unwrap();
        // A live holder (this process) is respected.
        let live = LeaseDoc {
            pid: Some(std::process::id()),
            ..doc
        };
        state::write(&lake, &paths::lease_generation("other", 0), &live)
            .await
            .unwrap();
        assert!(matches!(
            Lease::acquire(&lake, "other", "c", &opts(60_000)).await,
            Err(Error::Busy { .. })
        ));
    }

    #[tokio::test]
    async fn racing_contenders_get_one_winner() {
        let dir = tempfile::tempdir().unwrap();
        let lake = Lake::open(dir.path().to_str().unwrap()).unwrap();
        let tries = (0..8).map(|i| {
            let lake = lake.clone();
            tokio::spawn(async move {
                Lease::acquire(&lake, "pipeline", &format!("p{i}"), &opts(60_000)).await
            })
        });
        let results = futures::future::join_all(tries).await;
        let winners = results
            .into_iter()
            .filter(|r| matches!(r, Ok(Ok(_))))
            .count();
        assert_eq!(winners, 1);
    }
}
