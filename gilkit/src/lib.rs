//! gilkit

pub mod semaphore;

pub use semaphore::{GilBatcher, GilPermit, GilSemaphore};
