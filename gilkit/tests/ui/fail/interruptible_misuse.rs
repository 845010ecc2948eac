use pyo3::prelude::*;

/// The body never checks the token.
#[gilkit::nogil(interruptible)]
#[pyfunction]
fn forever(n: u64) -> u64 {
    (0..n).sum()
}

/// A parameter already has the token's name.
#[gilkit::nogil(interruptible)]
#[pyfunction]
fn named(token: String) -> usize {
    token.len()
}

/// `hint` needs the non-interruptible form.
#[gilkit::nogil(interruptible, adaptive(hint = n as usize))]
#[pyfunction]
fn hinted(n: u64) -> u64 {
    (0..n).take_while(|_| !token.is_cancelled()).count() as u64
}

fn main() {}
