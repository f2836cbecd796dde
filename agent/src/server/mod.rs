//! The Unix socket server (to be written).
