//! The one clock for everything that expires: tokens, cached identities and verdicts,
//! revocations and what replicas share. The system's in production; a manual one in tests,
//! which set and advance it instead of sleeping (a TTL measured in whole seconds cannot then
//! straddle a second boundary). Monotonic waits (timeouts, penalty windows, polling) use
//! `tokio::time`, which `tokio::time::pause` controls.

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;

/// Largest leeway accepted: five minutes (Kerberos's classic skew) is already generous; more
/// would quietly extend every token, and a huge value would switch expiry checking off.
pub const MAX_LEEWAY_SECS: u64 = 300;

/// Unix seconds, from the system or from a test. Cheap to clone; clones share one time.
#[derive(Clone, Debug, Default)]
pub struct Clock(Option<Arc<AtomicI64>>);

impl Clock {
    /// The system clock.
    pub fn system() -> Clock {
        Clock(None)
    }

    /// A clock that stands at `at` until a test moves it.
    pub fn manual(at: i64) -> Clock {
        Clock(Some(Arc::new(AtomicI64::new(at))))
    }

    /// The current time in Unix seconds.
    pub fn now(&self) -> i64 {
        match &self.0 {
            None => crate::unix_now(),
            Some(at) => at.load(Ordering::SeqCst),
        }
    }

    /// Moves a manual clock forward by `seconds`; the system clock cannot be moved, and says so
    /// by returning `false`.
    pub fn advance(&self, seconds: i64) -> bool {
        match &self.0 {
            None => false,
            Some(at) => {
                at.fetch_add(seconds, Ordering::SeqCst);
                true
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Clock;

    #[test]
    fn a_manual_clock_moves_only_when_told_and_its_clones_follow() {
        let clock = Clock::manual(1_000);
        let clone = clock.clone();
        assert_eq!(clock.now(), 1_000);
        assert!(clock.advance(5));
        assert_eq!(clone.now(), 1_005);
    }

    #[test]
    fn the_system_clock_cannot_be_moved() {
        let clock = Clock::system();
        let before = clock.now();
        assert!(!clock.advance(3_600));
        assert!(clock.now() - before < 60);
    }
}
