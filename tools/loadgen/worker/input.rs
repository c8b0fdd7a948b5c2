//! A connection's read buffer: non-blocking reads, decoded answers. No writes, no session.

use std::io;

use raftchat::client::proto::{self, Answer};
use raftchat::tls::ReadOutcome;

use super::stream::Stream;
use super::READ_CHUNK_BYTES;

/// A non-blocking read buffer of answers.
pub struct Input {
    buf: Vec<u8>,
    start: usize,
    end: usize,
}

impl Input {
    pub fn new() -> Input {
        Input {
            buf: vec![0; READ_CHUNK_BYTES],
            start: 0,
            end: 0,
        }
    }

    pub fn clear(&mut self) {
        self.start = 0;
        self.end = 0;
    }

    /// Reads until the socket would block. `Ok(false)`: the peer closed. `read_closed`: the
    /// poller saw the peer's side close, so read to EOF even after a short read (and over TLS
    /// a short read never ends the loop: see [`Stream::short_read_means_empty`]).
    pub fn read_from(&mut self, stream: &mut Stream, read_closed: bool) -> io::Result<bool> {
        let stop_on_short_read = stream.short_read_means_empty() && !read_closed;
        loop {
            if self.start == self.end {
                self.clear();
            }
            let frame_len = proto::frame_len_hint(&self.buf[self.start..self.end]).unwrap_or(0);
            let want = frame_len.max(self.end - self.start) + READ_CHUNK_BYTES / 4;
            if self.buf.len() - self.start < want
                || self.buf.len() - self.end < READ_CHUNK_BYTES / 4
            {
                self.buf.copy_within(self.start..self.end, 0);
                self.end -= self.start;
                self.start = 0;
                if self.buf.len() < want {
                    self.buf.resize(want, 0);
                }
            }
            let asked = self.buf.len() - self.end;
            match stream.read(&mut self.buf[self.end..]) {
                Ok(ReadOutcome::Closed) => return Ok(false),
                // A short plain read emptied the socket (edge-triggered: new data wakes us).
                Ok(ReadOutcome::Data(n)) if n < asked && stop_on_short_read => {
                    self.end += n;
                    return Ok(true);
                }
                Ok(ReadOutcome::Data(n)) => self.end += n,
                Ok(ReadOutcome::WouldBlock) => return Ok(true),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
    }

    pub fn next_answer(&mut self) -> Result<Option<Answer>, proto::ProtoError> {
        match proto::decode_answer(&self.buf[self.start..self.end])? {
            None => Ok(None),
            Some((answer, used)) => {
                self.start += used;
                Ok(Some(answer))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;
    use std::net::TcpListener;
    use std::time::Duration;

    use mio::{Poll, Token};
    use raftchat::client::proto::Answer;
    use raftchat::client::{ClientStream, ClientTls};
    use raftchat::tls::config::{node_server_config, CertRole};
    use raftchat::tls::gen::TestCerts;
    use raftchat::tls::ClientCertPolicy;

    use super::super::stream::Stream;
    use super::Input;

    #[test]
    fn one_readiness_event_reads_every_tls_record_waiting() {
        // 2,000 answers in one write of ~40 KB: several TLS records in the socket at once.
        // One record's plaintext is shorter than the read asked for while more wait, so a
        // "short read means empty" rule would stop after the first record.
        let dir = tempfile::tempdir().unwrap();
        let certs = TestCerts::new(dir.path()).unwrap();
        let material = certs.node(0).unwrap().load(CertRole::Node).unwrap();
        let config = node_server_config(&material, ClientCertPolicy::None).unwrap();
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let mut bytes = Vec::new();
        for req_id in 0..2000 {
            Answer::Posted {
                req_id,
                position: req_id + 1,
            }
            .encode(&mut bytes);
        }
        assert!(bytes.len() > 2 * 16384, "spans several records");
        let server = std::thread::spawn(move || {
            let (tcp, _) = listener.accept().unwrap();
            let conn = rustls::ServerConnection::new(config).unwrap();
            let mut tls = rustls::StreamOwned::new(conn, tcp);
            tls.write_all(&bytes).unwrap();
            tls.flush().unwrap();
            tls // kept open: the client must not see a close
        });
        let tls = ClientTls::trusting(&certs.ca_path()).unwrap();
        let client = ClientStream::connect(
            addr,
            Duration::from_secs(10),
            Duration::from_secs(10),
            Some(&tls),
        )
        .unwrap();
        let poll = Poll::new().unwrap();
        let mut stream = Stream::adopt(poll.registry(), Token(0), client).unwrap();
        let _server_side = server.join().unwrap();
        std::thread::sleep(Duration::from_millis(200)); // every record is in the socket now
        let mut input = Input::new();
        assert!(input.read_from(&mut stream, false).unwrap(), "still open");
        let mut answers = 0;
        while let Some(answer) = input.next_answer().unwrap() {
            assert_eq!(answer.req_id(), answers);
            answers += 1;
        }
        assert_eq!(answers, 2000, "one read_from call took every record");
    }
}
