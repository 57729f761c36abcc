//! The store's tests, on real SQLite files: logs and their filters, every table across a
//! reopen, marks, snapshots and retention, a newer schema refused, a row this version
//! cannot read named in its error.

use super::*;
use baton_trace::schema::Status;

fn record(task: &str, invocation: &str) -> ExecutionRecord {
    ExecutionRecord {
        ts_ns: 1_700_000_000_000_000_000,
        task: task.into(),
        invocation: invocation.into(),
        duration_us: 42,
        status: Some(Status::Ok),
        cold: Some(true),
        ..ExecutionRecord::default()
    }
}

#[test]
fn logs_filter_by_function_and_trace_and_follow_by_id() {
    let store = Store::in_memory().unwrap();
    let traced = |task: &str, invocation: &str, trace: &str| ExecutionRecord {
        trace: Some(trace.into()),
        ..record(task, invocation)
    };
    store
        .append(
            &[
                traced("a", "1", "t1"),
                traced("b", "2", "t1"),
                traced("a", "3", "t2"),
                traced("c", "4", "t3"),
            ],
            "baton",
        )
        .unwrap();
    let tasks = |rows: Vec<(i64, ExecutionRecord)>| -> Vec<String> {
        rows.into_iter().map(|(_, r)| r.invocation).collect()
    };
    let filter = |function: Option<&str>, trace: Option<&str>, after, limit| LogFilter {
        function: function.map(str::to_owned),
        trace: trace.map(str::to_owned),
        after,
        limit,
    };
    // The last n that match, oldest first.
    assert_eq!(
        tasks(store.logs(&filter(Some("a"), None, None, 10)).unwrap()),
        ["1", "3"]
    );
    assert_eq!(
        tasks(store.logs(&filter(Some("a"), None, None, 1)).unwrap()),
        ["3"]
    );
    assert_eq!(
        tasks(store.logs(&filter(None, Some("t1"), None, 10)).unwrap()),
        ["1", "2"]
    );
    assert_eq!(
        tasks(store.logs(&filter(None, None, None, 2)).unwrap()),
        ["3", "4"]
    );
    assert!(store
        .logs(&filter(Some("zz"), None, None, 10))
        .unwrap()
        .is_empty());
    // Following: after the last id seen, in order; nothing new, nothing returned.
    let all = store.logs(&filter(None, None, None, 10)).unwrap();
    let second = all[1].0;
    assert_eq!(
        tasks(store.logs(&filter(None, None, Some(second), 10)).unwrap()),
        ["3", "4"]
    );
    let last = all[3].0;
    assert!(store
        .logs(&filter(None, None, Some(last), 10))
        .unwrap()
        .is_empty());
    store.append(&[traced("a", "5", "t4")], "baton").unwrap();
    assert_eq!(
        tasks(
            store
                .logs(&filter(Some("a"), None, Some(last), 10))
                .unwrap()
        ),
        ["5"]
    );
}

#[test]
fn an_invocation_row_with_a_state_this_version_does_not_know_is_an_error_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("baton.db")).unwrap();
    store.put_invocation("i1", "f", b"", true).unwrap();
    assert_eq!(
        store.invocation("i1").unwrap().unwrap().state,
        InvocationState::Queued
    );
    store
        .conn()
        .execute(
            "UPDATE invocations SET state = 'paused' WHERE id = 'i1'",
            [],
        )
        .unwrap();
    let error = store.invocation("i1").unwrap_err().to_string();
    assert!(
        error.contains("unknown invocation state `paused`"),
        "{error}"
    );
}

#[test]
fn everything_survives_a_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("baton.db");
    {
        let store = Store::open(&path).unwrap();
        assert_eq!(store.schema_version().unwrap(), SCHEMA_VERSION);
        let hash = store
            .put_function("a", "name = \"a\"", Some(b"\0asm"))
            .unwrap();
        store
            .put_function("b", "name = \"b\"", Some(b"\0asm"))
            .unwrap();
        assert_eq!(hash.as_deref(), Some(content_key(b"\0asm").as_str()));
        store.put_sequence("ab", &["a".into(), "b".into()]).unwrap();
        let last = store
            .append(&[record("a", "r1.0"), record("b", "r1.1")], "baton")
            .unwrap();
        store.save_snapshot(last, "{\"learned\":true}").unwrap();
        store.append(&[record("a", "r2.0")], "baton").unwrap();
        store.put_invocation("i1", "ab", b"payload", true).unwrap();
    }
    let store = Store::open(&path).unwrap();
    let functions = store.functions().unwrap();
    assert_eq!(functions.len(), 2);
    let hash = functions[0].module_hash.clone().unwrap();
    assert_eq!(store.module(&hash).unwrap().unwrap(), b"\0asm");
    assert_eq!(store.sequences().unwrap()[0].1, ["a", "b"]);
    let (learned, state) = store.last_snapshot().unwrap().unwrap();
    assert_eq!(state, "{\"learned\":true}");
    let after = store.executions_after(learned, 100).unwrap();
    assert_eq!(after.len(), 1);
    assert_eq!(after[0].1.invocation, "r2.0");
    assert_eq!(store.unfinished_invocations().unwrap()[0].id, "i1");
    store
        .set_invocation("i1", InvocationState::Succeeded, Some("{}"), None)
        .unwrap();
    assert!(store.unfinished_invocations().unwrap().is_empty());
    let recent = store.recent_invocations(None, 10).unwrap();
    assert_eq!(recent.len(), 1);
    assert_eq!(
        (recent[0].id.as_str(), recent[0].state.as_str()),
        ("i1", "succeeded")
    );
    assert!(recent[0].payload.is_empty() && recent[0].response.is_none());
    assert_eq!(
        store
            .recent_invocations(Some(&recent[0].function), 10)
            .unwrap()
            .len(),
        1
    );
    assert!(store
        .recent_invocations(Some("nobody"), 10)
        .unwrap()
        .is_empty());
    assert!(store.recent_invocations(None, 0).unwrap().is_empty());
    // The module is shared: deleting one user keeps it, deleting both drops it.
    store.delete_function("a").unwrap();
    assert!(store.module(&hash).unwrap().is_some());
    store.delete_function("b").unwrap();
    assert!(store.module(&hash).unwrap().is_none());
    assert_eq!(store.tail(2).unwrap().len(), 2);
}

#[test]
fn a_set_mark_is_read_back_and_replaced() {
    let store = Store::in_memory().unwrap();
    assert_eq!(store.mark("k").unwrap(), None);
    store.set_mark("k", "1").unwrap();
    store.set_mark("k", "2").unwrap();
    assert_eq!(store.mark("k").unwrap().as_deref(), Some("2"));
}

#[test]
fn a_newer_schema_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("baton.db");
    drop(Store::open(&path).unwrap());
    let conn = Connection::open(&path).unwrap();
    conn.pragma_update(None, "user_version", SCHEMA_VERSION + 1)
        .unwrap();
    drop(conn);
    let error = Store::open(&path).unwrap_err().to_string();
    assert!(error.contains("newer than this baton"), "{error}");
}

#[test]
fn only_the_newest_snapshots_are_kept() {
    let store = Store::in_memory().unwrap();
    for i in 0..10 {
        store.save_snapshot(i, &format!("{i}")).unwrap();
    }
    let n: i64 = store
        .conn()
        .query_row("SELECT COUNT(*) FROM snapshots", [], |r| r.get(0))
        .unwrap();
    assert_eq!(n, SNAPSHOTS_KEPT);
    assert_eq!(store.last_snapshot().unwrap().unwrap(), (9, "9".into()));
}

#[test]
fn a_mark_is_stored_with_its_records_or_not_at_all() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("baton.db");
    let store = Store::open(&path).unwrap();
    assert_eq!(store.mark("cursor").unwrap(), None);
    let first = store
        .append_marked(
            &[record("a", "1"), record("b", "2")],
            "ingested",
            Some(("cursor", "2")),
        )
        .unwrap();
    // The id returned is the last execution row's, not the mark's.
    assert_eq!(first, store.last_execution_id().unwrap());
    assert_eq!(first, 2);
    let second = store
        .append_marked(&[record("c", "3")], "ingested", Some(("cursor", "3")))
        .unwrap();
    assert_eq!(second, 3);
    // A mark that cannot be set (refused by a trigger put there for this test) takes
    // its records with it.
    Connection::open(&path)
        .unwrap()
        .execute_batch(
            "CREATE TRIGGER refuse BEFORE UPDATE ON meta WHEN NEW.value = 'refused'
             BEGIN SELECT RAISE(ABORT, 'refused'); END;",
        )
        .unwrap();
    let refused = store.append_marked(&[record("d", "4")], "ingested", Some(("cursor", "refused")));
    assert!(refused.is_err());
    drop(store);
    let store = Store::open(&path).unwrap();
    assert_eq!(store.mark("cursor").unwrap().as_deref(), Some("3"));
    assert_eq!(store.last_execution_id().unwrap(), 3);
    assert!(store.tail(10).unwrap().iter().all(|r| r.task != "d"));
}

#[test]
fn records_go_by_age_then_by_size_but_never_past_the_oldest_snapshot() {
    let store = Store::in_memory().unwrap();
    let at = |n: i64| ExecutionRecord {
        ts_ns: (n * 1_000_000_000) as u64,
        ..record("f", &format!("i{n:02}"))
    };
    let all: Vec<ExecutionRecord> = (1..=10).map(at).collect();
    store.append(&all, "baton").unwrap();
    let one = all[0].to_json().to_string().len() as u64;
    assert_eq!(store.executions_bytes().unwrap(), 10 * one);
    // No snapshot: every record may still be needed for a restart.
    assert_eq!(
        store.prune_executions(Some(i64::MAX), Some(0)).unwrap(),
        Pruned::default()
    );
    // A snapshot has learned up to row 8: rows 1–8 may go, 9–10 stay whatever the
    // rules say.
    store.save_snapshot(8, "{}").unwrap();
    let by_age = store.prune_executions(Some(4_000_000_000), None).unwrap();
    assert_eq!(
        by_age,
        Pruned {
            rows: 3,
            bytes: 3 * one
        },
        "ts 1, 2, 3 s"
    );
    let by_size = store.prune_executions(None, Some(5 * one)).unwrap();
    assert_eq!(by_size.rows, 2, "rows 4, 5");
    assert_eq!(store.executions_bytes().unwrap(), 5 * one);
    let rest = store.prune_executions(Some(i64::MAX), Some(0)).unwrap();
    assert_eq!(rest.rows, 3, "rows 6–8; 9 and 10 follow the snapshot");
    let kept: Vec<String> = store
        .tail(10)
        .unwrap()
        .into_iter()
        .map(|r| r.invocation)
        .collect();
    assert_eq!(kept, ["i09", "i10"]);
    assert_eq!(store.executions_bytes().unwrap(), 2 * one);
}

#[test]
fn a_redeploy_drops_the_upload_no_function_uses() {
    let store = Store::in_memory().unwrap();
    let old = store.put_function("f", "m", Some(b"v1")).unwrap().unwrap();
    store.put_function("g", "m", Some(b"shared")).unwrap();
    let new = store.put_function("f", "m", Some(b"v2")).unwrap().unwrap();
    assert!(store.module(&old).unwrap().is_none());
    assert!(store.module(&new).unwrap().is_some());
    store.put_function("h", "m", Some(b"shared")).unwrap();
    store.delete_function("g").unwrap();
    assert!(
        store.module(&content_key(b"shared")).unwrap().is_some(),
        "h uses it"
    );
}
