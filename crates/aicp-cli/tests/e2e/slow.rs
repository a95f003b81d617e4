//! The slow lane (`scripts/test.sh slow`), for before a release and whenever the serving core
//! changes: a minute's soak, and three replicas behind nginx through a restart and a kill.
//! Each test is ignored, so the full lane leaves them out; the slow lane runs exactly these.

mod replicas;

#[test]
#[ignore = "slow lane: scripts/test.sh slow"]
fn a_minute_of_everything_at_once_gets_only_the_expected_answers_and_flat_memory() {
    crate::soak::soak(60);
}
