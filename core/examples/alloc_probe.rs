#![allow(missing_docs, clippy::disallowed_methods)]
fn minflt() -> u64 {
    let s = std::fs::read_to_string("/proc/self/stat").unwrap();
    let f: Vec<&str> = s.rsplit(')').next().unwrap().split_whitespace().collect();
    f[7].parse().unwrap()
}
fn main() {
    let mut keep: Vec<Vec<u32>> = Vec::new();
    for shift in [16u32, 18, 20, 21, 22, 23, 24, 25] {
        let n = 1usize << shift;
        let f0 = minflt();
        let mut v: Vec<u32> = vec![0; n];
        for i in (0..n).step_by(1024) {
            v[i] = std::hint::black_box(v[i]);
        }
        println!(
            "2^{shift} u32 ({} KB) faults {} ptr {:p}",
            n * 4 / 1024,
            minflt() - f0,
            v.as_ptr()
        );
        keep.push(v);
        if keep.len() > 2 {
            keep.remove(0);
        }
    }
}
