use pyo3::prelude::*;

/// `awaitable` on a function that is not `async`.
#[gilkit::nogil(awaitable)]
fn not_async(n: u64) -> u64 {
    n
}

/// Borrowed arguments cannot live in a future that outlives the call.
#[gilkit::nogil(awaitable)]
async fn borrows(text: &str) -> usize {
    text.len()
}

/// Given twice, and with arguments.
#[gilkit::nogil(awaitable, awaitable)]
async fn twice() {}

#[gilkit::nogil(awaitable(fast))]
async fn with_arguments() {}

/// The release policies do not apply: the body always runs on the runtime.
#[gilkit::nogil(awaitable, adaptive, interruptible)]
async fn with_policies() {}

#[pyclass(frozen)]
struct Model;

#[gilkit::nogil]
#[pymethods]
impl Model {
    /// `&self` is borrowed too.
    #[nogil(awaitable)]
    async fn score(&self) -> u64 {
        1
    }
}

fn main() {}
