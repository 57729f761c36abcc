//! What the server keeps on disk: an upload (code directory, module) goes once no function
//! uses it, after a redeploy, a removal or a restart; execution records go by the
//! retention rule after a snapshot, while what they taught the graph stays. Both are
//! counted in `/metrics`; neither can grow without bound.

use super::*;
use baton_server::Retention;

/// A process function's code: the Python example with `version` in a file of its own, so
/// each version has its own content key.
fn code_of(version: &str) -> Vec<u8> {
    let dir = tempfile::tempdir().unwrap();
    for file in ["upper.py", "baton_worker.py"] {
        std::fs::copy(examples().join("python").join(file), dir.path().join(file)).unwrap();
    }
    std::fs::write(dir.path().join("version.txt"), version).unwrap();
    baton_runtime::code::pack_dir(dir.path()).unwrap()
}

fn put_code(api: &Client, name: &str, code: &[u8]) -> Response {
    let body = json!({
        "manifest": python_manifest(name, "upper.py", ""),
        "code_base64": base64::engine::general_purpose::STANDARD.encode(code),
    });
    put_json(api, name, &body)
}

/// The code directories the server holds (staging ones aside).
fn code_dirs(data: &Path) -> usize {
    std::fs::read_dir(data.join("code")).map_or(0, |entries| {
        entries
            .flatten()
            .filter(|e| !e.file_name().to_string_lossy().starts_with('.'))
            .count()
    })
}

#[test]
fn an_upload_goes_when_no_function_uses_it() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path(), |_| {});
    let api = client(&server);
    let (v1, v2) = (code_of("1"), code_of("2"));
    assert_eq!(put_code(&api, "upper", &v1).status, 201);
    assert_eq!(invoke(&api, "upper", "a").status, 200);
    assert_eq!(code_dirs(dir.path()), 1);
    // A redeploy: the old version's directory goes.
    assert_eq!(put_code(&api, "upper", &v2).status, 200);
    assert_eq!(code_dirs(dir.path()), 1);
    assert_eq!(invoke(&api, "upper", "b").json()["output"], "B");
    // Shared by two functions: it stays until neither uses it.
    assert_eq!(put_code(&api, "other", &v2).status, 201);
    assert_eq!(code_dirs(dir.path()), 1);
    let delete = |name: &str| {
        api.request(
            "DELETE",
            &format!("/v1/functions/{name}"),
            "text/plain",
            b"",
        )
        .unwrap()
        .status
    };
    assert_eq!(delete("upper"), 204);
    assert_eq!(code_dirs(dir.path()), 1);
    assert_eq!(delete("other"), 204);
    assert_eq!(code_dirs(dir.path()), 0);
    let metrics = api.get("/metrics").unwrap().text();
    assert_eq!(metric(&metrics, "baton_uploads_removed_total"), 2.0);
    drop(server);

    // A directory left behind (a crash between the store and the sweep) goes at the next
    // start; one that a function uses comes back.
    std::fs::create_dir_all(dir.path().join("code/0123abcd")).unwrap();
    let server = start(dir.path(), |_| {});
    assert_eq!(server.restored.removed_uploads, 1);
    assert_eq!(code_dirs(dir.path()), 0);
}

#[test]
fn records_go_by_the_retention_rule_and_what_they_taught_stays() {
    let dir = tempfile::tempdir().unwrap();
    // At most one byte of records: every record a snapshot has learned goes.
    let server = start(dir.path(), |c| {
        c.retention = Retention {
            age: None,
            bytes: Some(1),
        }
    });
    let api = client(&server);
    assert_eq!(
        wasm_deploy(&api, "upper", "../examples/wat/upper.wat").status,
        201
    );
    for _ in 0..5 {
        assert_eq!(invoke(&api, "upper", "x").status, 200);
    }
    let before = api.get("/metrics").unwrap().text();
    assert!(metric(&before, "baton_store_records_bytes") > 0.0);
    assert_eq!(
        api.get("/v1/logs?tail=10").unwrap().text().lines().count(),
        5
    );
    server.snapshot().unwrap();
    let after = api.get("/metrics").unwrap().text();
    assert_eq!(metric(&after, "baton_store_records_pruned_total"), 5.0);
    assert_eq!(metric(&after, "baton_store_records_bytes"), 0.0);
    assert!(metric(&after, "baton_store_record_bytes_pruned_total") > 0.0);
    assert_eq!(api.get("/v1/logs?tail=10").unwrap().text(), "");
    // The graph learned them, and a restart brings it back from the snapshot alone (no
    // record is left to replay).
    drop(server);
    let server = start(dir.path(), |_| {});
    assert!(server.restored.snapshot);
    assert_eq!(server.restored.replayed_records, 0);
    let restored = client(&server).get("/v1/graph").unwrap().json();
    let upper = restored["nodes"]
        .as_array()
        .and_then(|nodes| nodes.iter().find(|n| n["task"] == "upper"))
        .unwrap_or_else(|| panic!("{restored}"));
    assert!(upper["weight"].as_f64().is_some_and(|w| w > 0.0), "{upper}");
}

#[test]
fn a_stored_sequence_with_no_steps_is_not_restored_and_breaks_nothing() {
    // Nothing declares one now, but a store written by another version, or edited, may
    // hold one: the restart skips it and says so, and invoking its name is a 404, where it
    // used to panic the request's thread.
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path(), |_| {});
    let api = client(&server);
    assert_eq!(put_code(&api, "upper", &code_of("1")).status, 201);
    let declare = |steps: Value| {
        api.request(
            "POST",
            "/v1/sequences/twice",
            "application/json",
            json!({ "steps": steps }).to_string().as_bytes(),
        )
        .unwrap()
    };
    assert_eq!(declare(json!(["upper", "upper"])).status, 201);
    let empty = declare(json!([]));
    assert_eq!(empty.status, 400, "{}", empty.text());
    let too_long = declare(json!(vec!["upper"; baton_runtime::director::MAX_HOPS + 1]));
    assert_eq!(too_long.status, 400, "{}", too_long.text());
    assert!(too_long.text().contains("1 to 64"), "{}", too_long.text());
    drop(server);

    let store = baton_store::Store::open(&dir.path().join("baton.db")).unwrap();
    store.put_sequence("hollow", &[]).unwrap();
    drop(store);
    let server = start(dir.path(), |_| {});
    assert_eq!(server.restored.sequences, 1, "`twice` only");
    let api = client(&server);
    let hollow = invoke(&api, "hollow", "a");
    assert_eq!(hollow.status, 404, "{}", hollow.text());
    assert_eq!(invoke(&api, "twice", "a").json()["output"], "A");
}
