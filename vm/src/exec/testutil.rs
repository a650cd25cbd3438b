//! Shared helpers for the instruction-family unit tests.
