//! Receiving a forwarded request on the listener's socket: one JSON line,
//! whole within [`REQUEST_DEADLINE`] of the connection being accepted, at
//! most [`MAX_REQUEST`] bytes. The listener serves its socket from the
//! thread that runs its session: a caller that sends slowly (or never ends
//! its line) must not hold it, nor one that sends without end fill its memory.

use std::io::{ErrorKind, Read as _};
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

/// How long the listener waits for a whole request line. A command writes
/// its request at once after connecting (it reads its standard input and
/// secrets before), so this bounds only a caller that drips or stalls.
pub const REQUEST_DEADLINE: Duration = Duration::from_secs(2);

/// The largest request line: a message text of the server's default
/// `limits.max_data` (1 MiB), JSON-escaped, fits.
pub const MAX_REQUEST: usize = 8 * 1024 * 1024;

/// How long the listener waits for a caller to take its reply.
pub const REPLY_DEADLINE: Duration = Duration::from_secs(5);

/// Why no request was received.
#[derive(Debug, thiserror::Error)]
pub enum RequestError {
    /// The caller closed the connection without sending anything (a
    /// command that only looked whether a listener runs).
    #[error("the caller sent nothing")]
    Empty,
    /// The line was not complete within [`REQUEST_DEADLINE`].
    #[error("request not received within {} s ({got} bytes arrived, no end of line): a request must be sent at once", REQUEST_DEADLINE.as_secs())]
    TooSlow {
        /// Bytes received.
        got: usize,
    },
    /// The line is longer than [`MAX_REQUEST`].
    #[error("request over {MAX_REQUEST} bytes")]
    TooLarge,
    /// The caller closed the connection in the middle of the line.
    #[error("request cut short after {got} bytes (no end of line)")]
    Truncated {
        /// Bytes received.
        got: usize,
    },
    /// Reading failed.
    #[error("cannot read the request: {0}")]
    Io(#[from] std::io::Error),
}

/// Reads one line (without its `\n`) from `stream`, by `deadline`.
pub fn read_line(stream: &UnixStream, deadline: Instant) -> Result<Vec<u8>, RequestError> {
    let mut line = Vec::new();
    let mut chunk = vec![0u8; 64 * 1024];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(RequestError::TooSlow { got: line.len() });
        }
        stream.set_read_timeout(Some(left))?;
        let n = match (&*stream).read(&mut chunk) {
            Ok(0) if line.is_empty() => return Err(RequestError::Empty),
            Ok(0) => return Err(RequestError::Truncated { got: line.len() }),
            Ok(n) => n,
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut | ErrorKind::Interrupted) => {
                continue;
            }
            Err(e) => return Err(e.into()),
        };
        let end = chunk[..n].iter().position(|&b| b == b'\n');
        line.extend_from_slice(&chunk[..end.unwrap_or(n)]);
        if line.len() > MAX_REQUEST {
            return Err(RequestError::TooLarge);
        }
        if end.is_some() {
            return Ok(line);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write as _;

    use super::*;

    fn soon() -> Instant {
        Instant::now() + Duration::from_millis(300)
    }

    #[test]
    fn a_line_is_read_and_a_slow_endless_or_empty_one_is_refused() {
        let (a, b) = UnixStream::pair().unwrap();
        (&a).write_all(b"{\"x\":1}\nrest").unwrap();
        assert_eq!(read_line(&b, soon()).unwrap(), b"{\"x\":1}");

        let (a, b) = UnixStream::pair().unwrap();
        (&a).write_all(b"{\"x\"").unwrap();
        assert!(matches!(read_line(&b, soon()), Err(RequestError::TooSlow { got: 4 })));

        let (a, b) = UnixStream::pair().unwrap();
        let writer = std::thread::spawn(move || {
            let block = vec![b'x'; 1024 * 1024];
            for _ in 0..9 {
                if (&a).write_all(&block).is_err() {
                    break;
                }
            }
        });
        let e = read_line(&b, Instant::now() + Duration::from_secs(20)).unwrap_err();
        assert!(matches!(e, RequestError::TooLarge), "{e}");
        drop(b);
        writer.join().unwrap();

        let (a, b) = UnixStream::pair().unwrap();
        drop(a);
        assert!(matches!(read_line(&b, soon()), Err(RequestError::Empty)));
    }
}
