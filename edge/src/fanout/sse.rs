//! Reading a node's SSE stream: bytes in, whole events out. Only what the node sends is
//! understood (`event:`, `id:`, one `data:` line, `:` comments); an event larger than
//! [`EVENT_BYTES_MAX`] is an error (the stream is dropped and another node tried), so a node
//! that never ends an event cannot grow the edge's buffer.

use bytes::{Buf, Bytes, BytesMut};

/// Largest event read from a node, in bytes (a poll's results with 16 options and a few
/// dozen actors and peers is ~5 KB).
pub const EVENT_BYTES_MAX: usize = 256 * 1024;

/// One event of the stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// A comment (the node's heartbeat): the stream is alive.
    Comment,
    /// A named event with its data.
    Named {
        /// Its `event:` field (`message` when absent).
        name: String,
        /// Its `data:` field.
        data: Bytes,
    },
}

/// Splits a byte stream into events.
#[derive(Debug, Default)]
pub struct Reader {
    pending: BytesMut,
}

/// The stream broke the limits or the format.
#[derive(Debug, PartialEq, Eq)]
pub struct Malformed(pub String);

impl Reader {
    /// Takes in `chunk`; returns the events it completed.
    pub fn feed(&mut self, chunk: &[u8]) -> Result<Vec<Event>, Malformed> {
        self.pending.extend_from_slice(chunk);
        let mut events = Vec::new();
        while let Some(end) = find_blank_line(&self.pending) {
            let block = self.pending.split_to(end.0).freeze();
            self.pending.advance(end.1);
            if let Some(event) = parse(&block)? {
                events.push(event);
            }
        }
        if self.pending.len() > EVENT_BYTES_MAX {
            return Err(Malformed(format!(
                "an event longer than {EVENT_BYTES_MAX} bytes"
            )));
        }
        Ok(events)
    }
}

/// Where the first blank line is: the end of the event before it, and the length of the
/// separator (`\n\n` or `\r\n\r\n`).
fn find_blank_line(bytes: &[u8]) -> Option<(usize, usize)> {
    let lf = bytes
        .windows(2)
        .position(|w| w == b"\n\n")
        .map(|at| (at, 2));
    let crlf = bytes
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map(|at| (at, 4));
    match (lf, crlf) {
        (Some(a), Some(b)) => Some(if a.0 <= b.0 { a } else { b }),
        (a, b) => a.or(b),
    }
}

fn parse(block: &Bytes) -> Result<Option<Event>, Malformed> {
    let text = std::str::from_utf8(block).map_err(|_| Malformed("an event not in UTF-8".into()))?;
    let mut name = None;
    let mut data: Option<&str> = None;
    let mut comment = false;
    for line in text.lines() {
        if line.starts_with(':') {
            comment = true;
            continue;
        }
        let (field, value) = line.split_once(':').unwrap_or((line, ""));
        let value = value.strip_prefix(' ').unwrap_or(value);
        match field {
            "event" => name = Some(value),
            "data" if data.is_some() => {
                return Err(Malformed("an event with two data lines".into()));
            }
            "data" => data = Some(value),
            _ => {}
        }
    }
    Ok(match data {
        Some(data) => {
            let start = data.as_ptr() as usize - text.as_ptr() as usize;
            Some(Event::Named {
                name: name.unwrap_or("message").to_owned(),
                data: block.slice(start..start + data.len()),
            })
        }
        None if comment => Some(Event::Comment),
        None => None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_split_across_chunks_come_out_whole_with_comments_as_heartbeats() {
        // Goal: the reader does not care where TCP cut the stream. Method: the node's two
        // kinds of event, fed one byte at a time and all at once.
        let stream = b"event: results\nid: 7\ndata: {\"a\":1}\n\n: heartbeat\n\n";
        let expected = vec![
            Event::Named {
                name: "results".into(),
                data: Bytes::from_static(b"{\"a\":1}"),
            },
            Event::Comment,
        ];
        let mut reader = Reader::default();
        assert_eq!(reader.feed(stream).unwrap(), expected);
        let mut reader = Reader::default();
        let mut events = Vec::new();
        for byte in stream {
            events.extend(reader.feed(&[*byte]).unwrap());
        }
        assert_eq!(events, expected);
    }

    #[test]
    fn an_event_that_never_ends_is_refused_at_the_limit() {
        let mut reader = Reader::default();
        assert!(reader.feed(b"data: ").is_ok());
        let long = vec![b'x'; EVENT_BYTES_MAX];
        assert!(reader.feed(&long).is_err());
    }
}
