//! What the amphora reports about itself: package versions, CPU, memory,
//! disk, load and network figures, read from `/proc` and the package
//! database. Parsers are pure functions over the files' text.

pub mod packages;
pub mod procfs;
pub mod sampler;
