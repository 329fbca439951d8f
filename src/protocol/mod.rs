//! The Postgres wire protocol, bytes only: framing by header, the startup packets, and
//! writers for the messages the broker itself originates.
//!
//! Follows <https://www.postgresql.org/docs/current/protocol-message-formats.html>.
//! Nothing here does I/O or knows about sessions or pools.

pub mod errcodes;
mod error;
pub mod frame;
pub mod query;
pub mod startup;
pub mod statement;
pub mod write;

pub use error::FrameError;
pub use frame::{Header, HEADER_LEN};
