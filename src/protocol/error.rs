//! The protocol's own error: a message from the network that breaks the protocol.

/// A message from the network that breaks the protocol.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    /// A length word below 4.
    #[error("message {} has invalid length {len}", char::from(*tag))]
    BadLength {
        /// Message type.
        tag: u8,
        /// The length word.
        len: u32,
    },
    /// A message over the configured maximum.
    #[error("message {} of {len} bytes exceeds max_message_size {max}", char::from(*tag))]
    TooLarge {
        /// Message type.
        tag: u8,
        /// The length word.
        len: u32,
        /// The limit.
        max: usize,
    },
    /// A startup packet with an impossible length.
    #[error("invalid startup packet length {len}")]
    BadStartupLength {
        /// The length word.
        len: u32,
    },
    /// A message type not allowed here.
    #[error("unexpected message type {}", char::from(*tag))]
    UnexpectedTag {
        /// Message type.
        tag: u8,
    },
    /// A body that does not parse.
    #[error("malformed message: {what}")]
    Malformed {
        /// What was wrong.
        what: &'static str,
    },
}
