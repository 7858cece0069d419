fn main() {
    let object = include_bytes!(concat!(env!("OUT_DIR"), "/lb-ebpf"));
    println!("xdplb agent: BPF object of {} bytes", object.len());
}
