//! A minimal HTTP/1.1 server for the sandbox: GET only, keep-alive, a thread per connection. Enough for a
//! client like ureq, and fast enough that benchmarks measure the poller rather than the sandbox.

use std::io::{self, BufRead, BufReader, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use super::{Sandbox, TransportFault};

/// A running sandbox server on 127.0.0.1. Dropping it stops the server and joins its threads.
pub struct SandboxServer {
    addr: SocketAddr,
    stopping: Arc<AtomicBool>,
    acceptor: Option<JoinHandle<()>>,
    connections: Arc<Mutex<Vec<JoinHandle<()>>>>,
    sandbox: Arc<Sandbox>,
}

impl SandboxServer {
    /// Starts serving `sandbox` on an ephemeral loopback port (`port` 0) or the given one.
    pub fn start(sandbox: Arc<Sandbox>, port: u16) -> io::Result<SandboxServer> {
        let listener = TcpListener::bind(("127.0.0.1", port))?;
        let addr = listener.local_addr()?;
        let stopping = Arc::new(AtomicBool::new(false));
        let connections = Arc::new(Mutex::new(Vec::new()));
        let acceptor = {
            let (stopping, connections, sandbox) =
                (stopping.clone(), connections.clone(), sandbox.clone());
            std::thread::Builder::new()
                .name("sandbox-accept".into())
                .spawn(move || accept(listener, sandbox, stopping, connections))?
        };
        Ok(SandboxServer {
            addr,
            stopping,
            acceptor: Some(acceptor),
            connections,
            sandbox,
        })
    }

    /// The base URL to give `dlr-poller poll --carrier-url`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn sandbox(&self) -> &Sandbox {
        &self.sandbox
    }
}

impl Drop for SandboxServer {
    fn drop(&mut self) {
        self.stopping.store(true, Ordering::SeqCst);
        // Wake the acceptor blocked in accept().
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_secs(1));
        if let Some(acceptor) = self.acceptor.take() {
            let _ = acceptor.join();
        }
        let handles =
            std::mem::take(&mut *self.connections.lock().unwrap_or_else(|e| e.into_inner()));
        for handle in handles {
            let _ = handle.join();
        }
    }
}

fn accept(
    listener: TcpListener,
    sandbox: Arc<Sandbox>,
    stopping: Arc<AtomicBool>,
    connections: Arc<Mutex<Vec<JoinHandle<()>>>>,
) {
    for stream in listener.incoming() {
        if stopping.load(Ordering::SeqCst) {
            return;
        }
        let Ok(stream) = stream else { continue };
        let (sandbox, stopping) = (sandbox.clone(), stopping.clone());
        let spawned = std::thread::Builder::new()
            .name("sandbox-conn".into())
            .spawn(move || {
                let _ = serve(stream, &sandbox, &stopping);
            });
        if let Ok(handle) = spawned {
            let mut list = connections.lock().unwrap_or_else(|e| e.into_inner());
            list.retain(|h| !h.is_finished());
            list.push(handle);
        }
    }
}

/// Serves requests on one connection until the client closes it or the server stops.
fn serve(stream: TcpStream, sandbox: &Sandbox, stopping: &AtomicBool) -> io::Result<()> {
    stream.set_nodelay(true)?;
    stream.set_read_timeout(Some(Duration::from_millis(100)))?;
    let mut writer = stream.try_clone()?;
    let mut reader = BufReader::new(stream);
    let mut head = Vec::new();
    loop {
        // Read one request head, byte lines at a time, tolerating read timeouts while idle.
        head.clear();
        loop {
            if stopping.load(Ordering::SeqCst) {
                let _ = writer.shutdown(Shutdown::Both);
                return Ok(());
            }
            match reader.read_until(b'\n', &mut head) {
                Ok(0) => return Ok(()),
                Ok(_) if head.ends_with(b"\r\n\r\n") || head == b"\r\n" => break,
                Ok(_) => continue,
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                    ) =>
                {
                    continue;
                }
                Err(e) => return Err(e),
            }
        }
        let text = String::from_utf8_lossy(&head);
        let mut lines = text.split("\r\n");
        let mut request_line = lines.next().unwrap_or("").split(' ');
        let (method, target) = (
            request_line.next().unwrap_or(""),
            request_line.next().unwrap_or("/"),
        );
        let mut authorization = None;
        let mut close = false;
        for line in lines {
            if let Some((name, value)) = line.split_once(':') {
                let value = value.trim();
                if name.eq_ignore_ascii_case("authorization") {
                    authorization = Some(value.to_string());
                } else if name.eq_ignore_ascii_case("connection")
                    && value.eq_ignore_ascii_case("close")
                {
                    close = true;
                }
            }
        }
        let fault = sandbox.transport_fault();
        if fault == Some(TransportFault::Hang) {
            while !stopping.load(Ordering::SeqCst) {
                std::thread::sleep(Duration::from_millis(50));
            }
            return Ok(());
        }
        let (status, headers, body) = if method == "GET" {
            sandbox.respond(target, authorization.as_deref())
        } else {
            (405, vec![], r#"{"error":"method not allowed"}"#.to_string())
        };
        let mut response = format!(
            "HTTP/1.1 {status} {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n",
            reason(status),
            body.len()
        );
        for (name, value) in headers {
            response.push_str(&format!("{name}: {value}\r\n"));
        }
        response.push_str("\r\n");
        if fault == Some(TransportFault::Truncate) {
            writer.write_all(response.as_bytes())?;
            writer.write_all(&body.as_bytes()[..body.len() / 2])?;
            let _ = writer.shutdown(Shutdown::Both);
            return Ok(());
        }
        response.push_str(&body);
        writer.write_all(response.as_bytes())?;
        if close {
            return Ok(());
        }
    }
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        401 => "Unauthorized",
        404 => "Not Found",
        405 => "Method Not Allowed",
        429 => "Too Many Requests",
        500 => "Internal Server Error",
        503 => "Service Unavailable",
        _ => "",
    }
}
