//! The real Kafka clients (kafkajs, confluent-kafka, kafka-python, kcat): installing them once
//! per test process, and running one of their driver scripts under `tests/clients/` with a
//! bounded timeout, its stdout parsed as JSON lines.
//!
//! Installing is `tests/clients/install.sh KIND`, which holds a file lock (test binaries run
//! at once) and is a no-op when the pinned versions are already there. A client that cannot
//! be installed fails every test that needs it, with the installer's log: nothing is skipped.

use std::collections::BTreeMap;
use std::io::Read;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::OnceLock;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;
use serde_json::Value;

use crate::wait::try_poll_until;

/// Longest an install may take: a fresh machine runs `apt-get update`, `npm ci` and `pip`.
pub const INSTALL_TIMEOUT: Duration = Duration::from_secs(600);
/// Longest one driver-script run may take unless a test says otherwise: above the scripts'
/// own deadline ([`SCRIPT_WAIT_MS`]), so a script reports what it saw before it is killed.
pub const SCRIPT_TIMEOUT: Duration = Duration::from_secs(200);
/// The `--timeout-ms` the group and consume steps get: a group settling on a loaded 2-core
/// machine running the whole suite took more than a minute once.
pub const SCRIPT_WAIT_MS: &str = "150000";

/// One installable client family (one installer step).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum ClientKind {
    /// kafkajs under Node.js.
    Node,
    /// A venv with confluent-kafka (librdkafka inside) and kafka-python.
    Python,
    /// Debian's kcat.
    Kcat,
}

impl ClientKind {
    fn installer_argument(self) -> &'static str {
        match self {
            ClientKind::Node => "node",
            ClientKind::Python => "python",
            ClientKind::Kcat => "kcat",
        }
    }
}

/// Where the installed clients and their driver scripts are.
#[derive(Debug, Clone)]
pub struct ClientPaths {
    /// `tests/clients/`.
    pub scripts: PathBuf,
    /// `tests/clients/node/` (its `node_modules/` holds kafkajs).
    pub node_dir: PathBuf,
    /// The venv's Python interpreter.
    pub python: PathBuf,
    /// The `kcat` executable.
    pub kcat: PathBuf,
}

fn workspace() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ sits in the workspace")
}

/// `<target>/kafka-clients`: the venv, the installer's lock and its log. The target directory
/// is found the way [`crate::binaries`] finds it, from this test executable's path.
fn state_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("path of the test executable");
    let mut dir = exe.parent().expect("test executable has a directory");
    // target/<profile>/deps/<test>-<hash>: two levels up is the target directory.
    if dir.file_name().is_some_and(|name| name == "deps") {
        dir = dir.parent().expect("deps has a parent");
    }
    dir.parent()
        .map(|target| target.join("kafka-clients"))
        .unwrap_or_else(|| workspace().join("target").join("kafka-clients"))
}

/// Installs `kind` (once per test process; later calls return the first result) and returns
/// where everything is. Panics with the installer's message and log tail if it failed.
pub fn ensure_installed(kind: ClientKind) -> ClientPaths {
    static NODE: OnceLock<Result<ClientPaths, String>> = OnceLock::new();
    static PYTHON: OnceLock<Result<ClientPaths, String>> = OnceLock::new();
    static KCAT: OnceLock<Result<ClientPaths, String>> = OnceLock::new();
    let cell = match kind {
        ClientKind::Node => &NODE,
        ClientKind::Python => &PYTHON,
        ClientKind::Kcat => &KCAT,
    };
    match cell.get_or_init(|| install(kind)) {
        Ok(paths) => paths.clone(),
        Err(message) => panic!("{message}"),
    }
}

fn install(kind: ClientKind) -> Result<ClientPaths, String> {
    let scripts = workspace().join("tests").join("clients");
    let installer = scripts.join("install.sh");
    let state = state_dir();
    let started = Instant::now();
    let mut command = Command::new("bash");
    command
        .arg(&installer)
        .arg("--print-paths")
        .arg(kind.installer_argument())
        .env("TIDELOG_CLIENTS_DIR", &state);
    let run = run_bounded(command, INSTALL_TIMEOUT)
        .map_err(|error| format!("running {}: {error}", installer.display()))?;
    if !run.status.is_some_and(|status| status.success()) {
        return Err(format!(
            "installing the {kind:?} Kafka client failed ({}; `bash {} {}` reproduces it; \
             its full log is {}):\n{}",
            run.describe_status(),
            installer.display(),
            kind.installer_argument(),
            state.join("install.log").display(),
            run.stderr
        ));
    }
    let fields: BTreeMap<&str, &str> = run
        .stdout
        .lines()
        .filter_map(|line| line.split_once('='))
        .collect();
    let field = |name: &str| -> Result<PathBuf, String> {
        fields
            .get(name)
            .filter(|value| !value.is_empty())
            .map(PathBuf::from)
            .ok_or_else(|| format!("the installer printed no {name}=... line:\n{}", run.stdout))
    };
    let paths = ClientPaths {
        scripts,
        node_dir: field("node_dir")?,
        python: field("python")?,
        kcat: if kind == ClientKind::Kcat {
            field("kcat")?
        } else {
            PathBuf::from("kcat")
        },
    };
    let took = started.elapsed();
    if took > Duration::from_secs(5) {
        eprintln!("installed the {kind:?} Kafka client in {took:?}");
    }
    Ok(paths)
}

/// What a finished (or timed-out) child printed.
#[derive(Debug)]
pub struct ScriptRun {
    pub program: String,
    pub args: Vec<String>,
    /// `None`: killed at the timeout.
    pub status: Option<ExitStatus>,
    pub stdout: String,
    pub stderr: String,
    pub took: Duration,
}

impl ScriptRun {
    fn describe_status(&self) -> String {
        match self.status {
            Some(status) => status.to_string(),
            None => format!("killed after {:?} without finishing", self.took),
        }
    }

    /// Panics with everything printed unless the run exited 0.
    pub fn assert_success(&self) -> &Self {
        assert!(
            self.status.is_some_and(|status| status.success()),
            "`{} {}` failed ({}):\n{self}",
            self.program,
            self.args.join(" "),
            self.describe_status()
        );
        self
    }

    /// Every stdout line that is a JSON object, in order; other lines (a client's own chatter)
    /// are left out.
    pub fn events(&self) -> Vec<Value> {
        self.stdout
            .lines()
            .filter(|line| line.trim_start().starts_with('{'))
            .map(|line| {
                serde_json::from_str(line).unwrap_or_else(|error| {
                    panic!("a script printed a line that is not JSON ({error}): {line}\n{self}")
                })
            })
            .collect()
    }

    /// The events whose `"event"` field is `name`.
    pub fn events_named(&self, name: &str) -> Vec<Value> {
        self.events()
            .into_iter()
            .filter(|event| event["event"] == name)
            .collect()
    }

    /// The one event named `name`; panics unless there is exactly one.
    pub fn event(&self, name: &str) -> Value {
        let mut events = self.events_named(name);
        assert_eq!(
            events.len(),
            1,
            "expected exactly one {name:?} event from `{} {}`:\n{self}",
            self.program,
            self.args.join(" ")
        );
        events.remove(0)
    }
}

impl std::fmt::Display for ScriptRun {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "status: {} after {:?}\n--- stdout ---\n{}\n--- stderr (last 16 KiB) ---\n{}",
            self.describe_status(),
            self.took,
            self.stdout,
            tail(&self.stderr, 16 << 10)
        )
    }
}

fn tail(text: &str, bytes: usize) -> &str {
    let start = text.len().saturating_sub(bytes);
    let start = (start..text.len())
        .find(|at| text.is_char_boundary(*at))
        .unwrap_or(0);
    &text[start..]
}

/// Runs `command` to its end or until `timeout` (then kills it and everything it started: a
/// driver script's kcat holds the output pipes too), collecting its output.
fn run_bounded(mut command: Command, timeout: Duration) -> std::io::Result<ScriptRun> {
    let program = command.get_program().to_string_lossy().into_owned();
    let args = command
        .get_args()
        .map(|arg| arg.to_string_lossy().into_owned())
        .collect();
    let started = Instant::now();
    let mut child = command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        // Its own process group, so a timeout can end the whole tree.
        .process_group(0)
        .spawn()?;
    let stdout = collect(child.stdout.take().expect("stdout is piped"));
    let stderr = collect(child.stderr.take().expect("stderr is piped"));
    let status = try_poll_until(timeout, || child.try_wait().expect("polling a child"));
    if status.is_none() {
        let _ = killpg(Pid::from_raw(child.id() as i32), Signal::SIGKILL);
        let _ = child.wait();
    }
    Ok(ScriptRun {
        program,
        args,
        status,
        stdout: stdout.join().unwrap_or_default(),
        stderr: stderr.join().unwrap_or_default(),
        took: started.elapsed(),
    })
}

fn collect(mut pipe: impl Read + Send + 'static) -> JoinHandle<String> {
    std::thread::spawn(move || {
        let mut bytes = Vec::new();
        let _ = pipe.read_to_end(&mut bytes);
        String::from_utf8_lossy(&bytes).into_owned()
    })
}

/// Runs `PROGRAM ARGS...` (a client or a driver script) with a bounded timeout; never panics
/// on failure, so a test can inspect what a failing client said.
pub fn run_client(program: &Path, args: &[&str], env: &[(&str, &str)], timeout: Duration) -> ScriptRun {
    let mut command = Command::new(program);
    command.args(args).current_dir(workspace());
    for (name, value) in env {
        command.env(name, value);
    }
    run_bounded(command, timeout).unwrap_or_else(|error| panic!("spawning {}: {error}", program.display()))
}

/// Runs `node tests/clients/node/SCRIPT ARGS...` (installing kafkajs first).
pub fn run_node(script: &str, args: &[&str], timeout: Duration) -> ScriptRun {
    let paths = ensure_installed(ClientKind::Node);
    let script = paths.node_dir.join(script);
    let mut full = vec![script.to_str().expect("script path is UTF-8")];
    full.extend_from_slice(args);
    run_client(Path::new("node"), &full, &[], timeout)
}

/// Runs `VENV/python tests/clients/python/SCRIPT ARGS...` (installing the venv first).
pub fn run_python(script: &str, args: &[&str], timeout: Duration) -> ScriptRun {
    let paths = ensure_installed(ClientKind::Python);
    let script = paths.scripts.join("python").join(script);
    let mut full = vec![script.to_str().expect("script path is UTF-8")];
    full.extend_from_slice(args);
    // Unbuffered, so a killed script's output up to the kill is still seen.
    run_client(&paths.python, &full, &[("PYTHONUNBUFFERED", "1")], timeout)
}

/// Runs `bash tests/clients/kcat/SCRIPT ARGS...` (installing kcat first).
pub fn run_kcat_script(script: &str, args: &[&str], timeout: Duration) -> ScriptRun {
    let paths = ensure_installed(ClientKind::Kcat);
    let script = paths.scripts.join("kcat").join(script);
    let mut full = vec![script.to_str().expect("script path is UTF-8")];
    full.extend_from_slice(args);
    let kcat = paths.kcat.to_str().expect("kcat path is UTF-8").to_owned();
    run_client(Path::new("bash"), &full, &[("KCAT", &kcat)], timeout)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A PATH holding only the basic tools the installer needs, without the client toolchains.
    fn bare_path(dir: &Path) -> PathBuf {
        let bin = dir.join("bin");
        std::fs::create_dir_all(&bin).expect("creating a bin directory");
        for tool in [
            "bash",
            "dirname",
            "mkdir",
            "cat",
            "sha256sum",
            "cut",
            "flock",
            "date",
            "tail",
            "id",
            "rm",
        ] {
            let found = ["/usr/bin", "/bin"]
                .iter()
                .map(|dir| Path::new(dir).join(tool))
                .find(|path| path.exists())
                .unwrap_or_else(|| panic!("{tool} is not in /usr/bin or /bin"));
            std::os::unix::fs::symlink(found, bin.join(tool)).expect("linking a tool");
        }
        bin
    }

    fn installer(dir: &Path, path: &Path, args: &[&str]) -> ScriptRun {
        let mut command = Command::new(path.join("bash"));
        command
            .arg(workspace().join("tests/clients/install.sh"))
            .args(args)
            .env("PATH", path)
            .env("TIDELOG_CLIENTS_DIR", dir.join("state"));
        run_bounded(command, Duration::from_secs(60)).expect("running the installer")
    }

    #[test]
    fn installer_fails_loudly_when_a_client_toolchain_is_missing() {
        let dir = tempfile::tempdir().expect("temporary directory");
        let path = bare_path(dir.path());
        for (kind, message) in [
            ("node", "node is not installed"),
            ("python", "python3 is not installed"),
        ] {
            let run = installer(dir.path(), &path, &[kind]);
            assert_eq!(run.status.and_then(|s| s.code()), Some(1), "{run}");
            assert!(run.stderr.contains(message), "{run}");
        }
    }

    #[test]
    fn installer_refuses_an_unknown_client() {
        let dir = tempfile::tempdir().expect("temporary directory");
        let path = bare_path(dir.path());
        let run = installer(dir.path(), &path, &["java"]);
        assert_eq!(run.status.and_then(|s| s.code()), Some(2), "{run}");
        assert!(run.stderr.contains("unknown argument 'java'"), "{run}");
    }
}
