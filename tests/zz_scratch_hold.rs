mod common;
#[test]
fn hold() {
    let zone = common::Zone::start();
    std::fs::write(
        "/tmp/zone_info",
        format!(
            "{} {} {}\n",
            zone.url(),
            zone.pki.ca_path.display(),
            zone.pki.dir.display()
        ),
    )
    .unwrap();
    std::thread::sleep(std::time::Duration::from_secs(900));
    drop(zone);
}
