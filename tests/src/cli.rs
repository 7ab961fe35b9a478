//! Running the `tidelog` CLI: a whole run with a bounded timeout, or a streaming child whose
//! stdout lines arrive on a channel while it runs.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::Duration;

use crate::binaries::binaries;
use crate::wait::try_poll_until;

/// Longest one CLI run may take unless a test says otherwise.
pub const CLI_TIMEOUT: Duration = Duration::from_secs(60);

/// What a finished CLI run printed.
#[derive(Debug)]
pub struct CliOutput {
    pub args: Vec<String>,
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

impl CliOutput {
    /// Panics with everything printed unless the run exited 0.
    pub fn assert_success(&self) -> &Self {
        assert!(
            self.status.success(),
            "`tidelog {}` failed:\n{self}",
            self.args.join(" ")
        );
        self
    }

    /// Panics unless the run failed with a non-zero exit and exactly one non-empty line on
    /// stderr (the CLI's error contract); returns that line.
    pub fn assert_one_line_error(&self) -> String {
        assert!(
            !self.status.success() && self.status.code().is_some(),
            "`tidelog {}` should exit non-zero:\n{self}",
            self.args.join(" ")
        );
        let lines: Vec<&str> = self
            .stderr
            .lines()
            .filter(|line| !line.trim().is_empty())
            .collect();
        assert_eq!(
            lines.len(),
            1,
            "`tidelog {}` should print exactly one error line on stderr:\n{self}",
            self.args.join(" ")
        );
        lines[0].to_owned()
    }

    pub fn stdout_lines(&self) -> Vec<&str> {
        self.stdout.lines().collect()
    }
}

impl std::fmt::Display for CliOutput {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "status: {}\n--- stdout ---\n{}\n--- stderr ---\n{}",
            self.status, self.stdout, self.stderr
        )
    }
}

fn command(broker: Option<SocketAddr>, args: &[&str]) -> Command {
    let mut command = Command::new(&binaries().cli);
    if let Some(addr) = broker {
        command.arg("--broker").arg(addr.to_string());
    }
    command.args(args).env("NO_COLOR", "1").env_remove("RUST_LOG");
    for (name, _) in std::env::vars_os() {
        if name.to_string_lossy().starts_with("TIDELOG_") {
            command.env_remove(name);
        }
    }
    command
}

/// Runs `tidelog [--broker ADDR] ARGS...` with `stdin` as its input; waits at most
/// [`CLI_TIMEOUT`].
pub fn run_cli(broker: Option<SocketAddr>, args: &[&str], stdin: &[u8]) -> CliOutput {
    run_cli_with_timeout(broker, args, stdin, CLI_TIMEOUT)
}

/// Like [`run_cli`] with an explicit timeout; panics (after killing the CLI) past it.
pub fn run_cli_with_timeout(
    broker: Option<SocketAddr>,
    args: &[&str],
    stdin: &[u8],
    timeout: Duration,
) -> CliOutput {
    let mut child = command(broker, args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|error| panic!("spawning {}: {error}", binaries().cli.display()));
    let input = stdin.to_vec();
    let mut child_stdin = child.stdin.take().expect("stdin is piped");
    // Written from a thread so a CLI that prints before reading all its input cannot deadlock.
    let writer = std::thread::spawn(move || {
        let _ = child_stdin.write_all(&input);
    });
    let stdout = collect(child.stdout.take().expect("stdout is piped"));
    let stderr = collect(child.stderr.take().expect("stderr is piped"));
    let status = try_poll_until(timeout, || child.try_wait().expect("polling tidelog"));
    let Some(status) = status else {
        let _ = child.kill();
        let _ = child.wait();
        panic!(
            "`tidelog {}` did not finish within {timeout:?}\n--- stdout ---\n{}\n--- stderr ---\n{}",
            args.join(" "),
            stdout.join().unwrap_or_default(),
            stderr.join().unwrap_or_default()
        );
    };
    let _ = writer.join();
    CliOutput {
        args: args.iter().map(|arg| arg.to_string()).collect(),
        status,
        stdout: stdout.join().unwrap_or_default(),
        stderr: stderr.join().unwrap_or_default(),
    }
}

fn collect(mut pipe: impl Read + Send + 'static) -> JoinHandle<String> {
    std::thread::spawn(move || {
        let mut bytes = Vec::new();
        let _ = pipe.read_to_end(&mut bytes);
        String::from_utf8_lossy(&bytes).into_owned()
    })
}

/// A running CLI whose stdout lines arrive on a channel as they are printed; the test writes
/// its stdin line by line.
#[derive(Debug)]
pub struct StreamingCli {
    child: Child,
    stdin: Option<ChildStdin>,
    pub lines: mpsc::Receiver<String>,
    stdout_reader: Option<JoinHandle<()>>,
    stderr_reader: Option<JoinHandle<String>>,
}

impl StreamingCli {
    pub fn spawn(broker: SocketAddr, args: &[&str]) -> Self {
        let mut child = command(Some(broker), args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|error| panic!("spawning {}: {error}", binaries().cli.display()));
        let stdin = child.stdin.take();
        let stdout = child.stdout.take().expect("stdout is piped");
        let (sender, lines) = mpsc::channel();
        let stdout_reader = std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { return };
                if sender.send(line).is_err() {
                    return;
                }
            }
        });
        let stderr_reader = collect(child.stderr.take().expect("stderr is piped"));
        Self {
            child,
            stdin,
            lines,
            stdout_reader: Some(stdout_reader),
            stderr_reader: Some(stderr_reader),
        }
    }

    /// Writes to the CLI's stdin; `false` once the CLI stopped reading (it exited).
    pub fn write(&mut self, bytes: &[u8]) -> bool {
        match &mut self.stdin {
            Some(stdin) => stdin.write_all(bytes).and_then(|()| stdin.flush()).is_ok(),
            None => false,
        }
    }

    /// The CLI's process id, to signal it (SIGTERM, SIGINT).
    pub fn pid(&self) -> nix::unistd::Pid {
        // A child's pid fits in i32: Linux caps pids at 2^22.
        nix::unistd::Pid::from_raw(i32::try_from(self.child.id()).unwrap_or(i32::MAX))
    }

    /// Hands stdin over, e.g. to a writer thread.
    pub fn take_stdin(&mut self) -> Option<ChildStdin> {
        self.stdin.take()
    }

    /// Closes stdin: end of input.
    pub fn close_stdin(&mut self) {
        self.stdin = None;
    }

    /// Waits for the CLI to exit (killing it past `timeout`); returns its status and stderr.
    pub fn wait(mut self, timeout: Duration) -> (ExitStatus, String) {
        self.stdin = None;
        let status = try_poll_until(timeout, || self.child.try_wait().expect("polling tidelog"));
        let status = match status {
            Some(status) => status,
            None => {
                let _ = self.child.kill();
                let status = self.child.wait().expect("reaping tidelog");
                let stderr = self
                    .stderr_reader
                    .take()
                    .map(|reader| reader.join().unwrap_or_default());
                panic!("tidelog did not exit within {timeout:?} ({status}); stderr:\n{stderr:?}");
            }
        };
        let stderr = self
            .stderr_reader
            .take()
            .map(|reader| reader.join().unwrap_or_default())
            .unwrap_or_default();
        if let Some(reader) = self.stdout_reader.take() {
            let _ = reader.join();
        }
        (status, stderr)
    }
}

impl Drop for StreamingCli {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// An address on 127.0.0.1 where nothing listens (a port just released).
pub fn dead_address() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").expect("binding a throwaway port");
    listener.local_addr().expect("throwaway port's address")
}
