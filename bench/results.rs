//! Where the benchmarks leave their reports: `bench/results/<name>-<unix time>.txt`.

/// Prints `report` and writes it to `bench/results/<name>-<unix time>.txt`.
pub fn write(name: &str, report: &str) {
    print!("{report}");
    let dir = std::path::PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/bench/results"));
    let _ = std::fs::create_dir_all(&dir);
    let stamp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let path = dir.join(format!("{name}-{stamp}.txt"));
    std::fs::write(&path, report).expect("write results");
    eprintln!("written to {}", path.display());
}
