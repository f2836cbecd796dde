//! `dev` mode (to be written).
