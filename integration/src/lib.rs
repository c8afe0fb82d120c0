//! Harness for real components.
