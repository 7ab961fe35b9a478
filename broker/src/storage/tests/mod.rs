//! Tests of the storage engine against a simulated and a real disk.
