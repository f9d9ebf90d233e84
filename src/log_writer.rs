//! Where `serve`'s log lines go: appended to one shared buffer, which a background thread
//! writes out every few milliseconds. One log line per decision must cost a check neither a
//! write syscall nor a wake-up of another thread.
//!
//! `tracing-appender`'s non-blocking writer, used before, sends each line through a channel as
//! its own allocation and wakes its writer thread for it; with a line per check, that was most
//! of what a check cost the sidecar beyond a do-nothing server (BENCHMARKS.md, issue 29).
//! Here a line is one copy into a buffer under a lock held for that copy, and the writer wakes
//! on a timer, writing whatever came meanwhile in one go.
//!
//! Bounded: past [`MAX_BUFFERED_BYTES`] waiting to be written (the output is stuck), lines are
//! dropped, never waited for, and their count is written out once the output moves again.
//! Dropping the [`FlushGuard`] writes what is left, waiting for it at most [`EXIT_WAIT`].
//!
//! [`PlainFields`] writes an event's fields as `tracing-subscriber`'s default does, byte for
//! byte, without its colour machinery where there is no colour to write.

use std::fmt;
use std::io::Write;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use tracing::field::{Field, Visit};
use tracing_subscriber::field::{RecordFields, VisitOutput as _};
use tracing_subscriber::fmt::format::{DefaultFields, DefaultVisitor, Writer};
use tracing_subscriber::fmt::FormatFields;

/// How long a line may wait in the buffer: the writer thread's period.
pub const FLUSH_INTERVAL: Duration = Duration::from_millis(20);
/// The most bytes that wait to be written; lines past it are dropped.
pub const MAX_BUFFERED_BYTES: usize = 8 * 1024 * 1024;
/// The longest the exit waits for the writer thread to write what is left.
pub const EXIT_WAIT: Duration = Duration::from_secs(1);

struct Shared {
    buffer: Mutex<Vec<u8>>,
    dropped: AtomicU64,
    stopping: AtomicBool,
}

/// Makes the writers `tracing-subscriber`'s fmt layer writes each formatted line to.
#[derive(Clone)]
pub struct BatchedWriter {
    shared: Arc<Shared>,
}

/// Stops the writer thread when dropped, once it has written every buffered line.
pub struct FlushGuard {
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
    /// Hears from the writer thread once it has written everything and returned.
    done: std::sync::mpsc::Receiver<()>,
}

/// A writer over `out` (stderr, for `serve`) and the guard that flushes it at exit.
pub fn batched<W: Write + Send + 'static>(out: W) -> std::io::Result<(BatchedWriter, FlushGuard)> {
    let shared = Arc::new(Shared {
        buffer: Mutex::new(Vec::with_capacity(64 * 1024)),
        dropped: AtomicU64::new(0),
        stopping: AtomicBool::new(false),
    });
    let (finished, done) = std::sync::mpsc::channel();
    let thread = std::thread::Builder::new()
        .name("log-writer".into())
        .spawn({
            let shared = Arc::clone(&shared);
            move || {
                write_out(&shared, out);
                let _ = finished.send(());
            }
        })?;
    Ok((
        BatchedWriter {
            shared: Arc::clone(&shared),
        },
        FlushGuard {
            shared,
            thread: Some(thread),
            done,
        },
    ))
}

/// The writer thread: every [`FLUSH_INTERVAL`], what was buffered goes out in one write. Two
/// buffers take turns, so a steady stream of lines allocates nothing.
fn write_out<W: Write>(shared: &Shared, mut out: W) {
    let mut spare = Vec::with_capacity(64 * 1024);
    loop {
        let stopping = shared.stopping.load(Ordering::Acquire);
        {
            let mut buffer = shared.buffer.lock().unwrap_or_else(|e| e.into_inner());
            std::mem::swap(&mut *buffer, &mut spare);
        }
        if !spare.is_empty() {
            // A failed write loses these lines, as it would have lost them written one by one.
            let _ = out.write_all(&spare).and_then(|()| out.flush());
            spare.clear();
            if spare.capacity() > MAX_BUFFERED_BYTES / 4 {
                spare.shrink_to(64 * 1024);
            }
        }
        let dropped = shared.dropped.swap(0, Ordering::Relaxed);
        if dropped > 0 {
            let _ = writeln!(
                out,
                "cognito-authz: {dropped} log lines dropped: the log output did not keep up"
            )
            .and_then(|()| out.flush());
        }
        if stopping {
            return;
        }
        std::thread::park_timeout(FLUSH_INTERVAL);
    }
}

impl Drop for FlushGuard {
    /// Waits for the writer thread to write what is left, at most [`EXIT_WAIT`]: an output
    /// stuck for good does not hold the exit (what it has not taken is lost).
    fn drop(&mut self) {
        self.shared.stopping.store(true, Ordering::Release);
        if let Some(thread) = self.thread.take() {
            thread.thread().unpark();
            if self.done.recv_timeout(EXIT_WAIT).is_ok() {
                let _ = thread.join();
            }
        }
    }
}

/// One line's writer: the fmt layer formats a whole line, then writes it here at once.
pub struct LineWriter<'a> {
    shared: &'a Shared,
}

impl Write for LineWriter<'_> {
    fn write(&mut self, line: &[u8]) -> std::io::Result<usize> {
        let mut buffer = self.shared.buffer.lock().unwrap_or_else(|e| e.into_inner());
        if buffer.len() + line.len() > MAX_BUFFERED_BYTES {
            drop(buffer);
            self.shared.dropped.fetch_add(1, Ordering::Relaxed);
        } else {
            buffer.extend_from_slice(line);
        }
        Ok(line.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for BatchedWriter {
    type Writer = LineWriter<'a>;

    fn make_writer(&'a self) -> LineWriter<'a> {
        LineWriter {
            shared: &self.shared,
        }
    }
}

/// An event's fields as [`DefaultFields`] writes them (`name=value`, space-separated, the
/// message first and bare, strings quoted and escaped as `Debug` escapes them), the same bytes,
/// for a fraction of the work when the output has no colours: `DefaultFields` paints each name
/// and each `=` through `nu-ansi-term` even with colours off, and escapes every string a
/// character at a time. A line per decision made that formatting a tenth of what a check cost
/// the sidecar (issue 29). With colours, and for every field it does not write itself (the
/// message, errors, raw identifiers, `log.` fields), it hands over to `DefaultFields`' own
/// visitor.
#[derive(Debug, Default, Clone, Copy)]
pub struct PlainFields;

impl<'writer> FormatFields<'writer> for PlainFields {
    fn format_fields<R: RecordFields>(&self, writer: Writer<'writer>, fields: R) -> fmt::Result {
        if writer.has_ansi_escapes() {
            return DefaultFields::new().format_fields(writer, fields);
        }
        let mut visitor = PlainVisitor {
            writer,
            is_empty: true,
            result: Ok(()),
        };
        fields.record(&mut visitor);
        visitor.result
    }
}

struct PlainVisitor<'a> {
    writer: Writer<'a>,
    is_empty: bool,
    result: fmt::Result,
}

/// Whether `Debug` writes `value` as it is between its quotes: printable ASCII but `"` and `\`.
fn debug_verbatim(value: &str) -> bool {
    value
        .bytes()
        .all(|b| (0x20..0x7f).contains(&b) && b != b'"' && b != b'\\')
}

impl PlainVisitor<'_> {
    /// Whether this visitor writes the field itself: a plain name (`DefaultVisitor` writes the
    /// message bare, strips `r#` and skips `log.` fields).
    fn writes(field: &Field) -> bool {
        let name = field.name();
        name != "message" && !name.starts_with("r#") && !name.starts_with("log.")
    }

    /// `name=`, after a space unless it is the first field.
    fn name(&mut self, field: &Field) -> fmt::Result {
        if self.is_empty {
            self.is_empty = false;
        } else {
            self.writer.write_str(" ")?;
        }
        self.writer.write_str(field.name())?;
        self.writer.write_str("=")
    }

    /// A field this visitor does not write: `DefaultVisitor` writes it, padded as it would be.
    fn hand_over(&mut self, record: impl FnOnce(&mut DefaultVisitor<'_>)) {
        let mut visitor = DefaultVisitor::new(self.writer.by_ref(), self.is_empty);
        record(&mut visitor);
        self.result = visitor.finish();
        // It writes every field but the `log.` ones it skips.
        self.is_empty = false;
    }
}

impl Visit for PlainVisitor<'_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        if self.result.is_err() {
            return;
        }
        if !Self::writes(field) {
            if !field.name().starts_with("log.") {
                self.hand_over(|v| v.record_str(field, value));
            }
            return;
        }
        self.result = self.name(field).and_then(|()| {
            if debug_verbatim(value) {
                self.writer.write_str("\"")?;
                self.writer.write_str(value)?;
                self.writer.write_str("\"")
            } else {
                write!(self.writer, "{value:?}")
            }
        });
    }

    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        if self.result.is_err() || field.name().starts_with("log.") {
            return;
        }
        self.hand_over(|v| v.record_error(field, value));
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        if self.result.is_err() {
            return;
        }
        if !Self::writes(field) {
            if !field.name().starts_with("log.") {
                self.hand_over(|v| v.record_debug(field, value));
            }
            return;
        }
        self.result = self
            .name(field)
            .and_then(|()| write!(self.writer, "{value:?}"));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tracing_subscriber::fmt::MakeWriter as _;

    /// An output the test can read while the writer thread holds it.
    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);

    impl Write for Captured {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(bytes);
            Ok(bytes.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl Captured {
        fn text(&self) -> String {
            String::from_utf8(self.0.lock().unwrap().clone()).unwrap()
        }
    }

    /// The same event through `DefaultFields` and `PlainFields`, colours off: the same bytes,
    /// for every kind of field and for strings that need escaping.
    #[test]
    fn plain_fields_write_what_default_fields_write() {
        use tracing_subscriber::layer::SubscriberExt as _;
        let lines = |plain: bool| {
            let out = Captured::default();
            let writer = {
                let out = out.clone();
                move || out.clone()
            };
            let layer = tracing_subscriber::fmt::layer()
                .with_ansi(false)
                .without_time()
                .with_writer(writer);
            let emit = || {
                let error = std::io::Error::other("disk full");
                let absent: Option<&str> = None;
                tracing::info!(
                    target: "cognito_authz::decision",
                    decision = "allow",
                    reason = "valid",
                    rule = %"api/admin",
                    method = %"GET",
                    sub = Some("8f1e2d3c-0000-4000-8000-00000000abcd"),
                    request_id = absent,
                    quoted = "say \"hi\"\\ \u{1b}[31m tab\t é \u{7f}",
                    dry_run = false,
                    latency_us = 17u64,
                    delta = -3i64,
                    ratio = 0.5f64,
                    r#type = "raw",
                    cause = &error as &(dyn std::error::Error + 'static),
                    "check {}", "done"
                );
                tracing::warn!(only = "fields");
                tracing::warn!("only a message with \u{1b}[2J escapes");
            };
            if plain {
                let subscriber = tracing_subscriber::registry().with(layer.fmt_fields(PlainFields));
                tracing::subscriber::with_default(subscriber, emit);
            } else {
                tracing::subscriber::with_default(tracing_subscriber::registry().with(layer), emit);
            }
            out.text()
        };
        let (default, plain) = (lines(false), lines(true));
        assert!(default.contains("quoted="), "{default}");
        assert_eq!(plain, default);
    }

    #[test]
    fn lines_go_out_whole_in_order_within_the_interval_and_all_at_exit() {
        let out = Captured::default();
        let (writer, guard) = batched(out.clone()).unwrap();
        writer.make_writer().write_all(b"one\n").unwrap();
        writer.make_writer().write_all(b"two\n").unwrap();
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while out.text() != "one\ntwo\n" {
            assert!(std::time::Instant::now() < deadline, "{:?}", out.text());
            std::thread::sleep(FLUSH_INTERVAL / 4);
        }
        for i in 0..1000 {
            writer
                .make_writer()
                .write_all(format!("line {i}\n").as_bytes())
                .unwrap();
        }
        drop(guard);
        let text = out.text();
        let lines: Vec<&str> = text.lines().skip(2).collect();
        assert_eq!(lines.len(), 1000);
        assert!(lines
            .iter()
            .enumerate()
            .all(|(i, line)| *line == format!("line {i}")));
    }

    /// An output stuck for good (a pipe nobody reads) holds the exit no longer than
    /// [`EXIT_WAIT`]: what cannot be written is given up, as a stuck output's lines are.
    #[test]
    fn a_stuck_output_holds_the_exit_no_longer_than_the_exit_wait() {
        struct Stuck(Arc<Mutex<()>>);
        impl Write for Stuck {
            fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
                let _never = self.0.lock().unwrap();
                Ok(bytes.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let gate = Arc::new(Mutex::new(()));
        let held = gate.lock().unwrap();
        let (writer, guard) = batched(Stuck(Arc::clone(&gate))).unwrap();
        writer.make_writer().write_all(b"a line\n").unwrap();
        std::thread::sleep(FLUSH_INTERVAL * 3);
        let started = std::time::Instant::now();
        drop(guard);
        let waited = started.elapsed();
        drop(held);
        assert!(
            waited < EXIT_WAIT + Duration::from_secs(2),
            "the exit waited {waited:?} for a stuck output"
        );
    }

    /// An output that never takes a byte: lines past the bound are dropped, not waited for, and
    /// counted when the output moves again.
    #[test]
    fn a_stuck_output_drops_lines_past_the_bound_and_says_how_many() {
        let gate = Arc::new(Mutex::new(()));
        struct Stuck(Arc<Mutex<()>>, Captured);
        impl Write for Stuck {
            fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
                let _open = self.0.lock().unwrap();
                self.1.write(bytes)
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let out = Captured::default();
        let held = gate.lock().unwrap();
        let (writer, guard) = batched(Stuck(Arc::clone(&gate), out.clone())).unwrap();
        let line = vec![b'x'; 1024];
        let lines = MAX_BUFFERED_BYTES / 1024 * 3;
        for _ in 0..lines {
            // Never blocks, however stuck the output is.
            writer.make_writer().write_all(&line).unwrap();
        }
        drop(held);
        drop(guard);
        let text = out.text();
        let written = text.bytes().filter(|b| *b == b'x').count() / 1024;
        let note = text
            .lines()
            .find(|l| l.contains("log lines dropped"))
            .expect("the drop is reported");
        let dropped: usize = note
            .split_whitespace()
            .nth(1)
            .and_then(|n| n.parse().ok())
            .unwrap();
        assert!(
            dropped > 0 && written < lines,
            "{written} written, {dropped} dropped"
        );
        assert_eq!(written + dropped, lines);
    }
}
