#[gilkit::nogil]
const fn double(n: u64) -> u64 {
    n * 2
}

fn main() {
    let _ = double(2);
}
