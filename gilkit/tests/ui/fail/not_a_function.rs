#[gilkit::nogil]
struct Config {
    threads: usize,
}

#[gilkit::nogil]
const LIMIT: usize = 4;

fn main() {
    let _ = Config { threads: LIMIT }.threads;
}
