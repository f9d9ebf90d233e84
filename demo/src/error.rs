//! The stack's one error: what failed to start or answer, with what the process logs said.

/// A failure to start or drive the stack, with what the process logs said.
#[derive(Debug)]
pub struct StackError(pub String);

impl std::fmt::Display for StackError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for StackError {}
