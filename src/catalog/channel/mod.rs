//! Catalog channels (README, "Running a chain of stores"): HQ publishes signed bundles to object
//! storage, and every box pulls what it should run from there.
//!
//! The [`doc`] module is the contract between the two sides: the channel document HQ writes and
//! a box polls, how it and the bundle are signed, the objects' names, and the reasons a box
//! refuses what it was offered (they label the refusal metric and show in `/api/status`).

pub mod doc;
pub mod keys;
pub mod publish;
pub mod store;

pub use doc::{ChannelDocument, DocError, RefusalReason, TrustedKeys};
