//! Shared fixtures for cross-crate integration tests (demo device, package builders).
