//! A TCP proxy between a client and one broker that forwards whole frames and can be told to
//! lose a produce response: it forwards the request, waits for the broker's answer to it,
//! throws that answer away and closes both sides, as a connection dying at the worst moment
//! would. It rewrites Metadata responses so that clients keep connecting through it.

use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use prost::Message;
use tidelog_proto::pb;

/// Largest frame the proxy forwards (the broker's default frame limit).
const FRAME_BYTES_MAX: usize = 64 << 20;

#[derive(Debug)]
struct Shared {
    addr: SocketAddr,
    upstream: Mutex<SocketAddr>,
    /// Produce requests whose response is still to be lost.
    cuts_pending: AtomicU32,
    responses_dropped: AtomicU64,
    produce_requests: AtomicU64,
    stop: AtomicBool,
}

/// A running proxy on 127.0.0.1. Dropping it stops accepting (open connections end with their
/// peers).
#[derive(Debug)]
pub struct Proxy {
    shared: Arc<Shared>,
    accept: Option<JoinHandle<()>>,
}

impl Proxy {
    /// Listens on an ephemeral port and forwards every connection to `upstream`.
    pub fn start(upstream: SocketAddr) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("binding the proxy");
        let shared = Arc::new(Shared {
            addr: listener.local_addr().expect("proxy address"),
            upstream: Mutex::new(upstream),
            cuts_pending: AtomicU32::new(0),
            responses_dropped: AtomicU64::new(0),
            produce_requests: AtomicU64::new(0),
            stop: AtomicBool::new(false),
        });
        let accept = {
            let shared = shared.clone();
            std::thread::spawn(move || {
                for client in listener.incoming() {
                    if shared.stop.load(Ordering::SeqCst) {
                        return;
                    }
                    let Ok(client) = client else { continue };
                    let shared = shared.clone();
                    std::thread::spawn(move || {
                        if let Err(error) = serve(&shared, client) {
                            eprintln!("proxy connection ended: {error}");
                        }
                    });
                }
            })
        };
        Self {
            shared,
            accept: Some(accept),
        }
    }

    pub fn addr(&self) -> SocketAddr {
        self.shared.addr
    }

    /// New connections go to `upstream` from now on (a restarted broker has a new port).
    pub fn set_upstream(&self, upstream: SocketAddr) {
        *self.shared.upstream.lock().expect("upstream lock") = upstream;
    }

    /// The next `count` produce requests reach the broker, but their responses are lost and
    /// their connections closed.
    pub fn lose_next_produce_responses(&self, count: u32) {
        self.shared.cuts_pending.fetch_add(count, Ordering::SeqCst);
    }

    /// Produce responses thrown away so far.
    pub fn responses_dropped(&self) -> u64 {
        self.shared.responses_dropped.load(Ordering::SeqCst)
    }

    /// Produce requests forwarded so far.
    pub fn produce_requests(&self) -> u64 {
        self.shared.produce_requests.load(Ordering::SeqCst)
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        // Wake the blocking accept.
        let _ = TcpStream::connect(self.shared.addr);
        if let Some(accept) = self.accept.take() {
            let _ = accept.join();
        }
    }
}

fn read_frame(stream: &mut TcpStream) -> io::Result<Option<Vec<u8>>> {
    let mut length = [0u8; 4];
    match stream.read_exact(&mut length) {
        Ok(()) => {}
        Err(error) if error.kind() == io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(error) => return Err(error),
    }
    let length = u32::from_be_bytes(length) as usize;
    if length > FRAME_BYTES_MAX {
        return Err(io::Error::new(io::ErrorKind::InvalidData, "frame too large"));
    }
    let mut body = vec![0u8; length];
    stream.read_exact(&mut body)?;
    Ok(Some(body))
}

fn write_frame(stream: &mut TcpStream, body: &[u8]) -> io::Result<()> {
    let mut frame = Vec::with_capacity(4 + body.len());
    frame.extend_from_slice(&(body.len() as u32).to_be_bytes());
    frame.extend_from_slice(body);
    stream.write_all(&frame)
}

fn serve(shared: &Arc<Shared>, client: TcpStream) -> io::Result<()> {
    let upstream = *shared.upstream.lock().expect("upstream lock");
    let broker = TcpStream::connect(upstream)?;
    client.set_nodelay(true)?;
    broker.set_nodelay(true)?;
    // Correlation id of the produce request whose response is to be lost.
    let cut: Arc<Mutex<Option<u64>>> = Arc::default();
    let requests = {
        let (mut client, mut broker) = (client.try_clone()?, broker.try_clone()?);
        let (shared, cut) = (shared.clone(), cut.clone());
        std::thread::spawn(move || -> io::Result<()> {
            while let Some(body) = read_frame(&mut client)? {
                if let Ok(request) = pb::Request::decode(&body[..]) {
                    if let Some(pb::request::Body::Produce(_)) = request.body {
                        shared.produce_requests.fetch_add(1, Ordering::SeqCst);
                        let take = shared
                            .cuts_pending
                            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                            .is_ok();
                        let mut cut = cut.lock().expect("cut lock");
                        if take && cut.is_none() {
                            *cut = request.header.map(|header| header.correlation_id);
                        } else if take {
                            // One loss per connection: give the cut back for the next one.
                            shared.cuts_pending.fetch_add(1, Ordering::SeqCst);
                        }
                    }
                }
                write_frame(&mut broker, &body)?;
            }
            let _ = broker.shutdown(Shutdown::Write);
            Ok(())
        })
    };
    let (mut client_out, mut broker_in) = (client, broker);
    let result = (|| -> io::Result<()> {
        while let Some(body) = read_frame(&mut broker_in)? {
            let mut response = match pb::Response::decode(&body[..]) {
                Ok(response) => response,
                Err(_) => {
                    write_frame(&mut client_out, &body)?;
                    continue;
                }
            };
            let lose = *cut.lock().expect("cut lock") == Some(response.correlation_id);
            if lose {
                shared.responses_dropped.fetch_add(1, Ordering::SeqCst);
                return Ok(());
            }
            if let Some(pb::response::Body::Metadata(metadata)) = response.body.as_mut() {
                for broker in &mut metadata.brokers {
                    broker.host = shared.addr.ip().to_string();
                    broker.port = u32::from(shared.addr.port());
                }
                write_frame(&mut client_out, &response.encode_to_vec())?;
            } else {
                write_frame(&mut client_out, &body)?;
            }
        }
        Ok(())
    })();
    let _ = client_out.shutdown(Shutdown::Both);
    let _ = broker_in.shutdown(Shutdown::Both);
    let _ = requests.join();
    result
}
