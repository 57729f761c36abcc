//! Alibaba microservice call graphs, both public layouts: 2021
//! (`traceid,timestamp,rpcid,um,rpctype,dm,interface,rt`) and 2022
//! (`timestamp,traceid,service,rpc_id,rpctype,um,uminstanceid,interface,dm,dminstanceid,rt`,
//! possibly with a leading unnamed index column). Columns are found by name.
//!
//! Each row is a call from `um` to `dm`; the callee's invocation is (traceid, rpcid), its
//! caller the invocation whose rpcid is this one without its last segment (`0.1.2` → `0.1`),
//! when that row exists. Time: `timestamp` ms, duration: `rt` ms. The data is messy on
//! purpose and what cannot be used is counted and skipped: negative or non-numeric `rt`,
//! unknown callees (`UNKNOWN`, `UNAVAILABLE`, empty), exact duplicate rows, and rows that
//! repeat an (traceid, rpcid) already seen.

use crate::report::{for_each_csv_row, ReadReport};
use crate::schema::ExecutionRecord;
use rustc_hash::{FxHashMap, FxHashSet};
use std::io::BufRead;
use std::ops::ControlFlow;

fn unknown(service: &str) -> bool {
    matches!(service, "" | "UNKNOWN" | "UNAVAILABLE" | "(?)" | "NAN")
}

/// Reads an Alibaba call-graph CSV (named `source` in messages) into invocation records.
pub fn read_alibaba(
    source: &str,
    reader: impl BufRead,
    report: &mut ReadReport,
) -> Vec<ExecutionRecord> {
    let mut columns: Option<[usize; 5]> = None;
    let mut header_error = None;
    let mut seen_lines: FxHashSet<u64> = FxHashSet::default();
    let mut rows: FxHashMap<(String, String), ExecutionRecord> = FxHashMap::default();
    let mut order: Vec<(String, String)> = Vec::new();
    let (mut negative_rt, mut unknown_callee, mut duplicates, mut repeats) =
        (0u64, 0u64, 0u64, 0u64);
    for_each_csv_row(source, reader, report, |report, line_no, fields| {
        let Some(columns) = columns else {
            let find = |names: &[&str]| {
                names
                    .iter()
                    .find_map(|n| fields.iter().position(|f| f.trim() == *n))
            };
            match (
                find(&["traceid"]),
                find(&["timestamp"]),
                find(&["rpcid", "rpc_id"]),
                find(&["dm"]),
                find(&["rt"]),
            ) {
                (Some(t), Some(ts), Some(r), Some(dm), Some(rt)) => {
                    columns = Some([t, ts, r, dm, rt])
                }
                _ => {
                    header_error = Some(format!(
                        "{source}:{line_no}: header needs traceid, timestamp, rpcid (or rpc_id), dm and rt"
                    ));
                    return ControlFlow::Break(());
                }
            }
            return ControlFlow::Continue(());
        };
        // Exact duplicate rows (the samples have them) are dropped by content hash.
        // FNV-1a over the fields, each closed by 0xff (never in UTF-8 text).
        let hash = fields
            .iter()
            .flat_map(|f| f.bytes().chain(std::iter::once(0xff)))
            .fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
                (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
            });
        if !seen_lines.insert(hash) {
            duplicates += 1;
            report.skipped += 1;
            return ControlFlow::Continue(());
        }
        let [trace_col, ts_col, rpc_col, dm_col, rt_col] = columns;
        let field = |i: usize| fields.get(i).map_or("", |f| f.trim());
        let (trace, rpcid, callee) = (field(trace_col), field(rpc_col), field(dm_col));
        if trace.is_empty() || rpcid.is_empty() {
            report.skip(source, line_no, "empty traceid or rpcid");
            return ControlFlow::Continue(());
        }
        let Ok(timestamp_ms) = field(ts_col).parse::<f64>() else {
            report.skip(
                source,
                line_no,
                format!("timestamp {:?} is not a number", field(ts_col)),
            );
            return ControlFlow::Continue(());
        };
        let rt_ms = match field(rt_col).parse::<f64>() {
            Ok(rt) if rt >= 0.0 && rt.is_finite() && timestamp_ms >= 0.0 => rt,
            _ => {
                negative_rt += 1;
                report.skipped += 1;
                return ControlFlow::Continue(());
            }
        };
        if unknown(callee) {
            unknown_callee += 1;
            report.skipped += 1;
            return ControlFlow::Continue(());
        }
        let key = (trace.to_owned(), rpcid.to_owned());
        if rows.contains_key(&key) {
            repeats += 1;
            report.skipped += 1;
            return ControlFlow::Continue(());
        }
        rows.insert(
            key.clone(),
            ExecutionRecord {
                ts_ns: (timestamp_ms * 1e6) as u64,
                task: callee.to_owned(),
                invocation: format!("{trace}:{rpcid}"),
                duration_us: (rt_ms * 1000.0).round() as u64,
                trace: Some(trace.to_owned()),
                ..ExecutionRecord::default()
            },
        );
        order.push(key);
        ControlFlow::Continue(())
    });
    if let Some(error) = header_error {
        report.broken.push(error);
        return Vec::new();
    }
    for (count, what) in [
        (negative_rt, "negative or non-numeric rt"),
        (
            unknown_callee,
            "an unknown callee (UNKNOWN, UNAVAILABLE or empty dm)",
        ),
        (duplicates, "exact duplicates of an earlier row"),
        (repeats, "a (traceid, rpcid) already seen"),
    ] {
        if count > 0 {
            report
                .notes
                .push(format!("{source}: {count} rows skipped for {what}"));
        }
    }
    let mut records: Vec<ExecutionRecord> = Vec::with_capacity(order.len());
    for key in &order {
        let mut record = rows[key].clone();
        let parent = key.1.rsplit_once('.').map(|(p, _)| p.to_owned());
        if let Some(parent) = parent.filter(|p| rows.contains_key(&(key.0.clone(), p.clone()))) {
            record.parent = Some(format!("{}:{parent}", key.0));
        }
        records.push(record);
    }
    records.sort_by_key(|r| r.ts_ns);
    report.records += records.len() as u64;
    records
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messy_2021_rows_are_cleaned_and_linked() {
        let log = "traceid,timestamp,rpcid,um,rpctype,dm,interface,rt\n\
                   t1,100,0,USER,http,a,i,50\n\
                   t1,101,0.1,a,rpc,b,i,20\n\
                   t1,101,0.1,a,rpc,b,i,20\n\
                   t1,102,0.1.1,b,rpc,c,i,-3\n\
                   t1,103,0.2,a,rpc,UNKNOWN,i,5\n\
                   t1,104,0.1.2,b,mc,d,i,4\n";
        let mut report = ReadReport::default();
        let records = read_alibaba("a.csv", log.as_bytes(), &mut report);
        let links: Vec<(&str, Option<&str>)> = records
            .iter()
            .map(|r| (r.task.as_str(), r.parent.as_deref()))
            .collect();
        assert_eq!(
            links,
            [("a", None), ("b", Some("t1:0")), ("d", Some("t1:0.1"))]
        );
        assert_eq!(report.skipped, 3);
        assert_eq!(report.notes.len(), 3);
        assert_eq!(records[1].duration_us, 20_000);
    }

    #[test]
    fn the_2022_layout_with_an_index_column_reads_by_name() {
        let log = ",timestamp,traceid,service,rpcid,rpctype,um,uminstanceid,interface,dm,dminstanceid,rt\n\
                   0,169526,T_1,S_1,0,rpc,USER,USER,x,MS_1,MS_1_POD_1,3.0\n\
                   1,169527,T_1,S_1,0.1,rpc,MS_1,MS_1_POD_1,y,MS_2,MS_2_POD_3,1.5\n";
        let mut report = ReadReport::default();
        let records = read_alibaba("b.csv", log.as_bytes(), &mut report);
        assert_eq!(records.len(), 2);
        assert_eq!(records[1].parent.as_deref(), Some("T_1:0"));
        assert_eq!(records[1].duration_us, 1_500);
        let mut report = ReadReport::default();
        assert!(read_alibaba("c.csv", "a,b\n1,2\n".as_bytes(), &mut report).is_empty());
        assert!(report.broken[0].contains("header needs traceid"));
    }
}

#[cfg(test)]
mod fuzz {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// Arbitrary rows under a valid header never panic, and every parent link points at
        /// a record that exists.
        #[test]
        fn arbitrary_rows_never_panic(rows in proptest::collection::vec(
            ("[t]{0,1}[0-9]", ".{0,6}", "[0-9.]{0,6}", ".{0,4}", ".{0,5}"), 0..30)) {
            let mut log = String::from("traceid,timestamp,rpcid,um,rpctype,dm,interface,rt\n");
            for (trace, ts, rpcid, dm, rt) in rows {
                log.push_str(&format!("{trace},{ts},{rpcid},u,rpc,{dm},i,{rt}\n"));
            }
            let mut report = ReadReport::default();
            let records = read_alibaba("f.csv", log.as_bytes(), &mut report);
            for record in &records {
                if let Some(parent) = &record.parent {
                    prop_assert!(records.iter().any(|r| &r.invocation == parent));
                }
            }
        }
    }
}
