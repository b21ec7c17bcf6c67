//! Messages from a client's data frames: fragments joined, text checked as UTF-8, the size
//! limit kept across fragments.
//!
//! yawc can join fragments itself, but that layer fails some messages without closing the
//! connection and others after queuing a close frame of its own, and the bridge cannot tell
//! which from the error. Below it, yawc's frame layer closes on every error it reports, so
//! the bridge reads frames and joins them here: an error of yawc's is closed by yawc, an
//! error found here is closed by the bridge, and no connection gets two close frames.

use bytes::BytesMut;
use yawc::{Frame, OpCode};

use super::event::Event;

/// A message the bridge refuses, and the close code that says why.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Refused {
    /// Larger than `--ws-max-size` (1009).
    TooBig,
    /// A text message that is not UTF-8 (1007).
    NotUtf8,
    /// A continuation with no message to continue, or a new message before the last one
    /// ended (1002).
    OutOfSequence,
}

impl Refused {
    pub(super) fn close_code(&self) -> u16 {
        match self {
            Refused::TooBig => 1009,
            Refused::NotUtf8 => 1007,
            Refused::OutOfSequence => 1002,
        }
    }
}

/// Joins a client's data frames into messages.
pub(super) struct Assembler {
    max_size: usize,
    /// The message whose first frames have arrived: text or not, and its bytes so far.
    partial: Option<(bool, BytesMut)>,
}

impl Assembler {
    pub(super) fn new(max_size: usize) -> Self {
        Assembler {
            max_size,
            partial: None,
        }
    }

    /// Takes a data frame (text, binary or continuation: control frames are the caller's);
    /// gives the message it ends, if any.
    pub(super) fn push(&mut self, frame: Frame) -> Result<Option<Event>, Refused> {
        let (opcode, fin, payload) = frame.into_parts();
        let (text, payload) = match (opcode, self.partial.take()) {
            (OpCode::Continuation, None) => return Err(Refused::OutOfSequence),
            (OpCode::Continuation, Some((text, mut joined))) => {
                if joined.len() + payload.len() > self.max_size {
                    return Err(Refused::TooBig);
                }
                joined.extend_from_slice(&payload);
                if !fin {
                    self.partial = Some((text, joined));
                    return Ok(None);
                }
                (text, joined.freeze())
            }
            (_, Some(_)) => return Err(Refused::OutOfSequence),
            (opcode, None) => {
                let text = opcode == OpCode::Text;
                if payload.len() > self.max_size {
                    return Err(Refused::TooBig);
                }
                if !fin {
                    self.partial = Some((text, BytesMut::from(payload)));
                    return Ok(None);
                }
                (text, payload)
            }
        };
        if !text {
            return Ok(Some(Event::Binary(payload)));
        }
        match std::str::from_utf8(&payload) {
            Ok(text) => Ok(Some(Event::Text(text.to_owned()))),
            Err(_) => Err(Refused::NotUtf8),
        }
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::*;

    fn frame(opcode: OpCode, fin: bool, payload: &[u8]) -> Frame {
        let payload = Bytes::copy_from_slice(payload);
        let frame = match opcode {
            OpCode::Text => Frame::text(payload),
            OpCode::Binary => Frame::binary(payload),
            _ => Frame::continuation(payload),
        };
        frame.with_fin(fin)
    }

    fn text(event: Option<Event>) -> String {
        match event {
            Some(Event::Text(text)) => text,
            _ => panic!("not a text message"),
        }
    }

    #[test]
    fn a_whole_frame_is_a_message() {
        let mut assembler = Assembler::new(16);
        let event = assembler.push(frame(OpCode::Text, true, "héllo".as_bytes()));
        assert_eq!(text(event.unwrap()), "héllo");
        let event = assembler.push(frame(OpCode::Binary, true, b"\xff"));
        assert!(matches!(event, Ok(Some(Event::Binary(bytes))) if bytes == b"\xff"[..]));
    }

    #[test]
    fn fragments_are_joined_and_a_character_may_span_two() {
        let mut assembler = Assembler::new(16);
        let bytes = "hé".as_bytes();
        assert!(matches!(
            assembler.push(frame(OpCode::Text, false, &bytes[..2])),
            Ok(None)
        ));
        let event = assembler.push(frame(OpCode::Continuation, true, &bytes[2..]));
        assert_eq!(text(event.unwrap()), "hé");
    }

    #[test]
    fn the_limit_counts_every_fragment_and_allows_a_message_at_it() {
        let mut assembler = Assembler::new(4);
        assert!(matches!(
            assembler.push(frame(OpCode::Binary, true, b"four")),
            Ok(Some(_))
        ));
        assert!(matches!(
            assembler.push(frame(OpCode::Binary, false, b"abc")),
            Ok(None)
        ));
        assert_eq!(
            assembler
                .push(frame(OpCode::Continuation, true, b"de"))
                .err(),
            Some(Refused::TooBig)
        );
        assert_eq!(
            Assembler::new(4)
                .push(frame(OpCode::Text, true, b"fives"))
                .err(),
            Some(Refused::TooBig)
        );
    }

    #[test]
    fn invalid_utf8_and_frames_out_of_sequence_are_refused() {
        let mut assembler = Assembler::new(16);
        let refused = assembler.push(frame(OpCode::Text, true, b"\xc3"));
        assert_eq!(
            refused.err().map(|refused| refused.close_code()),
            Some(1007)
        );
        let refused = assembler.push(frame(OpCode::Continuation, true, b"x"));
        assert_eq!(refused.err(), Some(Refused::OutOfSequence));
        assert!(matches!(
            assembler.push(frame(OpCode::Text, false, b"x")),
            Ok(None)
        ));
        let refused = assembler.push(frame(OpCode::Binary, true, b"y"));
        assert_eq!(
            refused.err().map(|refused| refused.close_code()),
            Some(1002)
        );
    }
}
