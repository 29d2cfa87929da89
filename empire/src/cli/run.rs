//! `empire run`: a one-off process attached to this terminal through the API's upgrade
//! protocol (`POST /apps/{app}/dynos` with `"attach": true` and `Upgrade: tcp` → `101`,
//! then the connection is the process's stdin and output), ending with the line
//! `\u{FFFF} heroku-command-exit-status: <code>` whose code becomes ours.

use std::io::{IsTerminal, Read, Write};

use anyhow::{Context, Result, anyhow, bail};
use hyper::{Method, StatusCode};
use hyper_util::rt::TokioIo;
use nix::sys::termios::{self, LocalFlags, SetArg, Termios};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;

use super::client::{ApiClient, ApiFailure, Call, segment};

/// What precedes the exit status at the end of an attached run.
pub const EXIT_MARKER: &str = "\u{FFFF} heroku-command-exit-status: ";

/// The command line to run from the words after `--`: one word is taken as a shell
/// command line as it is (`"echo hi; exit 3"`); several are quoted for the shell
/// one by one (`sh -c 'echo hi; exit 3'`), so they arrive as the words given.
pub fn command_line(words: &[String]) -> String {
    match words {
        [one] => one.clone(),
        words => words
            .iter()
            .map(|w| shell_quote(w))
            .collect::<Vec<_>>()
            .join(" "),
    }
}

fn shell_quote(word: &str) -> String {
    let plain = !word.is_empty()
        && word
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_./=:,+@%^".contains(&b));
    if plain {
        word.to_string()
    } else {
        format!("'{}'", word.replace('\'', r"'\''"))
    }
}

/// Runs `command` attached and answers its exit code. `tty` asks for a terminal on the
/// other side and puts this one in raw mode for the time of the run.
pub async fn attached(
    client: &ApiClient,
    app: &str,
    command: &str,
    size: Option<&str>,
    tty: bool,
) -> Result<i32> {
    let path = format!("/apps/{}/dynos", segment(app));
    let mut body = json!({ "command": command, "attach": true, "tty": tty });
    if let Some(size) = size {
        body["size"] = json!(size);
    }
    eprint!("Running `{command}` on {app}... ");
    let _ = std::io::stderr().flush();
    let response = client
        .send(Call::new(Method::POST, &path).json(body).upgrade())
        .await;
    let response = match response {
        Ok(r) if r.status() == StatusCode::SWITCHING_PROTOCOLS => r,
        Ok(r) => {
            eprintln!("failed");
            return Err(ApiFailure::from_response(r).await.into());
        }
        Err(err) => {
            eprintln!("failed");
            return Err(err);
        }
    };
    eprintln!("up");
    if let Some(warning) = response
        .headers()
        .get("x-heroku-warning")
        .and_then(|v| v.to_str().ok())
    {
        eprintln!(" !     {warning}");
    }
    let upgraded = hyper::upgrade::on(response)
        .await
        .context("switching the connection over to the process")?;
    let (mut from_process, mut to_process) = tokio::io::split(TokioIo::new(upgraded));

    let raw = if tty { Some(RawMode::enable()?) } else { None };

    // Stdin: a thread reads it (a blocked read must not hold up the end), a task writes
    // it to the process; the end of stdin half-closes the connection.
    let (input_tx, mut input_rx) = mpsc::channel::<Vec<u8>>(16);
    std::thread::spawn(move || {
        let mut stdin = std::io::stdin().lock();
        let mut buf = [0u8; 8192];
        loop {
            match stdin.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if input_tx.blocking_send(buf[..n].to_vec()).is_err() {
                        break;
                    }
                }
            }
        }
    });
    let input = tokio::spawn(async move {
        while let Some(chunk) = input_rx.recv().await {
            if to_process.write_all(&chunk).await.is_err() {
                return;
            }
        }
        let _ = to_process.shutdown().await;
    });

    let mut filter = ExitStatusFilter::default();
    let mut stdout = std::io::stdout();
    let mut buf = vec![0u8; 16 * 1024];
    let read_result = loop {
        match from_process.read(&mut buf).await {
            Ok(0) => break Ok(()),
            Ok(n) => {
                let shown = filter.push(&buf[..n]);
                if !shown.is_empty() {
                    stdout.write_all(&shown)?;
                    stdout.flush()?;
                }
            }
            Err(err) => break Err(err),
        }
    };
    input.abort();
    let (rest, code) = filter.finish();
    stdout.write_all(&rest)?;
    stdout.flush()?;
    drop(raw);
    read_result.context("the connection to the process broke off")?;
    match code {
        Some(code) => Ok(code),
        None => bail!("the process ended without an exit status (see above)"),
    }
}

/// Starts `command` detached and prints where it runs.
pub async fn detached(
    client: &ApiClient,
    app: &str,
    command: &str,
    size: Option<&str>,
    json_output: bool,
) -> Result<()> {
    let path = format!("/apps/{}/dynos", segment(app));
    let mut body = json!({ "command": command, "attach": false });
    if let Some(size) = size {
        body["size"] = json!(size);
    }
    if json_output {
        let dyno = client.post(&path, body).await?;
        super::output::json(&dyno);
        return Ok(());
    }
    eprint!("Running `{command}` on {app}... ");
    let _ = std::io::stderr().flush();
    let dyno = match client.post(&path, body).await {
        Ok(dyno) => dyno,
        Err(err) => {
            eprintln!("failed");
            return Err(err);
        }
    };
    let name = super::output::text(&dyno, "name");
    eprintln!("done, {name}");
    outln!("Run `empire logs -a {app} --process {name}` to see its output.");
    Ok(())
}

/// Whether a run should get a terminal: stdin is one.
pub fn wants_tty() -> bool {
    std::io::stdin().is_terminal()
}

/// Splits the exit status line off the end of the output.
#[derive(Debug, Default)]
pub struct ExitStatusFilter {
    /// Output not shown yet: it may be the start of the marker.
    held: Vec<u8>,
    /// What came after the marker.
    status: Option<Vec<u8>>,
}

impl ExitStatusFilter {
    /// Takes the next bytes; answers those to show now.
    pub fn push(&mut self, bytes: &[u8]) -> Vec<u8> {
        if let Some(status) = &mut self.status {
            status.extend_from_slice(bytes);
            return Vec::new();
        }
        self.held.extend_from_slice(bytes);
        let marker = EXIT_MARKER.as_bytes();
        if let Some(at) = find(&self.held, marker) {
            let status = self.held.split_off(at + marker.len());
            self.held.truncate(at);
            self.status = Some(status);
            return std::mem::take(&mut self.held);
        }
        // Keep back the longest tail that could start the marker.
        let keep = (1..marker.len().min(self.held.len() + 1))
            .rev()
            .find(|&n| self.held.ends_with(&marker[..n]))
            .unwrap_or(0);
        let show = self.held.len() - keep;
        let rest = self.held.split_off(show);
        std::mem::replace(&mut self.held, rest)
    }

    /// The end of the output: what is left to show and the exit status, if one came.
    pub fn finish(self) -> (Vec<u8>, Option<i32>) {
        match self.status {
            Some(status) => {
                let text = String::from_utf8_lossy(&status);
                let code = text.lines().next().and_then(|l| l.trim().parse().ok());
                (self.held, code)
            }
            None => (self.held, None),
        }
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// The terminal in raw mode; dropping it restores the settings it found.
pub struct RawMode {
    original: Termios,
}

impl RawMode {
    /// Puts the terminal on stdin in raw mode.
    pub fn enable() -> Result<RawMode> {
        let stdin = std::io::stdin();
        let original = termios::tcgetattr(&stdin)
            .map_err(|e| anyhow!("reading the terminal settings: {e}"))?;
        let mut raw = original.clone();
        termios::cfmakeraw(&mut raw);
        termios::tcsetattr(&stdin, SetArg::TCSADRAIN, &raw)
            .map_err(|e| anyhow!("putting the terminal in raw mode: {e}"))?;
        Ok(RawMode { original })
    }
}

impl Drop for RawMode {
    fn drop(&mut self) {
        let _ = termios::tcsetattr(std::io::stdin(), SetArg::TCSADRAIN, &self.original);
    }
}

/// Reads one line from the terminal without echoing it (a token).
pub fn read_hidden_line() -> Result<String> {
    let stdin = std::io::stdin();
    let original =
        termios::tcgetattr(&stdin).map_err(|e| anyhow!("reading the terminal settings: {e}"))?;
    let mut quiet = original.clone();
    quiet.local_flags.remove(LocalFlags::ECHO);
    quiet.local_flags.insert(LocalFlags::ECHONL);
    termios::tcsetattr(&stdin, SetArg::TCSANOW, &quiet)
        .map_err(|e| anyhow!("turning off the echo: {e}"))?;
    let mut line = String::new();
    let read = stdin.read_line(&mut line);
    let _ = termios::tcsetattr(&stdin, SetArg::TCSANOW, &original);
    read.context("reading from the terminal")?;
    Ok(line.trim().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run_filter(chunks: &[&[u8]]) -> (Vec<u8>, Option<i32>) {
        let mut filter = ExitStatusFilter::default();
        let mut shown = Vec::new();
        for chunk in chunks {
            shown.extend(filter.push(chunk));
        }
        let (rest, code) = filter.finish();
        shown.extend(rest);
        (shown, code)
    }

    #[test]
    fn splits_off_the_exit_status() {
        let whole = format!("hi\nthere\n{EXIT_MARKER}3\n");
        assert_eq!(
            run_filter(&[whole.as_bytes()]),
            (b"hi\nthere\n".to_vec(), Some(3))
        );
        // One byte at a time: nothing of the marker leaks out.
        let bytes: Vec<&[u8]> = whole.as_bytes().chunks(1).collect();
        assert_eq!(run_filter(&bytes), (b"hi\nthere\n".to_vec(), Some(3)));
        // No status line: everything shows, no code.
        assert_eq!(
            run_filter(&[b"error: boom\r\n"]),
            (b"error: boom\r\n".to_vec(), None)
        );
        // A byte that starts the marker but is not one is shown in the end.
        let text = "price \u{FFFF}!\n".to_string();
        assert_eq!(
            run_filter(&[text.as_bytes()]),
            (text.as_bytes().to_vec(), None)
        );
        let split = format!("{EXIT_MARKER}0\n");
        let (a, b) = split.as_bytes().split_at(5);
        assert_eq!(run_filter(&[b"ok\n", a, b]), (b"ok\n".to_vec(), Some(0)));
    }

    #[test]
    fn quotes_words_for_the_shell() {
        let words = |w: &[&str]| w.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(
            command_line(&words(&["sh", "-c", "echo hi; exit 3"])),
            "sh -c 'echo hi; exit 3'"
        );
        assert_eq!(
            command_line(&words(&["echo hi; exit 3"])),
            "echo hi; exit 3"
        );
        assert_eq!(command_line(&words(&["echo", "it's"])), r"echo 'it'\''s'");
        assert_eq!(command_line(&words(&["ls", "-la", "/app"])), "ls -la /app");
        assert_eq!(command_line(&words(&["printf", ""])), "printf ''");
    }
}
