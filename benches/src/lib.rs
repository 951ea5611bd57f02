//! Criterion benches of Petrel's per-packet costs live in `benches/benches/`;
//! whole-system packet-rate scenarios live in `scripts/`.
#![deny(unsafe_code)]
