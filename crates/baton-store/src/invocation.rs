//! Where an asynchronous invocation is: [`InvocationState`], one word in the store's
//! `invocations.state`, the API and the cluster's records.

/// Where an asynchronous invocation is (its `state` in the store, the API and the
/// cluster's records).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum InvocationState {
    /// Accepted, not started.
    Queued,
    /// Started on a node.
    Running,
    /// Ended with a response.
    Succeeded,
    /// Ended with an error.
    Failed,
}

impl InvocationState {
    /// Its word.
    pub fn as_str(self) -> &'static str {
        match self {
            InvocationState::Queued => "queued",
            InvocationState::Running => "running",
            InvocationState::Succeeded => "succeeded",
            InvocationState::Failed => "failed",
        }
    }

    /// The state a word names.
    pub fn parse(word: &str) -> Option<InvocationState> {
        Some(match word {
            "queued" => InvocationState::Queued,
            "running" => InvocationState::Running,
            "succeeded" => InvocationState::Succeeded,
            "failed" => InvocationState::Failed,
            _ => return None,
        })
    }

    /// Whether it has ended (succeeded or failed).
    pub fn ended(self) -> bool {
        matches!(self, InvocationState::Succeeded | InvocationState::Failed)
    }
}

impl std::fmt::Display for InvocationState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl rusqlite::types::FromSql for InvocationState {
    fn column_result(value: rusqlite::types::ValueRef<'_>) -> rusqlite::types::FromSqlResult<Self> {
        let word = value.as_str()?;
        InvocationState::parse(word).ok_or_else(|| {
            rusqlite::types::FromSqlError::Other(
                format!("unknown invocation state `{word}`").into(),
            )
        })
    }
}
