//! Catalog channels (README, "Running a chain of stores"): HQ publishes signed bundles to object
//! storage, and every box pulls what it should run from there.
//!
//! The [`doc`] module is the contract between the two sides: the channel document HQ writes and
//! a box polls, how it and the bundle are signed, the objects' names, and the reasons a box
//! refuses what it was offered (they label the refusal metric and show in `/api/status`).
//! Both sides read a channel URL with [`url`] and reach its store with [`store`] (settings and
//! credentials from the environment or a file, never the URL).
//!
//! A box's side, in the order an offer travels: [`fetch`] reads the channel (conditional GET of
//! the document, resumable GET of a bundle), [`subscribe`] is the poller stage that checks,
//! downloads, verifies and imports, [`state`] is what it remembers (on disk: the highest
//! sequence accepted; in memory: the status view), [`metrics`] the `vitrine_channel_*` families.

pub mod doc;
pub mod fetch;
pub mod keys;
pub mod metrics;
pub mod publish;
pub mod state;
pub mod store;
pub mod subscribe;
pub mod url;

pub use doc::{ChannelDocument, DocError, RefusalReason, TrustedKeys};
pub use subscribe::{ChannelMonitor, Subscriber};
