//! The benchmarks' anchor: a native JetStream mirror across domains. Two nats-servers on
//! 127.0.0.1, `plant` (the hub, with the source stream) and `idmz` (the spoke, with the mirror),
//! joined by a leafnode connection; default settings but for what the caller adds.

use async_nats::jetstream::{self, stream};
use std::{
    process::{Child, Command, Stdio},
    time::Duration,
};

/// The two servers; both are killed when this is dropped.
pub struct Domains {
    pub hub_port: u16,
    pub spoke_port: u16,
    hub: Child,
    spoke: Child,
    _dir: tempfile::TempDir,
}

fn nats(dir: &std::path::Path, conf: String) -> Child {
    std::fs::create_dir_all(dir).expect("dir");
    let path = dir.join("nats.conf");
    std::fs::write(&path, conf).expect("conf");
    Command::new(crate::common::nats_server_binary())
        .arg("-c")
        .arg(&path)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("nats-server")
}

impl Domains {
    /// The hub listens for leafnodes on `leaf_port`; the spoke connects to `remote_port` (the
    /// same port, or a proxy in front of it). `spoke_jetstream`: extra lines in the spoke's
    /// `jetstream {}` block, e.g. `sync_interval: always`.
    pub fn start(leaf_port: u16, remote_port: u16, spoke_jetstream: &str) -> Domains {
        let dir = tempfile::tempdir().expect("tempdir");
        let (hub_port, spoke_port) = (crate::common::free_port(), crate::common::free_port());
        let hub = nats(
            &dir.path().join("a"),
            format!(
                "listen: 127.0.0.1:{hub_port}\njetstream {{ store_dir: \"{}\", domain: plant }}\nleafnodes {{ listen: 127.0.0.1:{leaf_port} }}\n",
                dir.path().join("a/js").display()
            ),
        );
        std::thread::sleep(Duration::from_millis(500));
        let spoke = nats(
            &dir.path().join("b"),
            format!(
                "listen: 127.0.0.1:{spoke_port}\njetstream {{ store_dir: \"{}\", domain: idmz\n{spoke_jetstream}\n}}\nleafnodes {{ remotes: [ {{ url: \"nats-leaf://127.0.0.1:{remote_port}\" }} ] }}\n",
                dir.path().join("b/js").display()
            ),
        );
        std::thread::sleep(Duration::from_secs(2));
        Domains {
            hub_port,
            spoke_port,
            hub,
            spoke,
            _dir: dir,
        }
    }

    pub async fn hub(&self) -> jetstream::Context {
        connect(self.hub_port).await
    }

    pub async fn spoke(&self) -> jetstream::Context {
        connect(self.spoke_port).await
    }
}

impl Drop for Domains {
    fn drop(&mut self) {
        for child in [&mut self.hub, &mut self.spoke] {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

async fn connect(port: u16) -> jetstream::Context {
    jetstream::new(
        async_nats::connect(format!("nats://127.0.0.1:{port}"))
            .await
            .expect("connect"),
    )
}

/// The source stream on the hub, `facts_operational` over `facts.operational.>`.
pub async fn create_source(hub: &jetstream::Context) {
    hub.create_stream(stream::Config {
        name: "facts_operational".into(),
        subjects: vec!["facts.operational.>".into()],
        ..Default::default()
    })
    .await
    .expect("source stream");
}

/// The stream `mirror` on the spoke, mirroring the hub's source across the domains.
pub async fn create_mirror(spoke: &jetstream::Context) -> stream::Stream {
    spoke
        .create_stream(stream::Config {
            name: "mirror".into(),
            mirror: Some(stream::Source {
                name: "facts_operational".into(),
                external: Some(stream::External {
                    api_prefix: "$JS.plant.API".into(),
                    delivery_prefix: None,
                }),
                ..Default::default()
            }),
            ..Default::default()
        })
        .await
        .expect("mirror stream")
}
