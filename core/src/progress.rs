//! Progress output in Heroku's style, written to whatever sink the deploy came from
//! (the git sideband, an HTTP stream, a build log).

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::mpsc;

/// Where progress lines go. Implementations must not block for long: they forward each
/// line as it comes, never buffering a whole log.
pub trait ProgressSink: Send + Sync {
    /// Writes one complete line (without its trailing newline).
    fn write_line(&self, line: &str);
}

/// A sink that drops everything, for deploys nobody watches.
#[derive(Debug, Default, Clone, Copy)]
pub struct NullSink;

impl ProgressSink for NullSink {
    fn write_line(&self, _line: &str) {}
}

/// A sink that forwards every line to several sinks.
pub struct TeeSink(pub Vec<Arc<dyn ProgressSink>>);

impl ProgressSink for TeeSink {
    fn write_line(&self, line: &str) {
        for sink in &self.0 {
            sink.write_line(line);
        }
    }
}

/// Copies progress lines to a slow destination (a log in the store) on a background
/// task, writing what arrived while the last write ran as one batch, so whoever prints
/// never waits for the destination.
pub struct BatchedLog {
    sender: mpsc::UnboundedSender<Option<String>>,
    task: tokio::task::JoinHandle<()>,
}

struct BatchSender(mpsc::UnboundedSender<Option<String>>);

impl ProgressSink for BatchSender {
    fn write_line(&self, line: &str) {
        let _ = self.0.send(Some(line.to_string()));
    }
}

impl BatchedLog {
    /// Starts the task; `write` gets each batch as newline-terminated lines.
    pub fn start<F, Fut>(mut write: F) -> Self
    where
        F: FnMut(String) -> Fut + Send + 'static,
        Fut: Future<Output = ()> + Send,
    {
        let (sender, mut receiver) = mpsc::unbounded_channel::<Option<String>>();
        let task = tokio::spawn(async move {
            let mut open = true;
            while open {
                let Some(first) = receiver.recv().await else {
                    break;
                };
                let mut text = String::new();
                let mut next = Some(first);
                while let Some(message) = next {
                    match message {
                        Some(line) => {
                            text.push_str(&line);
                            text.push('\n');
                        }
                        None => open = false,
                    }
                    next = if open { receiver.try_recv().ok() } else { None };
                }
                if !text.is_empty() {
                    write(text).await;
                }
            }
        });
        BatchedLog { sender, task }
    }

    /// A sink feeding this log.
    pub fn sink(&self) -> Arc<dyn ProgressSink> {
        Arc::new(BatchSender(self.sender.clone()))
    }

    /// Writes what was printed so far and stops; lines printed later are not written.
    pub async fn finish(self) {
        let _ = self.sender.send(None);
        let _ = self.task.await;
    }
}

/// Formats Heroku-style output onto a sink: `-----> ` steps, seven-space indented
/// detail, ` !     ` errors.
#[derive(Clone)]
pub struct Progress {
    sink: Arc<dyn ProgressSink>,
}

impl Progress {
    /// Wraps a sink.
    pub fn new(sink: Arc<dyn ProgressSink>) -> Self {
        Progress { sink }
    }

    /// A progress that writes to this one's sink and to `other`.
    pub fn tee(&self, other: Arc<dyn ProgressSink>) -> Progress {
        Progress::new(Arc::new(TeeSink(vec![self.sink.clone(), other])))
    }

    /// A progress that writes nowhere.
    pub fn null() -> Self {
        Progress::new(Arc::new(NullSink))
    }

    /// Starts a step: prints `-----> title` and returns a timer that prints the step's
    /// elapsed time when it is finished.
    pub fn step(&self, title: impl AsRef<str>) -> Step {
        self.sink.write_line(&format!("-----> {}", title.as_ref()));
        Step {
            progress: self.clone(),
            started: Instant::now(),
        }
    }

    /// Prints detail lines, each indented by seven spaces.
    pub fn detail(&self, text: impl AsRef<str>) {
        for line in text.as_ref().lines() {
            self.sink.write_line(&format!("       {line}"));
        }
    }

    /// Prints error lines, each prefixed with ` !     `.
    pub fn error(&self, text: impl AsRef<str>) {
        for line in text.as_ref().lines() {
            self.sink.write_line(&format!(" !     {line}"));
        }
    }

    /// Prints a line exactly as given.
    pub fn raw(&self, line: impl AsRef<str>) {
        self.sink.write_line(line.as_ref());
    }
}

/// A running step; [`Step::done`] prints how long it took.
pub struct Step {
    progress: Progress,
    started: Instant,
}

impl Step {
    /// Prints `       <what> in 1.2s` and returns the elapsed time.
    pub fn done(self, what: impl AsRef<str>) -> Duration {
        let elapsed = self.started.elapsed();
        self.progress
            .detail(format!("{} in {}", what.as_ref(), format_duration(elapsed)));
        elapsed
    }

    /// Time since the step started.
    pub fn elapsed(&self) -> Duration {
        self.started.elapsed()
    }
}

/// Formats a duration the way step timings are shown: `0.4s`, `12.3s`, `2m05s`.
pub fn format_duration(d: Duration) -> String {
    let secs = d.as_secs_f64();
    if secs < 60.0 {
        format!("{secs:.1}s")
    } else {
        let whole = d.as_secs();
        format!("{}m{:02}s", whole / 60, whole % 60)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    #[derive(Default)]
    struct Lines(Mutex<Vec<String>>);
    impl ProgressSink for Lines {
        fn write_line(&self, line: &str) {
            self.0.lock().unwrap().push(line.to_string());
        }
    }

    #[test]
    fn formats_heroku_style() {
        let lines = Arc::new(Lines::default());
        let progress = Progress::new(lines.clone());
        let step = progress.step("Building image");
        progress.detail("one\ntwo");
        progress.error("boom");
        step.done("Built");
        let got = lines.0.lock().unwrap().clone();
        assert_eq!(got[0], "-----> Building image");
        assert_eq!(got[1], "       one");
        assert_eq!(got[2], "       two");
        assert_eq!(got[3], " !     boom");
        assert!(got[4].starts_with("       Built in "), "{}", got[4]);
    }

    #[test]
    fn formats_durations() {
        assert_eq!(format_duration(Duration::from_millis(1234)), "1.2s");
        assert_eq!(format_duration(Duration::from_secs(125)), "2m05s");
    }
}
