#[gilkit::nogil(interruptible, interruptible, name = "a", name = "b")]
fn twice(n: u64) -> u64 {
    (0..n).take_while(|_| !token.is_cancelled()).count() as u64
}

#[gilkit::nogil(interruptible(token = self.cancel), adaptive = 5)]
fn bad_values(n: u64) -> u64 {
    n
}

#[gilkit::nogil(interruptible = token, adaptive(threshold_us = "250", threshold_us = 1, hint = 1, hint = 2))]
fn bad_forms(n: u64) -> u64 {
    n
}

#[gilkit::nogil(gilkit::adaptive)]
fn path_option(n: u64) -> u64 {
    n
}

fn main() {}
