//! Small synchronisation helpers shared across the crate.

use std::sync::{Mutex, MutexGuard};

/// Locks a mutex, recovering the data if a panicking thread poisoned it: a panic in one
/// session must not take every later user of shared state down with it. Callers keep each
/// update a single step, so the data stays meaningful.
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}
