use which::which;

/// Rebuild the BPF object when bpf-linker changes (aya-template pattern): cargo does not
/// track the linker binary otherwise.
fn main() {
    let bpf_linker = which("bpf-linker").expect("bpf-linker not found: run `cargo xtask setup`");
    println!(
        "cargo:rerun-if-changed={}",
        bpf_linker.to_str().expect("bpf-linker path is not UTF-8")
    );
}
