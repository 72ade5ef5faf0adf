//! The libtorch link recipe (build.rs): binaries find libtorch through their rpath, with no
//! environment variables, and libtorch_cuda stays linked so that CUDA is available where a GPU is.

use tch::{Device, Kind, Tensor};

#[test]
fn libtorch_cuda_is_linked_and_found_through_the_rpath() {
    let exe = std::env::current_exe().unwrap();
    let output = std::process::Command::new("ldd").arg(&exe).env_remove("LD_LIBRARY_PATH").output().unwrap();
    let listing = String::from_utf8_lossy(&output.stdout);
    let torch_cpu = listing.lines().find(|l| l.contains("libtorch_cpu.so")).expect("libtorch_cpu is linked");
    assert!(!torch_cpu.contains("not found"), "libtorch resolves without LD_LIBRARY_PATH: {torch_cpu}");
    let lib_dir =
        torch_cpu.split("=>").nth(1).and_then(|p| p.trim().split(' ').next()).map(std::path::PathBuf::from).unwrap();
    if lib_dir.with_file_name("libtorch_cuda.so").exists() {
        assert!(listing.contains("libtorch_cuda.so"), "libtorch_cuda.so is dropped from the link:\n{listing}");
    }
}

#[test]
fn cuda_backend_is_registered() {
    // Without libtorch_cuda in the link, libtorch has no CUDA backend at all ("Could not run ... with
    // arguments from the 'CUDA' backend"); with it, a machine without GPU reports the missing driver.
    match Tensor::f_zeros([1], (Kind::Float, Device::Cuda(0))) {
        Ok(t) => assert_eq!(t.device(), Device::Cuda(0)),
        Err(e) => {
            let message = e.to_string();
            assert!(!message.contains("from the 'CUDA' backend"), "CUDA backend missing: {message}");
        }
    }
}
