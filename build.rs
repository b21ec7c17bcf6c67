//! Lets the binary, the examples and the tests find libpython at run time without
//! `LD_LIBRARY_PATH`: pyo3 resolves the interpreter (honouring `PYO3_PYTHON`) and we
//! record its library directory as an rpath.
fn main() {
    println!("cargo:rerun-if-env-changed=PYO3_PYTHON");
    println!("cargo:rerun-if-changed=build.rs");
    pyo3_build_config::add_libpython_rpath_link_args();
}
