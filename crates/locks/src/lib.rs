//! The one lock policy of moziplus: a `std::sync::Mutex` whose holder
//! panicked is used as it is — the poisoning is recovered, never turned into
//! a second panic. Every `std::sync::Mutex` is taken through
//! [`Recover::locked`], every `std::sync::RwLock` through
//! [`RecoverRw::read_locked`] / [`RecoverRw::write_locked`].
//!
//! Why recover rather than `expect`: what these locks guard is in-memory
//! bookkeeping (the project slots, the runs in flight, counters, health and
//! quota books, the gateway's lane and breaker state) that every critical
//! section leaves whole statement by statement and that the next tick or
//! call rewrites. A panic in one request's or one project's task is caught
//! by tokio for that task; with `expect`, every later task that takes the
//! same lock would panic too, and one bug would take down every project and
//! the gateway with it.
//!
//! A crate of its own (re-exported as `moziplus::locks`) because the
//! gateway, a crate that cannot import the main crate, follows it too.

use std::sync::{Mutex, MutexGuard, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};

/// [`Mutex::lock`] under the lock policy (see the crate).
pub trait Recover<T: ?Sized> {
    /// The guard, also when a holder panicked.
    fn locked(&self) -> MutexGuard<'_, T>;
}

impl<T: ?Sized> Recover<T> for Mutex<T> {
    fn locked(&self) -> MutexGuard<'_, T> {
        self.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// [`RwLock`] under the same policy.
pub trait RecoverRw<T: ?Sized> {
    /// The read guard, also when a writer panicked.
    fn read_locked(&self) -> RwLockReadGuard<'_, T>;
    /// The write guard, also when a holder panicked.
    fn write_locked(&self) -> RwLockWriteGuard<'_, T>;
}

impl<T: ?Sized> RecoverRw<T> for RwLock<T> {
    fn read_locked(&self) -> RwLockReadGuard<'_, T> {
        self.read().unwrap_or_else(PoisonError::into_inner)
    }
    fn write_locked(&self) -> RwLockWriteGuard<'_, T> {
        self.write().unwrap_or_else(PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A holder that panicked leaves the lock usable, with what it wrote.
    #[test]
    fn a_poisoned_lock_is_taken_as_it_is() {
        let m = std::sync::Arc::new(Mutex::new(1));
        let held = m.clone();
        let died = std::thread::spawn(move || {
            let mut g = held.lock().unwrap();
            *g = 2;
            panic!("the holder dies");
        })
        .join();
        assert!(died.is_err());
        assert!(m.is_poisoned(), "the probe: the lock is poisoned");
        assert_eq!(*m.locked(), 2);
        *m.locked() += 1;
        assert_eq!(*m.locked(), 3);
    }
}
