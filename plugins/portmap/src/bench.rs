//! Measurement helpers (filled in below).
