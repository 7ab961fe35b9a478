//! One `tidelogd` child process: start it on port 0 and learn its address from its log, kill it
//! with SIGKILL (a crash), stop it with SIGTERM (a clean shutdown) and start it again on the same
//! data directory.

use std::io::{BufRead, BufReader, Read};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use crate::binaries::binaries;
use crate::wait::try_poll_until;

/// The line `tidelogd` logs at INFO once it accepts connections.
pub const STARTED_MESSAGE: &str = "tidelog broker started";
/// Longest a start (including recovery of the data directory) may take in a debug build.
pub const START_TIMEOUT: Duration = Duration::from_secs(60);
/// Longest a graceful shutdown may take.
pub const STOP_TIMEOUT: Duration = Duration::from_secs(30);
/// Log text kept per broker process for failure messages; older lines are dropped past it.
const LOG_BYTES_MAX: usize = 1 << 20;
/// Log text printed when a test fails while a broker is in scope.
const FAILURE_LOG_BYTES: usize = 16 << 10;

/// A running (or stopped) `tidelogd`. Dropping it SIGKILLs a process still running.
#[derive(Debug)]
pub struct BrokerProcess {
    data_dir: PathBuf,
    args: Vec<String>,
    /// A command the broker runs under, e.g. `prlimit --nofile=256:256 --`; empty: none.
    launcher: Vec<String>,
    child: Option<Child>,
    addr: SocketAddr,
    /// The Kafka listener's address, when it is on.
    kafka_addr: Option<SocketAddr>,
    log: Arc<Mutex<LogText>>,
    log_reader: Option<JoinHandle<()>>,
    /// Logs of earlier processes on this data directory, for failure messages.
    earlier_logs: String,
    last_exit: Option<ExitStatus>,
}

impl BrokerProcess {
    /// Starts `tidelogd --data-dir DATA_DIR --listen 127.0.0.1:0 --kafka-listen 127.0.0.1:0
    /// EXTRA_ARGS...` (the Kafka listener only unless EXTRA_ARGS names `--kafka-listen`, e.g.
    /// `none`) and waits until it logs that it accepts connections. Panics (with the broker's log) if it exits instead or
    /// does not come up within [`START_TIMEOUT`].
    pub fn start(data_dir: &Path, extra_args: &[&str]) -> Self {
        Self::start_under(&[], data_dir, extra_args)
    }

    /// Like [`start`](Self::start), but runs `LAUNCHER... tidelogd ...`: a command that sets
    /// something up and execs the broker, such as `prlimit --nofile=256:256 --`. It must exec
    /// (not fork), so the process signalled and waited for is the broker itself. Restarts use
    /// it too.
    pub fn start_under(launcher: &[&str], data_dir: &Path, extra_args: &[&str]) -> Self {
        let mut broker = Self {
            data_dir: data_dir.to_path_buf(),
            args: extra_args.iter().map(|arg| arg.to_string()).collect(),
            launcher: launcher.iter().map(|arg| arg.to_string()).collect(),
            child: None,
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            kafka_addr: None,
            log: Arc::default(),
            log_reader: None,
            earlier_logs: String::new(),
            last_exit: None,
        };
        broker.spawn();
        broker
    }

    /// Starts a new process on the same data directory with the same arguments. The previous
    /// one must have been stopped ([`kill9`](Self::kill9) or
    /// [`terminate_and_wait`](Self::terminate_and_wait)). The port changes.
    pub fn restart(&mut self) {
        assert!(
            self.child.is_none(),
            "restart() of a broker that is still running"
        );
        let previous = self.log_text();
        self.earlier_logs.push_str(&previous);
        self.earlier_logs.push_str("---- restart ----\n");
        if self.earlier_logs.len() > LOG_BYTES_MAX {
            let cut = self.earlier_logs.len() - LOG_BYTES_MAX;
            let cut = (cut..self.earlier_logs.len())
                .find(|at| self.earlier_logs.is_char_boundary(*at))
                .unwrap_or(0);
            self.earlier_logs.drain(..cut);
        }
        self.log = Arc::default();
        self.spawn();
    }

    fn spawn(&mut self) {
        let mut command = match self.launcher.split_first() {
            None => Command::new(&binaries().broker),
            Some((program, args)) => {
                let mut command = Command::new(program);
                command.args(args).arg(&binaries().broker);
                command
            }
        };
        command
            .arg("--data-dir")
            .arg(&self.data_dir)
            .args(["--listen", "127.0.0.1:0"]);
        // Never Kafka's default port: tests run many brokers at once.
        if !self.args.iter().any(|arg| arg.starts_with("--kafka-listen")) {
            command.args(["--kafka-listen", "127.0.0.1:0"]);
        }
        command
            .args(&self.args)
            .env("RUST_LOG", "info")
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        // The broker reads TIDELOG_* settings from its environment: start from none of ours.
        for (name, _) in std::env::vars_os() {
            if name.to_string_lossy().starts_with("TIDELOG_") {
                command.env_remove(name);
            }
        }
        let mut child = command
            .spawn()
            .unwrap_or_else(|error| panic!("spawning {}: {error}", binaries().broker.display()));
        let stderr = child.stderr.take().expect("stderr is piped");
        let (address_sender, address) = mpsc::channel();
        let log = self.log.clone();
        self.log_reader = Some(std::thread::spawn(move || {
            drain_log(stderr, &log, &address_sender)
        }));
        self.child = Some(child);
        self.last_exit = None;
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            match address.recv_timeout(Duration::from_millis(20)) {
                Ok((addr, kafka_addr)) => {
                    self.addr = addr;
                    self.kafka_addr = kafka_addr;
                    return;
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    if let Some(status) = self.child_mut().try_wait().expect("polling tidelogd") {
                        self.reap(status);
                        panic!(
                            "tidelogd exited with {status} before it accepted connections:\n{}",
                            self.logs()
                        );
                    }
                    if Instant::now() >= deadline {
                        panic!(
                            "tidelogd did not log {STARTED_MESSAGE:?} within {START_TIMEOUT:?}:\n{}",
                            self.logs()
                        );
                    }
                }
                // The log ended: the process is exiting. Wait for it to say how.
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    let status = self.wait_for_exit(STOP_TIMEOUT);
                    panic!(
                        "tidelogd exited with {status:?} before it accepted connections:\n{}",
                        self.logs()
                    );
                }
            }
        }
    }

    /// The address the broker listens on.
    pub fn addr(&self) -> SocketAddr {
        assert!(self.child.is_some(), "addr() of a stopped broker");
        self.addr
    }

    /// The Kafka listener's address. Panics if the broker runs without one
    /// (`--kafka-listen none`).
    pub fn kafka_addr(&self) -> SocketAddr {
        assert!(self.child.is_some(), "kafka_addr() of a stopped broker");
        self.kafka_addr
            .expect("the broker runs without a Kafka listener (--kafka-listen none)")
    }

    /// [`start`](Self::start) with the Kafka listener on a free port of 127.0.0.1, said
    /// explicitly for the tests that need it.
    pub fn start_with_kafka(data_dir: &Path, extra_args: &[&str]) -> Self {
        let mut args = vec!["--kafka-listen", "127.0.0.1:0"];
        args.extend_from_slice(extra_args);
        Self::start(data_dir, &args)
    }

    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    pub fn pid(&self) -> Pid {
        Pid::from_raw(self.child.as_ref().expect("broker is running").id() as i32)
    }

    /// Whether the process is still running (it has not exited on its own).
    pub fn is_alive(&mut self) -> bool {
        match &mut self.child {
            None => false,
            Some(child) => match child.try_wait().expect("polling tidelogd") {
                None => true,
                Some(status) => {
                    self.reap(status);
                    false
                }
            },
        }
    }

    /// Panics (with the log) unless the broker is still running.
    pub fn assert_alive(&mut self, after: &str) {
        if !self.is_alive() {
            panic!(
                "tidelogd died after {after}: {:?}\n{}",
                self.last_exit,
                self.logs()
            );
        }
    }

    /// Crashes the broker: SIGKILL, then reap it. Panics if it had already exited on its own,
    /// which would be a crash of its own making.
    pub fn kill9(&mut self) {
        if let Some(status) = self.child_mut().try_wait().expect("polling tidelogd") {
            self.reap(status);
            panic!(
                "tidelogd had exited on its own ({status}) before the SIGKILL:\n{}",
                self.logs()
            );
        }
        kill(self.pid(), Signal::SIGKILL).expect("sending SIGKILL to tidelogd");
        let status = self.child_mut().wait().expect("reaping tidelogd");
        self.reap(status);
    }

    /// Sends SIGTERM and waits up to [`STOP_TIMEOUT`] for the process to exit; returns its exit
    /// status. Panics (after a SIGKILL) if it does not exit in time.
    pub fn terminate_and_wait(&mut self) -> ExitStatus {
        self.signal_and_wait(Signal::SIGTERM)
    }

    /// Sends `signal` and waits up to [`STOP_TIMEOUT`] for the process to exit; returns its
    /// exit status. Panics (after a SIGKILL) if it does not exit in time.
    pub fn signal_and_wait(&mut self, signal: Signal) -> ExitStatus {
        kill(self.pid(), signal).unwrap_or_else(|error| panic!("sending {signal} to tidelogd: {error}"));
        match self.wait_for_exit(STOP_TIMEOUT) {
            Some(status) => status,
            None => {
                let _ = kill(self.pid(), Signal::SIGKILL);
                let status = self.child_mut().wait().expect("reaping tidelogd");
                self.reap(status);
                panic!(
                    "tidelogd did not exit within {STOP_TIMEOUT:?} of SIGTERM:\n{}",
                    self.logs()
                );
            }
        }
    }

    fn wait_for_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let child = self.child.as_mut()?;
        let status = try_poll_until(timeout, || child.try_wait().expect("polling tidelogd"))?;
        self.reap(status);
        Some(status)
    }

    fn child_mut(&mut self) -> &mut Child {
        self.child.as_mut().expect("broker is running")
    }

    /// Forgets an exited child and collects the rest of its log.
    fn reap(&mut self, status: ExitStatus) {
        self.child = None;
        self.last_exit = Some(status);
        if let Some(reader) = self.log_reader.take() {
            // The pipe is closed now that the process is gone, so the reader ends promptly.
            let _ = reader.join();
        }
    }

    /// The exit status of the last process, once it has exited.
    pub fn last_exit(&self) -> Option<ExitStatus> {
        self.last_exit
    }

    /// Everything the current (or last) process logged, ANSI colours removed.
    pub fn log_text(&self) -> String {
        self.log.lock().expect("log lock").text()
    }

    /// Logs of this process and earlier ones on the same data directory, for failure messages.
    pub fn logs(&self) -> String {
        format!("{}{}", self.earlier_logs, self.log_text())
    }
}

impl Drop for BrokerProcess {
    fn drop(&mut self) {
        if std::thread::panicking() {
            let logs = self.logs();
            let tail_start = logs.len().saturating_sub(FAILURE_LOG_BYTES);
            let tail_start = (tail_start..logs.len())
                .find(|at| logs.is_char_boundary(*at))
                .unwrap_or(0);
            eprintln!(
                "---- tidelogd log ({}; last {} bytes) ----\n{}",
                self.data_dir.display(),
                logs.len() - tail_start,
                &logs[tail_start..]
            );
        }
        if let Some(child) = &mut self.child {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Log lines of one process, bounded to [`LOG_BYTES_MAX`].
#[derive(Debug, Default)]
struct LogText {
    lines: std::collections::VecDeque<String>,
    bytes: usize,
}

impl LogText {
    fn push(&mut self, line: String) {
        self.bytes += line.len() + 1;
        self.lines.push_back(line);
        while self.bytes > LOG_BYTES_MAX {
            let Some(old) = self.lines.pop_front() else { break };
            self.bytes -= old.len() + 1;
        }
    }

    fn text(&self) -> String {
        let mut text = String::with_capacity(self.bytes);
        for line in &self.lines {
            text.push_str(line);
            text.push('\n');
        }
        text
    }
}

/// Reads the broker's stderr to its end, so the child never blocks on a full pipe; reports the
/// listen addresses (native, and Kafka's when it is on) from the start line.
fn drain_log(
    stderr: impl Read,
    log: &Mutex<LogText>,
    address: &mpsc::Sender<(SocketAddr, Option<SocketAddr>)>,
) {
    let mut reader = BufReader::new(stderr);
    let mut raw = Vec::new();
    loop {
        raw.clear();
        match reader.read_until(b'\n', &mut raw) {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
        let line = strip_ansi(&String::from_utf8_lossy(&raw));
        let line = line.trim_end().to_owned();
        if line.contains(STARTED_MESSAGE) {
            if let Some(addr) = parse_listen(&line) {
                let _ = address.send((addr, parse_kafka_listen(&line)));
            }
        }
        log.lock().expect("log lock").push(line);
    }
}

/// The `listen=IP:PORT` field of a log line.
pub fn parse_listen(line: &str) -> Option<SocketAddr> {
    line.split_whitespace()
        .find_map(|field| field.strip_prefix("listen="))
        .and_then(|value| value.trim_matches(|c| c == '"' || c == ',').parse().ok())
}

/// The `kafka_listen=IP:PORT` field of a log line (`None` also for `kafka_listen=none`).
pub fn parse_kafka_listen(line: &str) -> Option<SocketAddr> {
    line.split_whitespace()
        .find_map(|field| field.strip_prefix("kafka_listen="))
        .and_then(|value| value.trim_matches(|c| c == '"' || c == ',').parse().ok())
}

/// Removes ANSI escape sequences (`ESC [ ... letter`), in case the logger colours its output.
pub fn strip_ansi(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            if chars.next() == Some('[') {
                for c in chars.by_ref() {
                    if c.is_ascii_alphabetic() {
                        break;
                    }
                }
            }
            continue;
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listen_address_is_parsed_from_a_coloured_log_line() {
        let line = "2025-01-01T00:00:00Z \u{1b}[32m INFO\u{1b}[0m \u{1b}[1mtidelog broker started\u{1b}[0m \
                    \u{1b}[3mlisten\u{1b}[0m\u{1b}[2m=\u{1b}[0m127.0.0.1:45678 \u{1b}[3mflush\u{1b}[0m=always";
        assert_eq!(
            parse_listen(&strip_ansi(line)),
            Some("127.0.0.1:45678".parse().unwrap())
        );
        assert_eq!(parse_listen("INFO tidelog broker started data_dir=/x"), None);
        let line = "INFO tidelog broker started listen=127.0.0.1:1 kafka_listen=127.0.0.1:2 flush=always";
        assert_eq!(parse_listen(line), Some("127.0.0.1:1".parse().unwrap()));
        assert_eq!(parse_kafka_listen(line), Some("127.0.0.1:2".parse().unwrap()));
        assert_eq!(
            parse_kafka_listen("INFO tidelog broker started listen=127.0.0.1:1 kafka_listen=none"),
            None
        );
    }
}
