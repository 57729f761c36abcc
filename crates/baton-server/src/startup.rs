//! What a server's start reads before it serves: the machine's capacity for
//! reservations, and the learner restored from the store (the last snapshot, then every
//! record after it).

use crate::{Restored, ServerError};
use baton_core::{ResourceVec, Tdg, TdgConfig};
use baton_store::Store;

/// This machine's capacity for reservations: its cores, 3/4 of its memory.
pub(crate) fn machine_capacity() -> ResourceVec {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get() as u32);
    let memory_mib = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|text| {
            let line = text.lines().find(|l| l.starts_with("MemTotal:"))?;
            line.split_whitespace().nth(1)?.parse::<u64>().ok()
        })
        .map_or(4_096, |kib| kib / 1024 * 3 / 4);
    ResourceVec {
        cpu_millicores: u64::from(cores) * 1000,
        cores,
        memory_mib,
        net_mbps: 10_000,
        gpu_units: 0,
    }
}

/// Restores the learner: the last snapshot, then every record after it.
pub(crate) fn restore_learner(store: &Store, restored: &mut Restored) -> Result<Tdg, ServerError> {
    let config = TdgConfig::default();
    let (mut tdg, after) = match store.last_snapshot()? {
        Some((last, state)) => {
            let state: baton_core::TdgState = serde_json::from_str(&state)
                .map_err(|e| ServerError::Restore(format!("snapshot: {e}")))?;
            match Tdg::from_state(config.clone(), state) {
                Some(tdg) => {
                    restored.snapshot = true;
                    (tdg, last)
                }
                // Learned with other context kinds: learn everything again.
                None => (Tdg::new(config), 0),
            }
        }
        None => (Tdg::new(config), 0),
    };
    let records: Vec<_> = store
        .executions_after(after, usize::MAX >> 1)?
        .into_iter()
        .map(|(_, r)| r)
        .collect();
    restored.replayed_records = records.len();
    let (requests, _) = baton_trace::requests::group_requests(
        &records,
        &mut tdg,
        baton_trace::requests::TimeWindow::default(),
    );
    for request in &requests {
        tdg.observe_request(request);
    }
    Ok(tdg)
}
