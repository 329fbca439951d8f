//! pgbroker
