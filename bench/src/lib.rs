//! toolgate-bench: criterion microbenchmarks of the hot-path pieces, in
//! `benches/`. Run with `cargo bench -p toolgate-bench`; each bench is named
//! by its scenario so results can be compared across versions.
