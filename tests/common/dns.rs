//! A tiny DNS server for tests: answers A queries for the names it was given with 127.0.0.1 and
//! everything else (AAAA included) with an empty NOERROR answer, over UDP on a loopback address
//! of its own. Used to prove that the sandboxed node resolves peers through a real DNS server.
//!
//! Port 53 is the only port a libc resolver asks (resolv.conf has no port), so this needs root;
//! the node under test is started in a mount namespace whose `/etc/resolv.conf` names this server
//! (see [`resolv_conf_wrapper`]).

use std::{
    collections::BTreeSet,
    net::UdpSocket,
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicUsize, Ordering},
    },
    time::Duration,
};

pub struct DnsServer {
    pub address: String,
    /// How many A queries for a known name were answered.
    pub answered: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
}

impl DnsServer {
    /// Serves `names` (lowercase, without the trailing dot) on `address`:53.
    pub fn start(address: &str, names: &[&str]) -> DnsServer {
        let socket = UdpSocket::bind((address, 53))
            .unwrap_or_else(|e| panic!("bind {address}:53 (the test needs root): {e}"));
        socket
            .set_read_timeout(Some(Duration::from_millis(100)))
            .expect("read timeout");
        let names: BTreeSet<String> = names.iter().map(|n| n.to_string()).collect();
        let answered = Arc::new(AtomicUsize::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let (count, halt) = (answered.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut buf = [0u8; 512];
            while !halt.load(Ordering::SeqCst) {
                let Ok((n, from)) = socket.recv_from(&mut buf) else {
                    continue;
                };
                if let Some((reply, known)) = answer(&buf[..n], &names) {
                    if known {
                        count.fetch_add(1, Ordering::SeqCst);
                    }
                    let _ = socket.send_to(&reply, from);
                }
            }
        });
        DnsServer {
            address: address.to_string(),
            answered,
            stop,
        }
    }
}

impl Drop for DnsServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

/// The reply to one query, and whether it was an A query for a known name.
fn answer(query: &[u8], names: &BTreeSet<String>) -> Option<(Vec<u8>, bool)> {
    if query.len() < 12 {
        return None;
    }
    let mut at = 12;
    let mut labels = Vec::new();
    loop {
        let len = usize::from(*query.get(at)?);
        at += 1;
        if len == 0 {
            break;
        }
        labels.push(String::from_utf8_lossy(query.get(at..at + len)?).to_ascii_lowercase());
        at += len;
    }
    let qtype = u16::from_be_bytes([*query.get(at)?, *query.get(at + 1)?]);
    let question = query.get(12..at + 4)?;
    let known = qtype == 1 && names.contains(&labels.join("."));
    let mut reply = Vec::with_capacity(question.len() + 32);
    reply.extend_from_slice(&query[0..2]); // id
    reply.extend_from_slice(&[0x81, 0x80]); // response, recursion desired and available, NOERROR
    reply.extend_from_slice(&[0, 1, 0, u8::from(known), 0, 0, 0, 0]);
    reply.extend_from_slice(question);
    if known {
        reply.extend_from_slice(&[0xc0, 12, 0, 1, 0, 1, 0, 0, 0, 60, 0, 4, 127, 0, 0, 1]);
    }
    Some((reply, known))
}

/// `unshare --mount` arguments that start the node with `/etc/resolv.conf` replaced (in its own
/// mount namespace only) by `resolv_conf`.
pub fn resolv_conf_wrapper(resolv_conf: &std::path::Path) -> Vec<String> {
    vec![
        "unshare".into(),
        "--mount".into(),
        "--".into(),
        "sh".into(),
        "-c".into(),
        r#"mount --bind "$0" /etc/resolv.conf && exec "$@""#.into(),
        resolv_conf.display().to_string(),
    ]
}
