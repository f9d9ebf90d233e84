//! The per-route configs this module issued: a pointer Envoy hands back is used only if it is
//! one of them. Envoy hands a filter the most specific per-route config under the filter's
//! name, which another module (or another build of this one) may have made; nothing is read
//! through a pointer to find out whose it is. The pointer is only a key: the config itself
//! stays here, owned, until Envoy destroys it.

use std::collections::BTreeMap;
use std::ffi::c_void;
use std::sync::{Arc, RwLock};

/// What a pointer Envoy handed back stands for.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Lookup<T> {
    /// Null: the route has no per-route config.
    Absent,
    /// One this registry issued and Envoy has not destroyed (shared, not copied: a lookup is
    /// on every request's path).
    Issued(T),
    /// Not ours, or already destroyed.
    Foreign,
}

/// Values handed to Envoy as opaque pointers, keyed by the address of their box.
pub(super) struct Issued<T> {
    values: RwLock<BTreeMap<usize, Arc<T>>>,
}

impl<T> Issued<T> {
    pub(super) const fn new() -> Issued<T> {
        Issued {
            values: RwLock::new(BTreeMap::new()),
        }
    }

    /// Keeps `value` and returns the pointer Envoy is given for it (never null: the address of
    /// the shared value; unique while it is kept).
    pub(super) fn issue(&self, value: T) -> *const c_void {
        let shared = Arc::new(value);
        let ptr = Arc::as_ptr(&shared).cast::<c_void>();
        // A panic while the lock was held cannot leave the map half-written.
        let mut values = self.values.write().unwrap_or_else(|e| e.into_inner());
        values.insert(ptr as usize, shared);
        ptr
    }

    /// What `ptr` stands for; a share of it is taken under the lock, so a config destroyed on
    /// another thread meanwhile stays alive for the request that holds it.
    pub(super) fn get(&self, ptr: *const c_void) -> Lookup<Arc<T>> {
        if ptr.is_null() {
            return Lookup::Absent;
        }
        let values = self.values.read().unwrap_or_else(|e| e.into_inner());
        match values.get(&(ptr as usize)) {
            Some(value) => Lookup::Issued(Arc::clone(value)),
            None => Lookup::Foreign,
        }
    }

    /// Drops the value `ptr` stands for; false if it was not issued here (or already retired).
    pub(super) fn retire(&self, ptr: *const c_void) -> bool {
        // Dropped after the lock is released.
        let value = {
            let mut values = self.values.write().unwrap_or_else(|e| e.into_inner());
            values.remove(&(ptr as usize))
        };
        value.is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_an_issued_pointer_not_yet_retired_is_read() {
        let issued: Issued<String> = Issued::new();
        let a = issued.issue("a".to_string());
        let b = issued.issue("b".to_string());
        assert!(!a.is_null());
        assert_ne!(a, b);
        assert_eq!(issued.get(a), Lookup::Issued(Arc::new("a".to_string())));
        assert_eq!(issued.get(b), Lookup::Issued(Arc::new("b".to_string())));
        assert_eq!(issued.get(std::ptr::null()), Lookup::Absent);
        // Another module's config: a pointer this registry never gave out, never read.
        let foreign = String::from("someone else's");
        let foreign = std::ptr::from_ref(&foreign).cast::<c_void>();
        assert_eq!(issued.get(foreign), Lookup::Foreign);
        assert!(!issued.retire(foreign));
        // Destroyed: foreign from then on, and destroyed once.
        assert!(issued.retire(a));
        assert_eq!(issued.get(a), Lookup::Foreign);
        assert!(!issued.retire(a));
        assert_eq!(issued.get(b), Lookup::Issued(Arc::new("b".to_string())));
    }

    #[test]
    fn a_pointer_into_an_issued_value_is_not_the_value() {
        // Only the exact address issued counts, not one inside the value.
        let issued: Issued<[u64; 2]> = Issued::new();
        let ptr = issued.issue([1, 2]);
        let inside = ptr.cast::<u8>().wrapping_add(8).cast::<c_void>();
        assert_eq!(issued.get(inside), Lookup::Foreign);
        assert_eq!(issued.get(ptr), Lookup::Issued(Arc::new([1, 2])));
    }
}
