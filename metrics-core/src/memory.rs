//! PLACEHOLDER for MemorySink (collector task replaces it).
#![allow(missing_docs)]

#[derive(Debug, Default, Clone)]
pub struct MemorySink;

#[derive(Debug, Default, Clone)]
pub struct MemorySnapshot;
