//! The ownership model (being written).
