//! Links libtorch so that binaries and tests of this package find it without environment variables,
//! and keeps libtorch_cuda in the link: the linker's --as-needed drops it (nothing references it by
//! symbol), and without it libtorch never registers its CUDA backend. Link arguments do not propagate
//! to dependants: every package that builds a binary using tch needs this script.
fn main() {
    let lib = std::env::var("DEP_TCH_LIBTORCH_LIB").expect("torch-sys exports the libtorch library folder");
    println!("cargo:rustc-link-arg=-Wl,-rpath={lib}");
    if std::path::Path::new(&lib).join("libtorch_cuda.so").exists() {
        for arg in ["-Wl,--no-as-needed", "-ltorch_cuda", "-ltorch", "-Wl,--as-needed"] {
            println!("cargo:rustc-link-arg={arg}");
        }
    }
}
