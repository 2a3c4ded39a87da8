//! [`Pipe`]: the in-memory stream tungstenite runs over on the server, so
//! that the socket (and TLS) stay the transport's.
//!
//! tungstenite reads what the transport put in with [`Pipe::feed`] and gets
//! `WouldBlock` once it is all taken; what it writes is kept until the
//! transport takes it with [`Pipe::take_output`]. Writes never block, so
//! tungstenite's own write buffer stays empty and the outbound buffer that
//! counts (and is capped) is the transport's.

use std::io::{self, Read, Write};

/// Bytes in (from the socket, decrypted) and out (to the socket, to encrypt).
#[derive(Debug, Default)]
pub struct Pipe {
    input: Vec<u8>,
    taken: usize,
    output: Vec<u8>,
}

impl Pipe {
    /// A pipe whose first bytes to read are `bytes`.
    #[must_use]
    pub fn with_input(bytes: &[u8]) -> Pipe {
        Pipe { input: bytes.to_vec(), taken: 0, output: Vec::new() }
    }

    /// Appends bytes for tungstenite to read.
    pub fn feed(&mut self, bytes: &[u8]) {
        if self.taken == self.input.len() {
            self.input.clear();
            self.taken = 0;
        }
        self.input.extend_from_slice(bytes);
    }

    /// Bytes fed and not read yet.
    #[must_use]
    pub fn unread(&self) -> usize {
        self.input.len() - self.taken
    }

    /// What tungstenite wrote since the last call.
    pub fn take_output(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.output)
    }
}

impl Read for Pipe {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let rest = &self.input[self.taken..];
        if rest.is_empty() {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        let n = rest.len().min(buf.len());
        buf[..n].copy_from_slice(&rest[..n]);
        self.taken += n;
        if self.taken == self.input.len() {
            self.input.clear();
            self.taken = 0;
        }
        Ok(n)
    }
}

impl Write for Pipe {
    fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
        self.output.extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_what_was_fed_then_would_block_and_keeps_what_was_written() {
        let mut p = Pipe::with_input(b"abc");
        p.feed(b"de");
        let mut buf = [0u8; 4];
        assert_eq!(p.read(&mut buf).unwrap(), 4);
        assert_eq!(&buf, b"abcd");
        assert_eq!(p.unread(), 1);
        assert_eq!(p.read(&mut buf).unwrap(), 1);
        assert_eq!(p.read(&mut buf).unwrap_err().kind(), io::ErrorKind::WouldBlock);
        p.write_all(b"out").unwrap();
        assert_eq!(p.take_output(), b"out");
        assert!(p.take_output().is_empty());
    }
}
