//! One server connection: the TCP socket and its login ([`login`]), the protocol position
//! and parameters kept while the broker forwards through it ([`conn`], [`state`]), the
//! replies it owes and who reads each (`pipeline`), the translation of clients' named
//! statements onto it with a bounded LRU ([`statements`], `prepare`), and the cleanup
//! that makes it fit to go back to a pool (`settle`).
//!
//! Follows <https://www.postgresql.org/docs/current/protocol-flow.html>. Nothing here knows
//! about pools, caps or sessions: the pool above hands these out.

pub mod conn;
mod error;
pub mod login;
mod messages;
mod pipeline;
mod prepare;
mod settle;
pub mod state;
pub mod statements;

pub use conn::{Params, ServerConn};
pub use error::{LoginError, ServerError, StatementRefusal};
pub use login::LoginTarget;
pub use messages::Heard;
pub use prepare::{StatementEvents, Translation};
pub use settle::Ending;
pub use state::Position;
pub use statements::ClientStatements;
