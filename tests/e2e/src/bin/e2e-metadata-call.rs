//! One metadata token request, for the lockdown test (`tests/lockdown.rs`) to run as a given
//! uid inside a network namespace: `e2e-metadata-call ADDR [CONNECT_TIMEOUT_SECS]` sends
//! `PUT /latest/api/token` to ADDR (connecting within 20 s unless told) and exits with what
//! happened.
//!
//! | exit | meaning |
//! |---|---|
//! | 0 | served: the answer is `HTTP/1.1 200` |
//! | 10 | refused: the connection was reset (`ECONNREFUSED`) |
//! | 11 | another error connecting, writing or reading (printed on stderr) |
//! | 12 | answered, but not `200` (the status line is printed on stderr) |
//! | 13 | no answer to the connection within the connect timeout (dropped) |
//!
//! Prints nothing on stdout: the token is never shown.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::ExitCode;
use std::time::Duration;

fn main() -> ExitCode {
    const USAGE: &str = "usage: e2e-metadata-call ADDR [CONNECT_TIMEOUT_SECS]";
    let mut args = std::env::args().skip(1);
    let addr: SocketAddr = args.next().and_then(|a| a.parse().ok()).expect(USAGE);
    let within = args.next().map_or(20, |s| s.parse().expect(USAGE));
    let mut stream = match TcpStream::connect_timeout(&addr, Duration::from_secs(within)) {
        Ok(s) => s,
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => return ExitCode::from(10),
        Err(e) if e.kind() == std::io::ErrorKind::TimedOut => return ExitCode::from(13),
        Err(e) => {
            eprintln!("connect {addr}: {e}");
            return ExitCode::from(11);
        }
    };
    let request = format!(
        "PUT /latest/api/token HTTP/1.1\r\nHost: {addr}\r\n\
         X-aliyun-ecs-metadata-token-ttl-seconds: 60\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    );
    let mut answer = Vec::new();
    let exchanged = stream
        .set_read_timeout(Some(Duration::from_secs(20)))
        .and_then(|()| stream.write_all(request.as_bytes()))
        .and_then(|()| stream.read_to_end(&mut answer));
    if let Err(e) = exchanged {
        eprintln!("exchange with {addr}: {e}");
        return ExitCode::from(11);
    }
    let status_line = String::from_utf8_lossy(&answer)
        .lines()
        .next()
        .unwrap_or_default()
        .to_owned();
    if status_line.starts_with("HTTP/1.1 200") {
        ExitCode::SUCCESS
    } else {
        eprintln!("answer: {status_line:?}");
        ExitCode::from(12)
    }
}
