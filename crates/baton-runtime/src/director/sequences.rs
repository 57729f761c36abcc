//! The director's declared sequences: a name that runs its steps in order, 1 to
//! [`MAX_HOPS`] of them.

use super::{Director, DirectorError};
use crate::backend::MAX_HOPS;
use baton_core::sync::UnpoisonedRw;

impl Director {
    /// The declared sequences, sorted by name.
    pub fn sequences(&self) -> Vec<(String, Vec<String>)> {
        let mut all: Vec<(String, Vec<String>)> = self
            .sequences
            .read_unpoisoned()
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        all.sort();
        all
    }

    /// Removes a sequence; returns whether it existed.
    pub fn remove_sequence(&self, name: &str) -> bool {
        self.sequences.write_unpoisoned().remove(name).is_some()
    }

    /// The steps of the sequence `name`, if it is one.
    pub fn sequence(&self, name: &str) -> Option<Vec<String>> {
        self.sequences.read_unpoisoned().get(name).cloned()
    }

    /// What invoking `name` runs, in order: a sequence's steps, or `name` itself.
    pub fn steps_of(&self, name: &str) -> Vec<String> {
        self.sequence(name).unwrap_or_else(|| vec![name.to_owned()])
    }

    /// Whether `name` is a sequence.
    pub fn is_sequence(&self, name: &str) -> bool {
        self.sequences.read_unpoisoned().contains_key(name)
    }

    /// Declares a sequence: invoking `name` runs `steps` in order. Refused with no steps
    /// or more than [`MAX_HOPS`] (a chain that long is stopped anyway).
    pub fn declare_sequence(&self, name: &str, steps: Vec<String>) -> Result<(), DirectorError> {
        if steps.is_empty() || steps.len() > MAX_HOPS {
            return Err(DirectorError::BadSequence {
                name: name.to_owned(),
                steps: steps.len(),
            });
        }
        self.sequences
            .write_unpoisoned()
            .insert(name.to_owned(), steps);
        Ok(())
    }
}
