//! The load-test suite in its CI-sized smoke mode (`load-tests/run.sh --smoke`), run
//! against the debug binary: every scenario for about two seconds, checking that the
//! tool works and that no request fails and no session chain breaks. No timing is
//! asserted. Needs `wrk` (Debian package `wrk`) besides `redis-server`.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Upper bound on the whole smoke run, build of the seeding tool included.
const LIMIT: Duration = Duration::from_secs(300);

fn wrk_installed() -> bool {
    Command::new("wrk")
        .arg("-v")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok()
}

/// The `load_seed` example next to the binary under test, built (or found up to date)
/// with the same profile.
fn seeder(tokend: &Path) -> PathBuf {
    let profile_dir = tokend
        .parent()
        .expect("the binary lives in a profile directory");
    let mut build = Command::new(env!("CARGO"));
    build
        .args(["build", "--quiet", "--example", "load_seed"])
        .current_dir(env!("CARGO_MANIFEST_DIR"));
    if profile_dir.file_name().is_some_and(|n| n == "release") {
        build.arg("--release");
    }
    let status = build.status().expect("run cargo build");
    assert!(status.success(), "building the load_seed example failed");
    profile_dir.join("examples").join("load_seed")
}

#[test]
fn smoke_run_of_the_load_test_completes_without_a_failed_request() {
    common::require_program("wrk", "wrk");
    assert!(
        wrk_installed(),
        "wrk is not installed; the load-test smoke run needs it. Install it with \
         `apt-get install -y wrk` (Debian and Ubuntu), or `brew install wrk`."
    );
    let tokend = Path::new(env!("CARGO_BIN_EXE_tokend"));
    let seed = seeder(tokend);
    let results = tempfile::tempdir().expect("temp dir");
    let log_path = results.path().join("run.log");
    let log = std::fs::File::create(&log_path).expect("log file");

    let mut child = Command::new("bash")
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("load-tests/run.sh"))
        .arg("--smoke")
        .env("TOKEND_BIN", tokend)
        .env("SEED_BIN", &seed)
        .env("RESULTS_DIR", results.path())
        .stdout(log.try_clone().expect("log handle"))
        .stderr(log)
        .spawn()
        .expect("start load-tests/run.sh");

    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for run.sh") {
            break status;
        }
        if started.elapsed() > LIMIT {
            // SIGTERM lets the script's trap stop what it started.
            let _ = Command::new("kill")
                .args(["-TERM", &child.id().to_string()])
                .status();
            let _ = child.wait();
            panic!(
                "the smoke run took over {LIMIT:?}:\n{}",
                std::fs::read_to_string(&log_path).unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(200));
    };

    let output = std::fs::read_to_string(&log_path).unwrap_or_default();
    assert!(status.success(), "the smoke run failed:\n{output}");
    let report = std::fs::read_to_string(results.path().join("report.md")).expect("report");
    for section in ["## Machine", "refresh, Redis", "JWKS / static bytes"] {
        assert!(
            report.contains(section),
            "report lacks {section:?}:\n{report}"
        );
    }
    // Every memory row carries a measured figure: the seeding tool's report was read.
    let memory_rows: Vec<&str> = report
        .lines()
        .filter(|l| l.starts_with("| Redis bytes per live session"))
        .collect();
    assert_eq!(memory_rows.len(), 3, "{report}");
    for row in memory_rows {
        let figure = row.split('|').nth(2).unwrap_or_default().trim();
        let bytes: u64 = figure
            .split_whitespace()
            .next()
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("no figure in {row:?}"));
        assert!(bytes > 0, "{row}");
    }
    // The CPU accounting found both server processes: the refresh row of the
    // per-request CPU table has a tokend and a redis-server figure.
    let cpu_row: Vec<f64> = report
        .lines()
        .filter(|l| l.starts_with("| refresh | "))
        .map(|l| {
            l.split('|')
                .skip(2)
                .filter_map(|c| c.trim().parse().ok())
                .collect()
        })
        .find(|cells: &Vec<f64>| cells.len() == 5)
        .unwrap_or_else(|| panic!("no CPU row for refresh:\n{report}"));
    assert!(
        cpu_row[0] > 0.0 && cpu_row[1] > 0.0,
        "{cpu_row:?}\n{report}"
    );
    let script_row = report
        .lines()
        .find(|l| l.starts_with("| Redis's time per rotation script call"))
        .unwrap_or_else(|| panic!("no script timing row:\n{report}"));
    let micros: f64 = script_row
        .split('|')
        .nth(2)
        .and_then(|c| c.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no figure in {script_row:?}"));
    assert!(micros > 0.0, "{script_row}");
    // The machine's own speed is recorded, so that runs can be compared across machines.
    if Command::new("openssl").arg("version").output().is_ok() {
        let speed_row = report
            .lines()
            .find(|l| l.starts_with("| Ed25519 signatures/s on one core"))
            .unwrap_or_else(|| panic!("no speed row:\n{report}"));
        let rates: Vec<u64> = speed_row
            .split('|')
            .nth(2)
            .unwrap_or_default()
            .split('/')
            .filter_map(|n| n.trim().parse().ok())
            .collect();
        assert!(
            rates.len() == 2 && rates.iter().all(|&r| r > 0),
            "{speed_row}"
        );
    }
}
