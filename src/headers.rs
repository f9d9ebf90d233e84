//! The request headers as the decision core reads them, whoever holds them: the gRPC
//! protocol's map, a view over the HTTP protocol's header map, the module's copy out of Envoy.
//! Names are lowercase; a header sent more than once is one value, joined with commas as Envoy
//! joins them for gRPC (cookies with `; `, in the module). Borrowed, so that no protocol copies
//! its headers into another shape for a check.

use std::collections::HashMap;
use std::hash::BuildHasher;

/// Read access to one request's headers.
pub trait Headers: Sync {
    /// The value of the header `name` (lowercase).
    fn get(&self, name: &str) -> Option<&str>;

    /// Whether the request carries the header `name` (lowercase).
    fn contains(&self, name: &str) -> bool {
        self.get(name).is_some()
    }

    /// Calls `each` with the name of every header.
    fn each_name(&self, each: &mut dyn FnMut(&str));
}

impl<S: BuildHasher + Sync> Headers for HashMap<String, String, S> {
    fn get(&self, name: &str) -> Option<&str> {
        HashMap::get(self, name).map(String::as_str)
    }

    fn each_name(&self, each: &mut dyn FnMut(&str)) {
        for name in self.keys() {
            each(name);
        }
    }
}
