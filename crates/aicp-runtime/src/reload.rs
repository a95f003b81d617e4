//! What a model version becomes when its model is loaded again (a watcher saw its files change,
//! or an operator asked), as one table. The rule behind it: a version that serves keeps serving
//! until something better replaces it. A broken rewrite never takes a working model down.
//!
//! | the version before | its files now | model.toml   | load    | the version after                  |
//! |--------------------|---------------|--------------|---------|------------------------------------|
//! | loaded             | unchanged     | (any)        | skipped | the same load, as it was           |
//! | any or none        | changed, new  | unreadable   | skipped | failed: model.toml's error         |
//! | any or none        | changed, new  | readable     | ok      | ready: the new load                |
//! | ready              | changed       | readable     | failed  | ready: the old load, `reload_error`|
//! | failed or none     | changed, new  | readable     | failed  | failed: the load's error           |
//!
//! One more row is about the whole model: when model.toml turns unreadable and the model has a
//! ready version, the model as it was keeps serving, every version with the error as its
//! `reload_error` ([`crate::repository`]). A model an operator unloaded has no version before.

/// What to do with one version, before anything is loaded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Plan {
    /// Its files did not change since it was loaded: keep that load.
    Keep,
    /// It cannot load: model.toml is unreadable (the reason).
    Refuse(String),
    /// Load it.
    Load,
}

/// The first three columns of the table: whether the version's files are `unchanged` since
/// its load before (if there was one), and model.toml's error.
pub fn plan(loaded_before: bool, unchanged: bool, metadata_error: Option<&str>) -> Plan {
    match (loaded_before && unchanged, metadata_error) {
        (true, _) => Plan::Keep,
        (false, Some(error)) => Plan::Refuse(error.to_string()),
        (false, None) => Plan::Load,
    }
}

/// A version's state: serving `T`, or failed with the reason.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome<T> {
    /// Serves `T`; with the reason a newer load failed, when the old one still serves.
    Ready {
        served: T,
        reload_error: Option<String>,
    },
    Failed(String),
}

/// The last two columns: the version after a load that gave `loaded`, given what served before.
pub fn after_load<T>(loaded: Result<T, String>, served_before: Option<T>) -> Outcome<T> {
    match (loaded, served_before) {
        (Ok(served), _) => Outcome::Ready {
            served,
            reload_error: None,
        },
        (Err(reason), Some(served)) => Outcome::Ready {
            served,
            reload_error: Some(format!(
                "its files changed and failed to load ({reason}); the previous load still serves"
            )),
        },
        (Err(reason), None) => Outcome::Failed(reason),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unchanged_files_keep_their_load_whatever_model_toml_says() {
        assert_eq!(plan(true, true, None), Plan::Keep);
        assert_eq!(plan(true, true, Some("bad toml")), Plan::Keep);
    }

    #[test]
    fn changed_or_new_files_load_unless_model_toml_is_unreadable() {
        for (before, unchanged) in [(true, false), (false, false), (false, true)] {
            assert_eq!(plan(before, unchanged, None), Plan::Load);
            assert_eq!(
                plan(before, unchanged, Some("bad toml")),
                Plan::Refuse("bad toml".into())
            );
        }
    }

    #[test]
    fn a_load_that_works_serves_the_new_load() {
        assert_eq!(
            after_load(Ok("new"), Some("old")),
            Outcome::Ready {
                served: "new",
                reload_error: None
            }
        );
        assert_eq!(
            after_load::<&str>(Ok("new"), None),
            Outcome::Ready {
                served: "new",
                reload_error: None
            }
        );
    }

    #[test]
    fn a_failed_reload_of_a_ready_version_keeps_the_old_load_and_says_why() {
        let Outcome::Ready {
            served,
            reload_error,
        } = after_load(Err("bad graph".into()), Some("old"))
        else {
            panic!("the old load must keep serving");
        };
        assert_eq!(served, "old");
        let note = reload_error.unwrap();
        assert!(note.contains("bad graph") && note.contains("previous load still serves"));
    }

    #[test]
    fn a_failed_load_with_nothing_serving_fails_with_the_reason() {
        assert_eq!(
            after_load::<&str>(Err("bad graph".into()), None),
            Outcome::Failed("bad graph".into())
        );
    }
}
