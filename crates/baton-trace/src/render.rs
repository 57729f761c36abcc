//! The graph as JSON (nodes with their stop probability and weight, edges with probability
//! and delays) or Graphviz DOT, for `baton graph` and the server's `GET /v1/graph`.

use baton_core::{TaskId, TdgSnapshot};
use serde_json::{json, Value};
use std::fmt::Write;

fn dot_escape(name: &str) -> String {
    name.replace('\\', "\\\\").replace('"', "\\\"")
}

/// The graph as JSON, keeping edges of probability ≥ `min_probability`.
pub fn graph_json(snapshot: &TdgSnapshot, min_probability: f64) -> Value {
    let nodes: Vec<Value> = (0..snapshot.n_tasks() as u32)
        .map(|i| {
            let task = TaskId(i);
            json!({
                "task": snapshot.task_name(task),
                "stop_probability": snapshot.first_order(task).stop_probability,
                "weight": snapshot.first_order(task).count,
            })
        })
        .collect();
    let edges: Vec<Value> = snapshot
        .edges()
        .filter(|(_, t)| t.probability >= min_probability)
        .map(|(from, t)| {
            json!({
                "from": snapshot.task_name(from),
                "to": snapshot.task_name(t.task),
                "probability": t.probability,
                "delay_mean_us": t.delay_mean_us,
                "delay_p10_us": t.delay_p10_us,
                "delay_p90_us": t.delay_p90_us,
            })
        })
        .collect();
    json!({
        "version": snapshot.version(),
        "nodes": nodes,
        "edges": edges,
    })
}

/// The graph as Graphviz DOT, keeping edges of probability ≥ `min_probability`.
pub fn graph_dot(snapshot: &TdgSnapshot, min_probability: f64) -> String {
    let mut out = String::from("digraph tdg {\n  rankdir=LR; node [shape=box, fontsize=10];\n");
    for i in 0..snapshot.n_tasks() as u32 {
        let task = TaskId(i);
        let _ = writeln!(
            out,
            "  n{i} [label=\"{}\\nstop {:.2}\"];",
            dot_escape(snapshot.task_name(task)),
            snapshot.first_order(task).stop_probability
        );
    }
    for (from, target) in snapshot
        .edges()
        .filter(|(_, t)| t.probability >= min_probability)
    {
        let _ = writeln!(
            out,
            "  n{} -> n{} [penwidth={:.2}, label=\"{:.2}\"];",
            from.0,
            target.task.0,
            0.5 + 5.0 * target.probability,
            target.probability
        );
    }
    out.push_str("}\n");
    out
}
