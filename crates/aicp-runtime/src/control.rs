//! Model control: keeping the served models in step with the model directory while the server
//! runs, by watching it (`poll`) or on an operator's request (`load`, `unload`).
//!
//! Every change builds a new [`Repository`] from the current one and puts it in service in one
//! step: requests already holding a model finish on it, new ones get the new one, and unchanged
//! versions carry over as they are (queues, engines and statistics included). Changes are made
//! one at a time, so a poll and an operator's request never undo each other.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use aicp_core::{Error, ErrorKind, Result, validate_model_name};

use crate::discovery::SourceStamp;
use crate::repository::Repository;
use crate::service::Runtime;

/// How the served models follow the model directory.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ControlMode {
    /// Watch the directory: new models and versions are loaded, removed ones unloaded, changed
    /// files reloaded. Operators may also load and unload (with the admin token).
    #[default]
    Poll,
    /// Load what is there at start-up; afterwards only operators load and unload.
    Explicit,
    /// Load what is there at start-up and never change it.
    None,
}

impl ControlMode {
    pub fn name(self) -> &'static str {
        match self {
            Self::Poll => "poll",
            Self::Explicit => "explicit",
            Self::None => "none",
        }
    }
}

/// Loads, reloads and unloads models in a running server's repository.
pub struct ModelControl {
    runtime: Arc<Runtime>,
    mode: ControlMode,
    state: Mutex<Watch>,
}

/// What the control remembers between passes.
#[derive(Default)]
struct Watch {
    /// Models an operator unloaded: the watcher leaves them alone until they are loaded again.
    unloaded: BTreeSet<String>,
    /// Models whose files differ from what is loaded, as they were at the last pass: a model is
    /// loaded once its files look the same at two passes in a row, so a file still being
    /// copied is never taken for a model.
    changing: BTreeMap<String, SourceStamp>,
}

impl ModelControl {
    pub fn new(runtime: Arc<Runtime>, mode: ControlMode) -> Self {
        Self {
            runtime,
            mode,
            state: Mutex::new(Watch::default()),
        }
    }

    pub fn mode(&self) -> ControlMode {
        self.mode
    }

    /// One pass of the watcher: loads the models whose files appeared or changed and have
    /// stopped changing, and removes the models whose files are gone. Blocks while it loads.
    pub fn poll(&self) -> Result<()> {
        let mut watch = self.lock();
        let repository = self.runtime.repository()?;
        let sources = repository.discover()?;
        let mut next: Option<Repository> = None;
        for (name, source) in &sources {
            if watch.unloaded.contains(name) {
                continue;
            }
            if repository.is_current(name, source) {
                watch.changing.remove(name);
                continue;
            }
            let stamp = source.stamp();
            if watch.changing.get(name) != Some(&stamp) {
                watch.changing.insert(name.clone(), stamp);
                continue;
            }
            watch.changing.remove(name);
            tracing::info!("model {name}: new or changed files; loading");
            let base = next.as_ref().unwrap_or(&repository);
            next = Some(base.with_model(name, Some(source)));
        }
        for entry in repository.models() {
            if !sources.contains_key(&entry.name) {
                tracing::info!("model {}: its files are gone; unloading", entry.name);
                let base = next.as_ref().unwrap_or(&repository);
                next = Some(base.with_model(&entry.name, None));
            }
        }
        watch.changing.retain(|name, _| sources.contains_key(name));
        watch.unloaded.retain(|name| sources.contains_key(name));
        if let Some(next) = next {
            self.runtime.set_repository(next);
        }
        Ok(())
    }

    /// Loads (or reloads) model `name` from the model directory now, whatever the mode's
    /// watcher would do. Fails when the directory has no such model or when no version of it
    /// serves afterwards; a version that served before and fails to reload keeps serving.
    pub fn load(&self, name: &str) -> Result<()> {
        self.check_explicit()?;
        validate_model_name(name)?;
        let mut watch = self.lock();
        let repository = self.runtime.repository()?;
        let sources = repository.discover()?;
        let Some(source) = sources.get(name) else {
            return Err(Error::not_found(format!(
                "the model directory has no model {name:?}"
            )));
        };
        watch.unloaded.remove(name);
        watch.changing.remove(name);
        let next = repository.with_model(name, Some(source));
        let outcome =
            next.model(name)
                .and_then(|entry| match (entry.default_version(), entry.reason()) {
                    (Some(_), _) => Ok(()),
                    (None, reason) => Err(Error::invalid(format!(
                        "model {name:?} failed to load: {}",
                        reason.unwrap_or_default()
                    ))),
                });
        self.runtime.set_repository(next);
        outcome
    }

    /// Takes model `name` out of service until it is loaded again. Requests in flight on it
    /// finish.
    pub fn unload(&self, name: &str) -> Result<()> {
        self.check_explicit()?;
        validate_model_name(name)?;
        let mut watch = self.lock();
        let repository = self.runtime.repository()?;
        repository.model(name)?;
        watch.unloaded.insert(name.to_string());
        watch.changing.remove(name);
        self.runtime.set_repository(repository.with_unloaded(name));
        Ok(())
    }

    fn check_explicit(&self) -> Result<()> {
        if self.mode == ControlMode::None {
            return Err(Error::new(
                ErrorKind::Forbidden,
                "model control is \"none\": the server serves what it loaded at start-up \
                 (start it with --model-control poll or explicit to load and unload models)",
            ));
        }
        Ok(())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Watch> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Runs the watcher every `interval` until the returned task is dropped (poll mode only;
    /// in the other modes, returns at once). Each pass runs on a blocking thread.
    pub async fn watch(self: Arc<Self>, interval: Duration) {
        if self.mode != ControlMode::Poll {
            return;
        }
        let mut ticks = tokio::time::interval(interval);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        ticks.tick().await;
        loop {
            ticks.tick().await;
            let control = self.clone();
            match tokio::task::spawn_blocking(move || control.poll()).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => tracing::warn!("watching the model directory: {e}"),
                Err(e) => tracing::error!("watching the model directory: {e}"),
            }
        }
    }
}

/// The watcher on its timer, under paused time: its passes cost no wall-clock time, so the
/// test sees exactly which pass takes a change.
#[cfg(test)]
mod tests {
    use aicp_engine::tract::TractEngine;

    use super::*;
    use crate::{Batching, Engines};

    const INTERVAL: Duration = Duration::from_secs(2);

    /// Copies the bundled MLP in as model `name`, version 1.
    fn install(root: &std::path::Path, name: &str) {
        let bundled = std::env::var_os("CARGO_MANIFEST_DIR")
            .map_or_else(
                || env!("CARGO_MANIFEST_DIR").into(),
                std::path::PathBuf::from,
            )
            .join("../../models/mnist/1/model.onnx");
        std::fs::create_dir_all(root.join(name).join("1")).unwrap();
        std::fs::copy(bundled, root.join(name).join("1/model.onnx")).unwrap();
    }

    fn served(runtime: &Runtime, name: &str) -> bool {
        runtime.repository().unwrap().get(name, None).is_ok()
    }

    /// Sleeps past the watcher's next pass.
    async fn next_pass() {
        tokio::time::sleep(INTERVAL + Duration::from_millis(1)).await;
    }

    #[tokio::test(start_paused = true)]
    async fn the_watcher_takes_a_model_once_its_files_hold_still_and_drops_it_when_they_go() {
        let dir = tempfile::tempdir().unwrap();
        install(dir.path(), "m");
        let engines = Arc::new(Engines::only(Box::new(TractEngine)));
        let runtime = Arc::new(Runtime::new());
        runtime
            .set_repository(Repository::load(dir.path(), engines, &Batching::default()).unwrap());
        let control = Arc::new(ModelControl::new(runtime.clone(), ControlMode::Poll));
        let watching = tokio::spawn(control.clone().watch(INTERVAL));

        install(dir.path(), "n");
        next_pass().await;
        assert!(
            !served(&runtime, "n"),
            "taken at the first pass that saw it"
        );
        next_pass().await;
        assert!(served(&runtime, "n"), "not taken at the second pass");
        assert!(served(&runtime, "m"));

        std::fs::remove_dir_all(dir.path().join("n")).unwrap();
        next_pass().await;
        assert!(!served(&runtime, "n"), "still served after its files went");
        watching.abort();
    }

    #[tokio::test(start_paused = true)]
    async fn only_poll_mode_watches() {
        let runtime = Arc::new(Runtime::new());
        for mode in [ControlMode::Explicit, ControlMode::None] {
            let control = Arc::new(ModelControl::new(runtime.clone(), mode));
            // Returns at once rather than looking every interval for ever.
            control.watch(INTERVAL).await;
        }
    }
}
