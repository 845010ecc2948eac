//! Compile tests of `#[gilkit::nogil]` (trybuild): `ui/pass` cases compile and run, `ui/fail`
//! cases fail with the diagnostics in their `.stderr` snapshots. The snapshots are compared on the
//! toolchain pinned by `rust-toolchain.toml`; after changing a diagnostic, regenerate them with
//! `TRYBUILD=overwrite cargo test -p gilkit --test ui` and review the diff.

#[test]
fn ui() {
    let cases = trybuild::TestCases::new();
    cases.pass("tests/ui/pass/*.rs");
    cases.compile_fail("tests/ui/fail/*.rs");
}
