//! The model repository: each model's metadata and versions, each version's state (ready, or
//! failed with the reason), and the one way a repository changes: a new one built from it.
//! Finding the models is [`crate::discovery`]'s job, loading a version [`crate::loading`]'s, and
//! what a reload keeps [`crate::reload`]'s.
//!
//! Layout (see docs/guide/model-directory.md):
//!
//! ```text
//! models/
//!   mnist/model.toml        optional metadata for every version of "mnist"
//!   mnist/1/model.onnx      version 1; the highest ready version is the default
//!   other.onnx              a bare file is version 1 of "other", metadata in other.toml
//!   digits_model.onnx       the seed's naming: served as "digits"
//! ```

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use aicp_core::{Batching, Error, ErrorKind, ModelMetadata, Result, validate_model_name};
use serde::Serialize;

use crate::chain::{self, CHAIN_VERSION};
use crate::discovery::{Report, Source, SourceStamp, VersionStamp, discover};
use crate::engines::Engines;
use crate::loading::{VersionSource, count_load, load_version};
use crate::reload::{self, Outcome, Plan};
use crate::served::{Runner, ServedModel};

/// Whether `chain`, just resolved, runs the same step versions as the chain `before` serves.
fn runs_as(chain: &chain::Chain, before: &ServedModel) -> bool {
    match &before.runner {
        Runner::Chain(then) => chain.runs(then),
        Runner::Scheduler(_) => false,
    }
}

/// A version's state.
#[derive(Clone)]
pub enum VersionState {
    Ready(Arc<ServedModel>),
    Failed(String),
}

#[derive(Clone)]
pub struct ModelVersion {
    pub version: u64,
    pub file: PathBuf,
    /// The files this state was loaded from, as they were then.
    stamp: VersionStamp,
    pub state: VersionState,
    /// Why the version's files, changed since, could not be loaded again; the load in `state`
    /// still serves.
    pub reload_error: Option<String>,
}

/// One model: its metadata and versions.
#[derive(Clone)]
pub struct ModelEntry {
    pub name: String,
    /// The file or directory the model came from, relative to the repository.
    pub source: PathBuf,
    pub metadata: Arc<ModelMetadata>,
    pub versions: BTreeMap<u64, ModelVersion>,
    /// Why the model as a whole could not be loaded (bad metadata, no versions, unloaded).
    pub error: Option<String>,
    /// The files it was loaded from, as they were then.
    stamp: SourceStamp,
}

impl ModelEntry {
    /// A model taken out of service by an operator: listed, never served.
    fn unloaded(name: &str, source: PathBuf) -> Self {
        Self {
            name: name.to_string(),
            source,
            metadata: Arc::new(ModelMetadata::default()),
            versions: BTreeMap::new(),
            error: Some(UNLOADED.into()),
            stamp: SourceStamp::default(),
        }
    }

    /// Whether an operator unloaded it.
    pub fn is_unloaded(&self) -> bool {
        self.error.as_deref() == Some(UNLOADED)
    }

    /// The highest ready version.
    pub fn default_version(&self) -> Option<&Arc<ServedModel>> {
        self.versions.values().rev().find_map(|v| match &v.state {
            VersionState::Ready(model) => Some(model),
            VersionState::Failed(_) => None,
        })
    }

    /// "ready" when a version serves, else "failed".
    pub fn state(&self) -> ModelState {
        if self.default_version().is_some() {
            ModelState::Ready
        } else {
            ModelState::Failed
        }
    }

    /// Why nothing serves: the model's error or the newest version's.
    pub fn reason(&self) -> Option<String> {
        if self.default_version().is_some() {
            return None;
        }
        self.error.clone().or_else(|| {
            self.versions.values().rev().find_map(|v| match &v.state {
                VersionState::Failed(reason) => Some(format!("version {}: {reason}", v.version)),
                VersionState::Ready(_) => None,
            })
        })
    }
}

const UNLOADED: &str =
    "unloaded by an operator (load it again with POST /v2/repository/models/{name}/load)";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ModelState {
    Ready,
    Failed,
}

/// Whether a version that becomes ready says so in the log at `info`: not at start-up, where
/// `serve` prints each model's line itself, but on every later change.
#[derive(Debug, Clone, Copy)]
enum Announce {
    Yes,
    No,
}

/// Every model found in a directory. A repository never changes: a change to the directory
/// makes a new one ([`Repository::with_model`]), which keeps every unchanged version's loaded
/// model, so requests in flight finish on what they started with.
#[derive(Clone)]
pub struct Repository {
    pub dir: PathBuf,
    models: BTreeMap<String, ModelEntry>,
    /// Kept alive as long as the models loaded through them.
    engines: Arc<Engines>,
    /// The server's defaults for what a model's `[batching]` table leaves out.
    batching: Batching,
}

impl Repository {
    /// Scans `dir` and loads every model version, warming each up. A model that fails is kept
    /// with its reason; only an unreadable directory is an error. `batching` holds the server's
    /// defaults for what a model's `[batching]` table leaves out.
    pub fn load(dir: &Path, engines: Arc<Engines>, batching: &Batching) -> Result<Self> {
        let sources = discover(dir, Report::Warn)?;
        let mut repository = Self {
            dir: dir.to_path_buf(),
            models: BTreeMap::new(),
            engines,
            batching: batching.clone(),
        };
        for (name, source) in &sources {
            // `serve` reports start-up's models itself, one line each.
            let entry = repository.load_model(name, source, None, Announce::No);
            repository.models.insert(name.clone(), entry);
        }
        repository.resolve_chains(None);
        Ok(repository)
    }

    /// The models the directory holds now, by name, with their files; nothing is loaded.
    /// What is skipped (links out of the directory, bad names) was reported when the
    /// repository was first loaded and is logged here at debug level only, since a watcher
    /// looks every few seconds.
    pub fn discover(&self) -> Result<BTreeMap<String, Source>> {
        discover(&self.dir, Report::Debug)
    }

    /// A copy of this repository with model `name` loaded from `source` (reusing the versions
    /// whose files did not change, and keeping the previous load of any version that fails to
    /// load again), or removed when `source` is `None`.
    pub fn with_model(&self, name: &str, source: Option<&Source>) -> Self {
        let mut next = self.clone();
        match source {
            Some(source) => {
                let entry = self.load_model(name, source, self.models.get(name), Announce::Yes);
                next.models.insert(name.to_string(), entry);
            }
            None => {
                next.models.remove(name);
            }
        }
        next.resolve_chains(Some(self));
        next
    }

    /// A copy of this repository with model `name` taken out of service, listed as unloaded.
    pub fn with_unloaded(&self, name: &str) -> Self {
        let mut next = self.clone();
        let source = self
            .models
            .get(name)
            .map(|m| m.source.clone())
            .unwrap_or_default();
        next.models
            .insert(name.to_string(), ModelEntry::unloaded(name, source));
        next.resolve_chains(Some(self));
        next
    }

    /// Whether model `name` was loaded from exactly the files `source` now has.
    pub fn is_current(&self, name: &str, source: &Source) -> bool {
        self.models
            .get(name)
            .is_some_and(|entry| entry.stamp == source.stamp())
    }

    pub fn models(&self) -> impl Iterator<Item = &ModelEntry> {
        self.models.values()
    }

    pub fn model(&self, name: &str) -> Result<&ModelEntry> {
        validate_model_name(name)?;
        self.models.get(name).ok_or_else(|| {
            let available: Vec<&str> = self.models.keys().map(String::as_str).collect();
            Error::not_found(format!(
                "model {name:?} not found; available models: {}",
                if available.is_empty() {
                    "none".to_string()
                } else {
                    available.join(", ")
                }
            ))
        })
    }

    /// The model version to serve a request: `version`, or the highest ready one.
    pub fn get(&self, name: &str, version: Option<u64>) -> Result<Arc<ServedModel>> {
        let entry = self.model(name)?;
        let unavailable = |reason: String| {
            Error::new(
                ErrorKind::Unavailable,
                format!("model {name:?} is not ready: {reason}"),
            )
        };
        match version {
            None => entry.default_version().cloned().ok_or_else(|| {
                unavailable(entry.reason().unwrap_or_else(|| "no version loaded".into()))
            }),
            Some(v) => match entry.versions.get(&v).map(|v| &v.state) {
                Some(VersionState::Ready(model)) => Ok(model.clone()),
                Some(VersionState::Failed(reason)) => {
                    Err(unavailable(format!("version {v}: {reason}")))
                }
                None => Err(Error::not_found(format!(
                    "model {name:?} has no version {v}; versions: {:?}",
                    entry.versions.keys().collect::<Vec<_>>()
                ))),
            },
        }
    }

    /// The entry of chain `name` (its model.toml lists steps), its version left to
    /// [`Self::resolve_chains`]; refused when the directory also holds model files.
    fn chain_entry(
        &self,
        name: &str,
        source: &Source,
        relative: PathBuf,
        metadata: Arc<ModelMetadata>,
        stamp: SourceStamp,
    ) -> ModelEntry {
        let error = (!source.versions.is_empty()).then(|| {
            format!(
                "model.toml lists [[steps]], so {name:?} is a chain, but its directory also \
                 holds versions ({}); a chain runs other models and has no model file of its own",
                source
                    .versions
                    .keys()
                    .map(|v| format!("{v}/model.onnx"))
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        });
        ModelEntry {
            name: name.to_string(),
            source: relative,
            metadata,
            versions: BTreeMap::new(),
            error,
            stamp,
        }
    }

    /// Resolves every chain against the models as they are now: a chain whose steps all
    /// serve is ready, one whose step does not is failed with the reason. A chain whose
    /// model.toml and step versions are those it ran on in `previous` is kept as it was; one
    /// whose steps changed keeps its statistics.
    fn resolve_chains(&mut self, previous: Option<&Repository>) {
        let chains: Vec<String> = self
            .models
            .values()
            .filter(|entry| !entry.metadata.steps.is_empty() && !entry.is_unloaded())
            .filter(|entry| entry.error.is_none())
            .map(|entry| entry.name.clone())
            .collect();
        for name in chains {
            let entry = &self.models[&name];
            let before = previous
                .and_then(|p| p.models.get(&name))
                .filter(|before| Arc::ptr_eq(&before.metadata, &entry.metadata))
                .and_then(|before| before.versions.get(&CHAIN_VERSION))
                .and_then(|version| match &version.state {
                    VersionState::Ready(served) => Some(served.clone()),
                    VersionState::Failed(_) => None,
                });
            let resolved = chain::resolve(&entry.metadata.steps, |model, version| {
                if self.models.get(model).is_some_and(|m| m.is_unloaded()) {
                    return Err(format!("model {model:?} is {UNLOADED}"));
                }
                self.get(model, version).map_err(|e| e.message)
            });
            let state = match (resolved, before) {
                // The same steps: the chain as it was (its tokenizer is not read again).
                (Ok((chain, _)), Some(before)) if runs_as(&chain, &before) => {
                    VersionState::Ready(before)
                }
                (Ok(resolved), before) => {
                    let dir = self.dir.join(&entry.source);
                    let stats = before.map(|b| b.stats.clone());
                    match chain::served(&name, &entry.metadata, Some(&dir), resolved, stats) {
                        Ok(chain) => {
                            tracing::info!("model {name}: {}", chain.notes.join("; "));
                            VersionState::Ready(Arc::new(chain))
                        }
                        Err(reason) => VersionState::Failed(reason),
                    }
                }
                (Err(reason), _) => VersionState::Failed(reason),
            };
            // Said once, not at every change of another model.
            if let VersionState::Failed(reason) = &state {
                let said = previous
                    .and_then(|p| p.models.get(&name))
                    .and_then(|e| e.versions.get(&CHAIN_VERSION))
                    .is_some_and(|v| matches!(&v.state, VersionState::Failed(r) if r == reason));
                if !said {
                    tracing::error!("model {name} (a chain) is not ready: {reason}");
                }
            }
            let entry = self.models.get_mut(&name).expect("listed above");
            let file = entry.source.join("model.toml");
            entry.versions = BTreeMap::from([(
                CHAIN_VERSION,
                ModelVersion {
                    version: CHAIN_VERSION,
                    file,
                    stamp: entry.stamp.version(CHAIN_VERSION),
                    state,
                    reload_error: None,
                },
            )]);
        }
    }

    /// Loads model `name` from `source`. With the `previous` entry of the same model, a version
    /// whose files did not change is reused as it is, and a version that loaded before but
    /// fails now keeps its previous load (the failure is kept as its `reload_error`).
    fn load_model(
        &self,
        name: &str,
        source: &Source,
        previous: Option<&ModelEntry>,
        announce: Announce,
    ) -> ModelEntry {
        let stamp = source.stamp();
        let relative = source
            .path
            .strip_prefix(&self.dir)
            .unwrap_or(&source.path)
            .to_path_buf();
        let metadata = match &source.metadata {
            None => Ok(ModelMetadata::default()),
            Some(file) => ModelMetadata::read(file).map_err(|e| e.to_string()),
        };
        let (metadata, mut error) = match metadata {
            Ok(m) => (Arc::new(m), None),
            Err(e) => {
                if let Some(previous) = previous.filter(|p| p.default_version().is_some()) {
                    tracing::error!("model {name}: {e}; its previous load still serves");
                    let mut kept = previous.clone();
                    kept.stamp = stamp;
                    for version in kept.versions.values_mut() {
                        version.reload_error = Some(e.clone());
                    }
                    return kept;
                }
                (Arc::new(ModelMetadata::default()), Some(e))
            }
        };
        if !metadata.steps.is_empty() && error.is_none() {
            return self.chain_entry(name, source, relative, metadata, stamp);
        }
        if source.versions.is_empty() && error.is_none() {
            error = Some(
                "no version directory with a model.onnx (expected <name>/1/model.onnx)".into(),
            );
        }
        let mut versions = BTreeMap::new();
        for (&version, file) in &source.versions {
            let version_stamp = stamp.version(version);
            let before = previous
                .filter(|p| !p.is_unloaded())
                .and_then(|p| p.versions.get(&version));
            let unchanged = before.is_some_and(|b| b.stamp == version_stamp);
            let (state, reload_error) =
                match reload::plan(before.is_some(), unchanged, error.as_deref()) {
                    Plan::Keep => {
                        if let Some(before) = before {
                            versions.insert(version, before.clone());
                        }
                        continue;
                    }
                    Plan::Refuse(reason) => (VersionState::Failed(reason), None),
                    Plan::Load => {
                        let loaded = load_version(
                            name,
                            version,
                            VersionSource {
                                file,
                                metadata: &metadata,
                                metadata_dir: source.metadata.as_deref().and_then(Path::parent),
                            },
                            &self.engines,
                            &self.batching,
                        )
                        .map(Arc::new);
                        count_load(name, if loaded.is_ok() { "success" } else { "failure" });
                        let served_before = before.and_then(|b| match &b.state {
                            VersionState::Ready(served) => Some(served.clone()),
                            VersionState::Failed(_) => None,
                        });
                        match reload::after_load(loaded, served_before) {
                            Outcome::Ready {
                                served,
                                reload_error: None,
                            } => {
                                let engine = served.engine_name();
                                match announce {
                                    Announce::Yes => tracing::info!(
                                        "model {name} version {version} ready on {engine}"
                                    ),
                                    Announce::No => tracing::debug!(
                                        "model {name} version {version} ready on {engine}"
                                    ),
                                }
                                (VersionState::Ready(served), None)
                            }
                            Outcome::Ready {
                                served,
                                reload_error: Some(note),
                            } => {
                                tracing::error!("model {name} version {version}: {note}");
                                (VersionState::Ready(served), Some(note))
                            }
                            Outcome::Failed(reason) => {
                                tracing::error!("model {name} version {version} failed: {reason}");
                                (VersionState::Failed(reason), None)
                            }
                        }
                    }
                };
            versions.insert(
                version,
                ModelVersion {
                    version,
                    file: file.clone(),
                    stamp: version_stamp,
                    state,
                    reload_error,
                },
            );
        }
        ModelEntry {
            name: name.to_string(),
            source: relative,
            metadata,
            versions,
            error,
            stamp,
        }
    }
}

/// The reload table ([`crate::reload`]) as a repository lives it: real model files in a
/// directory, a fake engine that counts its loads and fails them when told.
#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

    use aicp_core::{ModelSignature, Tensor};
    use aicp_engine::{Engine, EngineKind, LoadOptions, Runnable};

    use super::*;

    #[derive(Default)]
    struct Fake {
        loads: Arc<AtomicUsize>,
        failing: Arc<AtomicBool>,
        /// Says it is the GPU engine.
        gpu: bool,
        /// How long each run takes.
        run_time: std::time::Duration,
        /// Panics in `load`, as an engine may on a crafted model.
        panics: bool,
        /// Its instances panic in `run`, as tract does dividing integer zeros by zeros.
        runs_panic: bool,
    }

    struct Ran {
        run_time: std::time::Duration,
        panics: bool,
    }

    impl Runnable for Ran {
        fn run(&mut self, _: Vec<aicp_core::Input>) -> Result<Vec<Tensor>> {
            assert!(!self.panics, "attempt to divide by zero");
            std::thread::sleep(self.run_time);
            Ok(Vec::new())
        }
    }

    impl Engine for Fake {
        fn kind(&self) -> EngineKind {
            if self.gpu {
                aicp_engine::CUDA
            } else {
                aicp_engine::tract::KIND
            }
        }

        fn load(&self, _: &Path, _: &ModelSignature, _: &LoadOptions) -> Result<Box<dyn Runnable>> {
            self.loads.fetch_add(1, Ordering::SeqCst);
            assert!(!self.panics, "a crafted model");
            if self.failing.load(Ordering::SeqCst) {
                return Err(Error::invalid("the fake engine was told to fail"));
            }
            Ok(Box::new(Ran {
                run_time: self.run_time,
                panics: self.runs_panic,
            }))
        }
    }

    struct Setup {
        dir: tempfile::TempDir,
        repository: Repository,
        loads: Arc<AtomicUsize>,
        failing: Arc<AtomicBool>,
    }

    /// A directory with model "m" version 1 (the bundled MLP's file), loaded on the fake engine
    /// with one instance per version.
    fn setup() -> Setup {
        let one = Batching {
            instances: Some(1),
            ..Batching::default()
        };
        setup_on(Fake::default(), &one)
    }

    /// The same directory, loaded on `fake` with the server's batching `flags`.
    fn setup_on(fake: Fake, flags: &Batching) -> Setup {
        let dir = tempfile::tempdir().unwrap();
        // At run time first: a build directory shared between checkouts keeps the path of the
        // checkout that compiled this test.
        let bundled = std::env::var_os("CARGO_MANIFEST_DIR")
            .map_or_else(
                || env!("CARGO_MANIFEST_DIR").into(),
                std::path::PathBuf::from,
            )
            .join("../../models/mnist/1/model.onnx");
        std::fs::create_dir_all(dir.path().join("m/1")).unwrap();
        std::fs::copy(&bundled, dir.path().join("m/1/model.onnx")).unwrap();
        let (loads, failing) = (fake.loads.clone(), fake.failing.clone());
        let engines = Arc::new(Engines::only(Box::new(fake)));
        let repository = Repository::load(dir.path(), engines, flags).unwrap();
        Setup {
            dir,
            repository,
            loads,
            failing,
        }
    }

    impl Setup {
        fn reload(&self) -> Repository {
            let sources = self.repository.discover().unwrap();
            self.repository.with_model("m", sources.get("m"))
        }

        /// A runtime serving this repository, and an executor to run its requests on.
        fn serving(&self) -> (crate::Runtime, tokio::runtime::Runtime) {
            let runtime = crate::Runtime::new();
            runtime.set_repository(self.repository.clone());
            let tokio = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            (runtime, tokio)
        }

        /// Marks a file as rewritten: a new modification time, the same bytes.
        fn touch(&self, path: &str) {
            let file = std::fs::File::options()
                .append(true)
                .open(self.dir.path().join(path))
                .unwrap();
            let later = SystemTime::now() + std::time::Duration::from_secs(5);
            file.set_modified(later).unwrap();
        }
    }

    /// One sample of the model's input.
    fn digit() -> crate::InferInput {
        Tensor::new(vec![1, 784], vec![0.5f32; 784]).unwrap().into()
    }

    fn served(repository: &Repository, version: u64) -> Arc<ServedModel> {
        repository.get("m", Some(version)).unwrap()
    }

    fn version(repository: &Repository, version: u64) -> ModelVersion {
        repository.model("m").unwrap().versions[&version].clone()
    }

    use std::time::SystemTime;

    #[test]
    fn unchanged_files_keep_their_load() {
        let setup = setup();
        assert_eq!(setup.loads.load(Ordering::SeqCst), 1);
        let next = setup.reload();
        assert!(Arc::ptr_eq(
            &served(&setup.repository, 1),
            &served(&next, 1)
        ));
        assert_eq!(
            setup.loads.load(Ordering::SeqCst),
            1,
            "nothing loaded again"
        );
    }

    #[test]
    fn changed_files_that_load_replace_the_old_load() {
        let setup = setup();
        setup.touch("m/1/model.onnx");
        let next = setup.reload();
        assert!(!Arc::ptr_eq(
            &served(&setup.repository, 1),
            &served(&next, 1)
        ));
        assert_eq!(version(&next, 1).reload_error, None);
        assert_eq!(setup.loads.load(Ordering::SeqCst), 2);
    }

    #[test]
    fn a_ready_version_whose_reload_fails_keeps_serving_its_old_load() {
        let setup = setup();
        setup.failing.store(true, Ordering::SeqCst);
        setup.touch("m/1/model.onnx");
        let next = setup.reload();
        assert!(Arc::ptr_eq(
            &served(&setup.repository, 1),
            &served(&next, 1)
        ));
        let note = version(&next, 1).reload_error.unwrap();
        assert!(note.contains("told to fail") && note.contains("previous load still serves"));
        assert_eq!(next.model("m").unwrap().state(), ModelState::Ready);
    }

    #[test]
    fn a_new_version_that_fails_is_failed_with_the_reason() {
        let setup = setup();
        setup.failing.store(true, Ordering::SeqCst);
        std::fs::create_dir_all(setup.dir.path().join("m/2")).unwrap();
        std::fs::copy(
            setup.dir.path().join("m/1/model.onnx"),
            setup.dir.path().join("m/2/model.onnx"),
        )
        .unwrap();
        let next = setup.reload();
        let VersionState::Failed(reason) = version(&next, 2).state else {
            panic!("version 2 must fail");
        };
        assert!(reason.contains("told to fail"), "{reason}");
        // The default version is still the ready one.
        assert_eq!(next.get("m", None).unwrap().version, 1);
    }

    #[test]
    fn an_engine_that_panics_fails_the_version_it_loads_and_nothing_else() {
        let fake = Fake {
            panics: true,
            ..Fake::default()
        };
        let setup = setup_on(fake, &Batching::default());
        let VersionState::Failed(reason) = version(&setup.repository, 1).state else {
            panic!("version 1 must fail");
        };
        assert_eq!(
            reason,
            "the engine panicked while loading it: a crafted model"
        );
    }

    #[test]
    fn a_warmup_that_panics_is_noted_and_the_model_serves_on_a_fresh_instance() {
        let fake = Fake {
            runs_panic: true,
            ..Fake::default()
        };
        let one = Batching {
            instances: Some(1),
            ..Batching::default()
        };
        let setup = setup_on(fake, &one);
        let served = served(&setup.repository, 1);
        assert_eq!(
            served.notes,
            vec!["warm-up inference failed: the engine panicked: attempt to divide by zero"]
        );
        // The instance that panicked was replaced.
        assert_eq!(setup.loads.load(Ordering::SeqCst), 2);
    }

    #[test]
    fn an_unreadable_model_toml_keeps_a_serving_model_as_it_was() {
        let setup = setup();
        std::fs::write(setup.dir.path().join("m/model.toml"), "lables = [1]").unwrap();
        let next = setup.reload();
        assert!(Arc::ptr_eq(
            &served(&setup.repository, 1),
            &served(&next, 1)
        ));
        let note = version(&next, 1).reload_error.unwrap();
        assert!(note.contains("lables"), "{note}");
        assert_eq!(setup.loads.load(Ordering::SeqCst), 1);
    }

    #[test]
    fn an_unreadable_model_toml_fails_a_model_that_never_served() {
        let setup = setup();
        let unloaded = setup.repository.with_unloaded("m");
        std::fs::write(setup.dir.path().join("m/model.toml"), "lables = [1]").unwrap();
        let sources = unloaded.discover().unwrap();
        let next = unloaded.with_model("m", sources.get("m"));
        let VersionState::Failed(reason) = version(&next, 1).state else {
            panic!("version 1 must fail");
        };
        assert!(reason.contains("lables"), "{reason}");
    }

    #[test]
    fn a_model_loaded_after_an_unload_is_loaded_afresh() {
        let setup = setup();
        let unloaded = setup.repository.with_unloaded("m");
        assert!(unloaded.model("m").unwrap().is_unloaded());
        assert!(unloaded.get("m", None).is_err());
        let sources = unloaded.discover().unwrap();
        let next = unloaded.with_model("m", sources.get("m"));
        assert!(!Arc::ptr_eq(
            &served(&setup.repository, 1),
            &served(&next, 1)
        ));
        assert_eq!(setup.loads.load(Ordering::SeqCst), 2);
    }

    #[test]
    fn a_ticket_counts_its_request_once_and_a_ticket_dropped_unused_counts_a_failure() {
        let setup = setup();
        let (runtime, tokio) = setup.serving();
        let stats = || served(&setup.repository, 1).stats.snapshot();
        // A front end refusing the request between lookup and run does nothing for it...
        drop(runtime.model("m", None).unwrap());
        assert_eq!((stats().success.count, stats().fail.count), (0, 1));
        // ...and a request that runs is counted by the run, once.
        let ticket = runtime.model("m", None).unwrap();
        tokio
            .block_on(runtime.run(ticket, vec![digit()], None))
            .unwrap();
        assert_eq!((stats().success.count, stats().fail.count), (1, 1));
    }

    /// What `aicp serve` once got wrong: a model on the GPU engine, served without batching
    /// flags, takes the GPU's defaults; a flag given wins over them.
    #[test]
    fn a_model_on_the_gpu_takes_the_gpus_batching_defaults_unless_a_flag_is_given() {
        let on_gpu = || Fake {
            gpu: true,
            ..Fake::default()
        };
        let setup = setup_on(on_gpu(), &Batching::default());
        let policy = &served(&setup.repository, 1).policy;
        assert_eq!(
            policy.max_queue_delay,
            std::time::Duration::from_micros(crate::policy::defaults::GPU_MAX_QUEUE_DELAY_US)
        );
        assert_eq!(policy.instances, crate::policy::defaults::GPU_INSTANCES);
        assert_eq!(
            policy.max_batch_size,
            crate::policy::defaults::GPU_MAX_BATCH_SIZE
        );
        let flags = Batching {
            max_queue_delay_us: Some(0),
            instances: Some(1),
            ..Batching::default()
        };
        let setup = setup_on(on_gpu(), &flags);
        let policy = &served(&setup.repository, 1).policy;
        assert_eq!(policy.max_queue_delay, std::time::Duration::ZERO);
        assert_eq!(policy.instances, 1);
    }

    /// A caller that leaves while its request runs is not counted as a failure (its ticket was
    /// spent on the run), nor as a success.
    #[test]
    fn a_request_whose_caller_leaves_during_its_run_is_not_counted_as_refused() {
        let slow = Fake {
            run_time: std::time::Duration::from_millis(500),
            ..Fake::default()
        };
        let one = Batching {
            instances: Some(1),
            ..Batching::default()
        };
        let setup = setup_on(slow, &one);
        let (runtime, tokio) = setup.serving();
        let ticket = runtime.model("m", None).unwrap();
        let run = runtime.run(ticket, vec![digit()], None);
        let left = tokio.block_on(async {
            tokio::time::timeout(std::time::Duration::from_millis(20), run).await
        });
        assert!(left.is_err(), "the caller left before the answer");
        let stats = served(&setup.repository, 1).stats.snapshot();
        assert_eq!((stats.success.count, stats.fail.count), (0, 0));
    }
}
