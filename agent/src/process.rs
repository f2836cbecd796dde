//! Process hygiene and signals (to be written).
