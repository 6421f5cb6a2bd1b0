//! With the `cuda` feature: compiles csrc/sdpa.cpp (the cuDNN frontend is header-only)
//! into a static library and links cuDNN and the CUDA runtime dynamically. The include
//! and library folders come from the environment scripts/cuda-env sets; without the
//! feature nothing is built.
use std::env;
use std::path::PathBuf;

fn var(name: &str) -> PathBuf {
    println!("cargo:rerun-if-env-changed={name}");
    match env::var_os(name) {
        Some(v) if !v.is_empty() => PathBuf::from(v),
        _ => panic!(
            "kinema-cudnn (feature `cuda`) needs {name}: run cargo through scripts/cuda-env, \
             or set KINEMA_CUDNN_INCLUDE, KINEMA_CUDNN_FRONTEND_INCLUDE, KINEMA_CUDNN_LIB \
             and CUDA_ROOT yourself"
        ),
    }
}

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-changed=csrc");
    if env::var_os("CARGO_FEATURE_CUDA").is_none() {
        return;
    }
    let cuda = var("CUDA_ROOT");
    let cudnn_include = var("KINEMA_CUDNN_INCLUDE");
    let frontend_include = var("KINEMA_CUDNN_FRONTEND_INCLUDE");
    let cudnn_lib = var("KINEMA_CUDNN_LIB");
    let header = frontend_include.join("cudnn_frontend.h");
    assert!(
        header.is_file(),
        "{} is missing: KINEMA_CUDNN_FRONTEND_INCLUDE must be the cuDNN frontend's include folder",
        header.display()
    );
    cc::Build::new()
        .cpp(true)
        .std("c++17")
        .file("csrc/sdpa.cpp")
        .include("csrc")
        // -isystem: the frontend's and CUDA's own warnings are not ours to fix.
        .flag("-isystem")
        .flag(frontend_include.to_string_lossy().as_ref())
        .flag("-isystem")
        .flag(cudnn_include.to_string_lossy().as_ref())
        .flag("-isystem")
        .flag(cuda.join("include").to_string_lossy().as_ref())
        // The graph API only: no JSON (de)serialisation of plans.
        .define("CUDNN_FRONTEND_SKIP_JSON_LIB", None)
        .warnings(true)
        .compile("kinema_sdpa");
    // Link-time names (libcudnn.so, libcudart.so) come from LIBRARY_PATH (scripts/cuda-env
    // links them there); the wheels' folders are searched too for a toolkit that has them.
    println!("cargo:rustc-link-search=native={}", cudnn_lib.display());
    println!(
        "cargo:rustc-link-search=native={}",
        cuda.join("lib").display()
    );
    println!("cargo:rustc-link-lib=dylib=cudnn");
    println!("cargo:rustc-link-lib=dylib=cudart");
}
