//! A test-controlled TCP proxy on 127.0.0.1, for cutting the connection between a pulling node
//! and its peer. It only moves bytes: TLS stays end to end, so the peer identity check still
//! applies through it.
//!
//! Controls: [`Proxy::cut_after`] cuts a live connection after N more bytes of response (peer →
//! puller), [`Proxy::drop_all`] drops every live connection, [`Proxy::refuse_for`] accepts and at
//! once closes new connections for a while, [`Proxy::set_upstream`] points new connections
//! elsewhere. [`Proxy::silence`] is a firewall that starts dropping packets without telling
//! anyone (no FIN, no RST, the way OT links usually die): every live connection stops carrying
//! bytes, for good, and new connections are accepted but go nowhere; [`Proxy::heal`] lets new
//! connections through again, while the silenced ones stay dead (the firewall lost their state).
//! Plain threads, two per connection; everything stops when the proxy is dropped.

use std::{
    io::{Read, Write},
    net::{Shutdown, TcpListener, TcpStream},
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicU16, AtomicU64, Ordering},
    },
    thread::JoinHandle,
    time::{Duration, Instant},
};

#[derive(Default)]
pub struct ProxyStats {
    pub accepted: AtomicU64,
    pub refused: AtomicU64,
    /// Connections cut by `cut_after`.
    pub cuts: AtomicU64,
    /// Cuts that fell inside a burst of response bytes: bytes of the same read were withheld.
    pub cuts_mid_burst: AtomicU64,
    /// Connections dropped by `drop_all`.
    pub dropped: AtomicU64,
    /// Connections that went silent (live at `silence`, or accepted while silent).
    pub silenced: AtomicU64,
    pub response_bytes: AtomicU64,
}

struct Shared {
    upstream: AtomicU16,
    stop: AtomicBool,
    refuse_until: Mutex<Option<Instant>>,
    /// Between `silence` and `heal`: new connections are held, never forwarded.
    silent: AtomicBool,
    /// Connections that carry no more bytes, ever.
    dead: Mutex<std::collections::HashSet<u64>>,
    /// Response bytes still allowed before the next cut; `None` when no cut is armed.
    cut_budget: Mutex<Option<u64>>,
    live: Mutex<Vec<(u64, TcpStream, TcpStream)>>,
    stats: ProxyStats,
}

pub struct Proxy {
    pub port: u16,
    shared: Arc<Shared>,
    acceptor: Option<JoinHandle<()>>,
}

fn close(a: &TcpStream, b: &TcpStream) {
    let _ = a.shutdown(Shutdown::Both);
    let _ = b.shutdown(Shutdown::Both);
}

impl Proxy {
    /// Listens on a free loopback port and forwards to `127.0.0.1:upstream`.
    pub fn start(upstream: u16) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the proxy");
        listener
            .set_nonblocking(true)
            .expect("non-blocking listener");
        let port = listener.local_addr().expect("proxy address").port();
        let shared = Arc::new(Shared {
            upstream: AtomicU16::new(upstream),
            stop: AtomicBool::new(false),
            refuse_until: Mutex::new(None),
            silent: AtomicBool::new(false),
            dead: Mutex::new(std::collections::HashSet::new()),
            cut_budget: Mutex::new(None),
            live: Mutex::new(Vec::new()),
            stats: ProxyStats::default(),
        });
        let acceptor = {
            let shared = shared.clone();
            std::thread::spawn(move || accept_loop(listener, shared))
        };
        Proxy {
            port,
            shared,
            acceptor: Some(acceptor),
        }
    }

    pub fn url(&self) -> String {
        format!("https://127.0.0.1:{}", self.port)
    }

    pub fn stats(&self) -> &ProxyStats {
        &self.shared.stats
    }

    pub fn set_upstream(&self, port: u16) {
        self.shared.upstream.store(port, Ordering::SeqCst);
    }

    /// Cut whichever live connection carries the next `bytes` bytes of response, right there.
    pub fn cut_after(&self, bytes: u64) {
        *self.shared.cut_budget.lock().expect("cut lock") = Some(bytes);
    }

    pub fn disarm(&self) {
        *self.shared.cut_budget.lock().expect("cut lock") = None;
    }

    /// Drops every live connection at once.
    pub fn drop_all(&self) {
        let live = std::mem::take(&mut *self.shared.live.lock().expect("live lock"));
        for (_, client, upstream) in &live {
            close(client, upstream);
        }
        self.shared
            .stats
            .dropped
            .fetch_add(live.len() as u64, Ordering::SeqCst);
    }

    /// New connections are accepted and closed at once for `duration`.
    pub fn refuse_for(&self, duration: Duration) {
        *self.shared.refuse_until.lock().expect("refuse lock") = Some(Instant::now() + duration);
    }
}

impl Proxy {
    /// Every live connection stops carrying bytes (they stay open at both ends), and new ones
    /// are accepted and held without being forwarded, until [`Proxy::heal`].
    pub fn silence(&self) {
        self.shared.silent.store(true, Ordering::SeqCst);
        let live = self.shared.live.lock().expect("live lock");
        let mut dead = self.shared.dead.lock().expect("dead lock");
        for (id, _, _) in live.iter() {
            if dead.insert(*id) {
                self.shared.stats.silenced.fetch_add(1, Ordering::SeqCst);
            }
        }
    }

    /// New connections are forwarded again; the silenced ones stay silent.
    pub fn heal(&self) {
        self.shared.silent.store(false, Ordering::SeqCst);
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        self.drop_all();
        if let Some(acceptor) = self.acceptor.take() {
            let _ = acceptor.join();
        }
    }
}

fn accept_loop(listener: TcpListener, shared: Arc<Shared>) {
    let mut next_id = 0u64;
    while !shared.stop.load(Ordering::SeqCst) {
        let client = match listener.accept() {
            Ok((client, _)) => client,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                std::thread::sleep(Duration::from_millis(5));
                continue;
            }
            Err(_) => continue,
        };
        let refusing = shared
            .refuse_until
            .lock()
            .expect("refuse lock")
            .is_some_and(|until| Instant::now() < until);
        if refusing {
            shared.stats.refused.fetch_add(1, Ordering::SeqCst);
            let _ = client.shutdown(Shutdown::Both);
            continue;
        }
        let _ = client.set_nonblocking(false);
        if shared.silent.load(Ordering::SeqCst) {
            shared.stats.silenced.fetch_add(1, Ordering::SeqCst);
            hold(client, shared.clone());
            continue;
        }
        let port = shared.upstream.load(Ordering::SeqCst);
        let Ok(upstream) =
            TcpStream::connect_timeout(&([127, 0, 0, 1], port).into(), Duration::from_secs(2))
        else {
            let _ = client.shutdown(Shutdown::Both);
            continue;
        };
        let _ = client.set_nodelay(true);
        let _ = upstream.set_nodelay(true);
        next_id += 1;
        let id = next_id;
        shared.stats.accepted.fetch_add(1, Ordering::SeqCst);
        let (Ok(c2), Ok(u2), Ok(c3), Ok(u3)) = (
            client.try_clone(),
            upstream.try_clone(),
            client.try_clone(),
            upstream.try_clone(),
        ) else {
            close(&client, &upstream);
            continue;
        };
        shared.live.lock().expect("live lock").push((id, c3, u3));
        // Request direction: puller → peer, untouched.
        {
            let shared = shared.clone();
            let (mut from, mut to) = (client, upstream);
            std::thread::spawn(move || {
                let mut buf = vec![0u8; 16 * 1024];
                loop {
                    match from.read(&mut buf) {
                        Ok(0) | Err(_) => break,
                        Ok(_) if is_dead(&shared, id) => continue,
                        Ok(n) => {
                            if to.write_all(&buf[..n]).is_err() {
                                break;
                            }
                        }
                    }
                }
                if is_dead(&shared, id) {
                    // Silenced: the far side hears nothing of this end closing either.
                    let _ = from.shutdown(Shutdown::Both);
                } else {
                    close(&from, &to);
                }
                forget(&shared, id);
            });
        }
        // Response direction: peer → puller, where cuts happen.
        {
            let shared = shared.clone();
            let (mut from, mut to) = (u2, c2);
            std::thread::spawn(move || {
                let mut buf = vec![0u8; 16 * 1024];
                loop {
                    let n = match from.read(&mut buf) {
                        Ok(0) | Err(_) => break,
                        Ok(_) if is_dead(&shared, id) => continue,
                        Ok(n) => n,
                    };
                    let mut pass = n;
                    let mut cut = false;
                    {
                        let mut budget = shared.cut_budget.lock().expect("cut lock");
                        if let Some(left) = *budget {
                            if (n as u64) >= left {
                                pass = left as usize;
                                cut = true;
                                *budget = None;
                            } else {
                                *budget = Some(left - n as u64);
                            }
                        }
                    }
                    if pass > 0 && to.write_all(&buf[..pass]).is_err() {
                        break;
                    }
                    shared
                        .stats
                        .response_bytes
                        .fetch_add(pass as u64, Ordering::SeqCst);
                    if cut {
                        shared.stats.cuts.fetch_add(1, Ordering::SeqCst);
                        if pass > 0 && pass < n {
                            shared.stats.cuts_mid_burst.fetch_add(1, Ordering::SeqCst);
                        }
                        break;
                    }
                }
                if is_dead(&shared, id) {
                    // Silenced: the far side hears nothing of this end closing either.
                    let _ = from.shutdown(Shutdown::Both);
                } else {
                    close(&from, &to);
                }
                forget(&shared, id);
            });
        }
    }
}

fn is_dead(shared: &Shared, id: u64) -> bool {
    shared.dead.lock().expect("dead lock").contains(&id)
}

/// A connection accepted while silent: whatever it sends is swallowed, nothing ever comes back,
/// until the client gives up or the proxy is dropped.
fn hold(mut client: TcpStream, shared: Arc<Shared>) {
    std::thread::spawn(move || {
        let _ = client.set_read_timeout(Some(Duration::from_millis(200)));
        let mut buf = vec![0u8; 16 * 1024];
        while !shared.stop.load(Ordering::SeqCst) {
            match client.read(&mut buf) {
                Ok(0) => break,
                Ok(_) => {}
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) => {}
                Err(_) => break,
            }
        }
    });
}

fn forget(shared: &Shared, id: u64) {
    shared
        .live
        .lock()
        .expect("live lock")
        .retain(|(i, _, _)| *i != id);
}
