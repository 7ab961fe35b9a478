//! Shared helpers for the client's end-to-end tests: an in-process broker on 127.0.0.1:0 in a
//! temporary directory, a client connected to it, and a runner for the `tidelog` binary.

#![allow(dead_code)]

use std::io::Write;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use tidelog_broker::{Broker, BrokerConfig, BrokerHandle};
use tidelog_client::{Client, ClientConfig};

/// Longest any single CLI invocation may take before the test fails.
pub const CLI_TIMEOUT: Duration = Duration::from_secs(60);

#[derive(Debug)]
pub struct TestBroker {
    pub handle: Option<BrokerHandle>,
    pub addr: String,
    _dir: tempfile::TempDir,
}

impl TestBroker {
    pub async fn start() -> TestBroker {
        Self::start_with(|_| {}).await
    }

    /// A broker whose config `adjust` may change first (data dir and address are set).
    pub async fn start_with(adjust: impl FnOnce(&mut BrokerConfig)) -> TestBroker {
        let dir = tempfile::tempdir().expect("temporary directory");
        let mut config = BrokerConfig {
            data_dir: dir.path().join("data"),
            listen: "127.0.0.1:0".parse().expect("literal address"),
            ..BrokerConfig::default()
        };
        // Never Kafka's default port: tests run many brokers at once.
        config.kafka.listen = Some("127.0.0.1:0".parse().expect("literal address"));
        adjust(&mut config);
        let handle = Broker::start(config).await.expect("broker starts");
        let addr = handle.local_addr().to_string();
        TestBroker {
            handle: Some(handle),
            addr,
            _dir: dir,
        }
    }

    pub async fn client(&self) -> Client {
        Client::connect(ClientConfig::new([self.addr.clone()]))
            .await
            .expect("client connects")
    }

    pub async fn stop(mut self) {
        if let Some(handle) = self.handle.take() {
            handle.shutdown().await.expect("clean shutdown");
        }
    }
}

/// Runs `tidelog` with `args` against nothing in particular (pass `--broker`), feeding
/// `stdin`; fails the test if it runs longer than [`CLI_TIMEOUT`]. Blocking: call it from
/// `spawn_blocking`.
pub fn run_cli(args: &[&str], stdin: &[u8]) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_tidelog"))
        .args(args)
        .env_remove("TIDELOG_BROKER")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("tidelog starts");
    let mut input = child.stdin.take().expect("stdin is piped");
    let data = stdin.to_vec();
    let writer = std::thread::spawn(move || {
        let _ = input.write_all(&data);
    });
    let deadline = Instant::now() + CLI_TIMEOUT;
    // Poll for exit with a bounded deadline: std has no wait-with-timeout.
    loop {
        match child.try_wait().expect("wait on tidelog") {
            Some(_) => break,
            None if Instant::now() >= deadline => {
                let _ = child.kill();
                panic!("tidelog {args:?} ran longer than {CLI_TIMEOUT:?}");
            }
            None => std::thread::sleep(Duration::from_millis(10)),
        }
    }
    let _ = writer.join();
    child.wait_with_output().expect("collect tidelog output")
}

/// [`run_cli`] off the async runtime.
pub async fn cli(args: &[&str], stdin: &[u8]) -> Output {
    let args: Vec<String> = args.iter().map(|a| (*a).to_owned()).collect();
    let stdin = stdin.to_vec();
    tokio::task::spawn_blocking(move || {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        run_cli(&args, &stdin)
    })
    .await
    .expect("CLI runner thread")
}

pub fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

pub fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}
