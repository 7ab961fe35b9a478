//! Locating `tidelogd` and `tidelog`. This package is not theirs, so `CARGO_BIN_EXE_*` is not
//! set; the binaries live in the same `target/<profile>/` directory as this test executable's
//! `deps/`. Once per test process we run `cargo build --bins` for that profile, so a test never
//! runs a stale binary.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

/// Paths of the two binaries under test.
#[derive(Debug, Clone)]
pub struct Binaries {
    pub broker: PathBuf,
    pub cli: PathBuf,
}

/// Overrides, for running the suite against binaries built elsewhere (the build is skipped).
pub const BROKER_BIN_ENV: &str = "TIDELOG_E2E_TIDELOGD";
pub const CLI_BIN_ENV: &str = "TIDELOG_E2E_TIDELOG";

static BINARIES: OnceLock<Binaries> = OnceLock::new();

/// The binaries, built if needed on first call.
pub fn binaries() -> &'static Binaries {
    BINARIES.get_or_init(locate_or_build)
}

fn locate_or_build() -> Binaries {
    if let (Some(broker), Some(cli)) = (std::env::var_os(BROKER_BIN_ENV), std::env::var_os(CLI_BIN_ENV)) {
        return Binaries {
            broker: broker.into(),
            cli: cli.into(),
        };
    }
    let exe = std::env::current_exe().expect("path of the test executable");
    // target/<profile>/deps/<test>-<hash>
    let deps = exe.parent().expect("test executable has a directory");
    let profile_dir = if deps.file_name().is_some_and(|name| name == "deps") {
        deps.parent().expect("deps has a parent")
    } else {
        deps
    };
    let binaries = Binaries {
        broker: profile_dir.join("tidelogd"),
        cli: profile_dir.join("tidelog"),
    };
    build(profile_dir, &binaries);
    binaries
}

fn build(profile_dir: &Path, binaries: &Binaries) {
    let profile = profile_dir
        .file_name()
        .and_then(|name| name.to_str())
        .expect("profile directory name is UTF-8")
        .to_owned();
    let target_dir = profile_dir.parent().expect("profile directory has a parent");
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ sits in the workspace");
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut command = Command::new(cargo);
    command
        .current_dir(workspace)
        .args([
            "build",
            "--quiet",
            "-p",
            "tidelog-broker",
            "-p",
            "tidelog-client",
            "--bins",
        ])
        .arg("--target-dir")
        .arg(target_dir);
    match profile.as_str() {
        "debug" => {}
        "release" => {
            command.arg("--release");
        }
        other => {
            command.args(["--profile", other]);
        }
    }
    let output = command.output();
    let built = matches!(&output, Ok(output) if output.status.success());
    let present = binaries.broker.is_file() && binaries.cli.is_file();
    match (built, present) {
        (true, true) => {}
        (false, true) => eprintln!(
            "warning: `cargo build` of tidelogd and tidelog failed; testing the binaries already in {}: {}",
            profile_dir.display(),
            describe(&output)
        ),
        (_, false) => panic!(
            "tidelogd and tidelog are not in {} and building them failed: {}",
            profile_dir.display(),
            describe(&output)
        ),
    }
}

fn describe(output: &std::io::Result<std::process::Output>) -> String {
    match output {
        Ok(output) => format!("{}\n{}", output.status, String::from_utf8_lossy(&output.stderr)),
        Err(error) => format!("could not run cargo: {error}"),
    }
}
