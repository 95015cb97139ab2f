//! Throwing away the rest of a command too long to keep, in constant space.

/// What a [`Discard`] found.
#[derive(Debug, PartialEq, Eq)]
pub enum Discarded {
    /// The command goes on past what was fed: feed more.
    NeedMore,
    /// The command ended; the first `consumed` bytes of the last chunk were its end.
    Ended { consumed: usize },
    /// A LITERAL+ literal over the limit: the gate will not read its bytes, so it cannot tell
    /// where the command ends.
    Unsyncable,
}

/// Throws away the rest of a command too long to keep, holding nothing but a few counters:
/// literals are followed by count (a LITERAL+ one up to the limit), and a synchronizing literal
/// announced after the limit ends the command, since the client waits for a `+` that never
/// comes.
#[derive(Debug)]
pub struct Discard {
    max: u64,
    /// Bytes of a literal still to skip.
    literal_left: u64,
    /// Whether the current line ends, so far, with a literal announcement.
    announcement: Announcement,
    /// Lines only (an AUTHENTICATE response): braces mean nothing.
    lines_only: bool,
}

impl Discard {
    /// For a command: its literals are followed.
    pub fn command(max: usize) -> Discard {
        Discard {
            max: max as u64,
            literal_left: 0,
            announcement: Announcement::default(),
            lines_only: false,
        }
    }

    /// For a line without literals (a SASL response).
    pub fn line() -> Discard {
        Discard {
            lines_only: true,
            ..Discard::command(0)
        }
    }

    /// Feeds the next bytes of the command. `sync_answered`: the synchronizing literals
    /// announced in `chunk` were answered `+` (true only for what was buffered before the
    /// command turned out too long), so their data follows.
    pub fn feed(&mut self, chunk: &[u8], sync_answered: bool) -> Discarded {
        let mut at = 0;
        while at < chunk.len() {
            if self.literal_left > 0 {
                let skip = self.literal_left.min((chunk.len() - at) as u64);
                self.literal_left -= skip;
                at += skip as usize;
                continue;
            }
            let byte = chunk[at];
            at += 1;
            if byte != b'\n' {
                self.announcement.step(byte);
                continue;
            }
            let announced = self.announcement.end_of_line();
            match announced {
                _ if self.lines_only => return Discarded::Ended { consumed: at },
                None => return Discarded::Ended { consumed: at },
                Some((_, false)) if !sync_answered => return Discarded::Ended { consumed: at },
                Some((length, true)) if length > self.max => return Discarded::Unsyncable,
                Some((length, _)) => self.literal_left = length,
            }
        }
        Discarded::NeedMore
    }
}

/// Recognises, byte by byte, a literal announcement (`{N}` or `{N+}`, then maybe CR) at the end
/// of a line, with any number of digits, in constant space.
#[derive(Debug, Default)]
struct Announcement {
    state: AnnouncementState,
    length: u64,
    non_sync: bool,
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
enum AnnouncementState {
    #[default]
    None,
    Open,
    Digits,
    Plus,
    Closed,
    ClosedCr,
}

impl Announcement {
    fn step(&mut self, byte: u8) {
        use AnnouncementState::*;
        self.state = match (self.state, byte) {
            (_, b'{') => {
                self.length = 0;
                self.non_sync = false;
                Open
            }
            (Open | Digits, b'0'..=b'9') => {
                self.length = self
                    .length
                    .saturating_mul(10)
                    .saturating_add(u64::from(byte - b'0'));
                Digits
            }
            (Digits, b'+') => {
                self.non_sync = true;
                Plus
            }
            (Digits | Plus, b'}') => Closed,
            (Closed, b'\r') => ClosedCr,
            _ => None,
        };
    }

    /// At a line feed: the announcement the line ended with, if any; starts over.
    fn end_of_line(&mut self) -> Option<(u64, bool)> {
        let found = matches!(
            self.state,
            AnnouncementState::Closed | AnnouncementState::ClosedCr
        )
        .then_some((self.length, self.non_sync));
        *self = Announcement::default();
        found
    }
}
