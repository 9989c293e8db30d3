//! The conformance suite (written by the suite's author; placeholder so the crate compiles).
