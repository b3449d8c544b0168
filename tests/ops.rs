//! What the people on call run: the shipped Prometheus configuration, alert rules and
//! Grafana dashboard against a real Prometheus scraping the real binary; the compose
//! file against the Compose specification; the image's files; and graceful shutdown
//! with logins in flight. Needs `prometheus`, `promtool` (Debian's `prometheus`),
//! `redis-server` and Python's `check-jsonschema`; `.ci/run` installs them.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::{RedisServer, free_port, unique};
use serde_json::{Value, json};

const BIN: &str = env!("CARGO_BIN_EXE_tokend");

fn repo(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(path)
}

/// Runs a tool that the suite needs, with a hint when it is not installed.
fn run(program: &str, args: &[&str], hint: &str) -> Output {
    match (program, args.get(1)) {
        ("promtool", _) => common::require_program("promtool", "prometheus"),
        ("python3", Some(&"check_jsonschema")) => {
            common::require_python_module("check_jsonschema", "check-jsonschema==0.39.0");
        }
        _ => {}
    }
    Command::new(program)
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .unwrap_or_else(|e| panic!("cannot run {program} ({e}); {hint}"))
}

fn assert_success(what: &str, out: &Output) {
    assert!(
        out.status.success(),
        "{what} failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A child process killed and reaped on drop, so a failing test leaves nothing behind.
struct Process(Child);

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn wait_for_port(port: u16, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "{what} did not start listening");
        std::thread::sleep(Duration::from_millis(25));
    }
}

/// The real binary on loopback ports against `redis_url`, with `extra` settings; its
/// logs go to `log`.
fn start_tokend(
    redis_url: &str,
    keys: &Path,
    log: &Path,
    extra: &[(&str, &str)],
) -> (Process, u16, u16) {
    let (api, metrics) = (free_port(), free_port());
    let mut command = Command::new(BIN);
    command
        .env("TOKEND_LISTEN", format!("127.0.0.1:{api}"))
        .env("TOKEND_METRICS_LISTEN", format!("127.0.0.1:{metrics}"))
        .env("TOKEND_REDIS_URL", redis_url)
        .env("TOKEND_REDIS_TIMEOUT", "300ms")
        .env("TOKEND_KEYS", keys)
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(log).expect("log file"));
    for (name, value) in extra {
        command.env(name, value);
    }
    let process = Process(command.spawn().expect("spawn tokend"));
    wait_for_port(api, "tokend");
    (process, api, metrics)
}

// ---------------------------------------------------------------------------------
// Static checks of the shipped files.

#[test]
fn promtool_accepts_the_config_and_the_rules_and_their_unit_tests_pass() {
    let hint = "install Debian's prometheus package (it brings promtool)";
    for args in [
        ["check", "config", "ops/prometheus/prometheus.yml"],
        ["check", "rules", "ops/prometheus/alerts.yml"],
        ["test", "rules", "ops/prometheus/alerts_test.yml"],
    ] {
        let out = run("promtool", &args, hint);
        assert_success(&format!("promtool {}", args.join(" ")), &out);
    }
}

#[test]
fn every_alert_has_a_summary_and_a_runbook_section() {
    let operations = std::fs::read_to_string(repo("docs/operations.md")).expect("operations.md");
    let anchors: Vec<String> = operations
        .lines()
        .filter_map(|l| l.strip_prefix("### "))
        .map(|h| h.trim().to_lowercase())
        .collect();
    let rules = alert_rules();
    assert!(rules.len() >= 5, "{rules:?}");
    for rule in &rules {
        let name = rule["alert"].as_str().expect("alert name");
        let summary = rule["annotations"]["summary"].as_str().unwrap_or_default();
        assert!(summary.len() > 20, "{name} needs a summary");
        let runbook = rule["annotations"]["runbook_url"].as_str().unwrap_or("");
        assert_eq!(
            runbook,
            format!("docs/operations.md#{}", name.to_lowercase())
        );
        assert!(
            anchors.contains(&name.to_lowercase()),
            "docs/operations.md has no `### {name}` section"
        );
        assert!(
            ["critical", "warning"].contains(&rule["labels"]["severity"].as_str().unwrap_or("")),
            "{name} needs a severity"
        );
    }
}

/// The alerting rules of `ops/prometheus/alerts.yml`, as JSON values.
fn alert_rules() -> Vec<Value> {
    let text = std::fs::read_to_string(repo("ops/prometheus/alerts.yml")).expect("alerts.yml");
    let doc: Value = serde_yaml_ng::from_str(&text).expect("alerts.yml is YAML");
    doc["groups"]
        .as_array()
        .expect("groups")
        .iter()
        .flat_map(|g| g["rules"].as_array().expect("rules").clone())
        .collect()
}

#[test]
fn the_compose_file_follows_the_compose_specification_and_mounts_only_shipped_files() {
    let out = run(
        "python3",
        &[
            "-m",
            "check_jsonschema",
            "--builtin-schema",
            "vendor.compose-spec",
            "docker-compose.yml",
        ],
        "pip install check-jsonschema",
    );
    assert_success("check-jsonschema against the compose specification", &out);

    let text = std::fs::read_to_string(repo("docker-compose.yml")).expect("docker-compose.yml");
    let compose: Value = serde_yaml_ng::from_str(&text).expect("compose is YAML");
    let services = compose["services"].as_object().expect("services");
    let named: Vec<&String> = compose["volumes"]
        .as_object()
        .map(|v| v.keys().collect())
        .unwrap_or_default();
    let mut binds = 0;
    for (name, service) in services {
        if let Some(context) = service["build"].as_str() {
            assert!(repo(context).join("Dockerfile").is_file(), "{name}: build");
        }
        for volume in service["volumes"].as_array().into_iter().flatten() {
            let spec = volume.as_str().expect("short volume syntax");
            let source = spec.split(':').next().unwrap_or_default();
            if source.starts_with("./") || source.starts_with('/') {
                binds += 1;
                assert!(
                    repo(source).exists(),
                    "{name} mounts {source}, which is missing"
                );
            } else {
                assert!(
                    named.contains(&&source.to_owned()),
                    "{name}: undeclared {source}"
                );
            }
        }
    }
    assert!(
        binds >= 5,
        "prometheus and grafana mount their files from ops/"
    );
    for service in ["redis", "tokend", "prometheus", "grafana"] {
        assert!(services.contains_key(service), "{service} missing");
    }
    // Grafana finds the dashboard where the provider looks, through the datasource the
    // dashboard names; Prometheus finds its rules beside its configuration.
    let mounted = |service: &str, source: &str| -> String {
        services[service]["volumes"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .find_map(|v| v.strip_prefix(source)?.strip_prefix(':'))
            .map(|rest| rest.split(':').next().unwrap_or_default().to_owned())
            .unwrap_or_else(|| panic!("{service} does not mount {source}"))
    };
    let provider: Value = serde_yaml_ng::from_str(
        &std::fs::read_to_string(repo("ops/grafana/provisioning/dashboards/tokend.yml"))
            .expect("dashboard provider"),
    )
    .expect("provider YAML");
    assert_eq!(
        provider["providers"][0]["options"]["path"].as_str(),
        Some(mounted("grafana", "./ops/grafana/dashboards").as_str())
    );
    let datasources: Value = serde_yaml_ng::from_str(
        &std::fs::read_to_string(repo("ops/grafana/provisioning/datasources/prometheus.yml"))
            .expect("datasource"),
    )
    .expect("datasource YAML");
    assert_eq!(datasources["datasources"][0]["uid"], "prometheus");
    let config = mounted("prometheus", "./ops/prometheus/prometheus.yml");
    let rules = mounted("prometheus", "./ops/prometheus/alerts.yml");
    assert_eq!(Path::new(&config).parent(), Path::new(&rules).parent());

    let redis = services["redis"]["command"].to_string();
    assert!(
        redis.contains("--appendonly") && redis.contains("yes"),
        "{redis}"
    );
}

#[test]
fn the_image_is_multi_stage_non_root_and_checks_itself_with_the_binary() {
    let dockerfile = std::fs::read_to_string(repo("Dockerfile")).expect("Dockerfile");
    let lines: Vec<&str> = dockerfile.lines().map(str::trim).collect();
    assert!(lines.iter().filter(|l| l.starts_with("FROM ")).count() >= 2);
    let user = lines
        .iter()
        .rev()
        .find_map(|l| l.strip_prefix("USER "))
        .expect("a USER line");
    assert!(
        !user.starts_with("root") && !user.starts_with("0"),
        "{user}"
    );
    let healthcheck = dockerfile
        .split("HEALTHCHECK")
        .nth(1)
        .expect("a HEALTHCHECK");
    let command = healthcheck
        .lines()
        .find(|l| l.contains("CMD"))
        .unwrap_or_default();
    assert!(command.contains("/tokend\", \"healthcheck\""), "{command}");
    let ignore = std::fs::read_to_string(repo(".dockerignore")).expect(".dockerignore");
    assert!(
        ignore.lines().any(|l| l.trim() == "*"),
        "the context is allow-listed"
    );
}

/// One `COPY` of a Dockerfile stage: its sources in the build context and destination.
#[derive(Debug)]
struct Copy {
    sources: Vec<String>,
    dest: String,
}

/// The instructions of a Dockerfile, continuation lines joined and comments dropped.
fn dockerfile_instructions(text: &str) -> Vec<String> {
    let mut instructions = Vec::new();
    let mut current = String::new();
    for line in text.lines() {
        let trimmed = line.trim();
        if trimmed.starts_with('#') || (trimmed.is_empty() && current.is_empty()) {
            continue;
        }
        match trimmed.strip_suffix('\\') {
            Some(head) => {
                current.push_str(head);
                current.push(' ');
            }
            None => {
                current.push_str(trimmed);
                instructions.push(std::mem::take(&mut current));
            }
        }
    }
    instructions
}

/// The context `COPY`s of the stage that runs `cargo build` (copies `--from` another
/// stage are left out).
fn build_stage_copies(dockerfile: &str) -> Vec<Copy> {
    let instructions = dockerfile_instructions(dockerfile);
    let stages: Vec<&[String]> = instructions
        .split(|i| i.starts_with("FROM "))
        .skip(1)
        .collect();
    let build = stages
        .iter()
        .find(|s| s.iter().any(|i| i.contains("cargo build")))
        .expect("a stage that runs cargo build");
    build
        .iter()
        .filter_map(|i| i.strip_prefix("COPY "))
        .filter_map(|args| {
            let words: Vec<String> = if args.trim_start().starts_with('[') {
                serde_json::from_str(args).expect("COPY in JSON form")
            } else {
                args.split_whitespace().map(str::to_owned).collect()
            };
            let words: Vec<String> = words.into_iter().filter(|w| !w.starts_with("--")).collect();
            if args.contains("--from") {
                return None;
            }
            let (dest, sources) = words.split_last().expect("COPY has a destination");
            Some(Copy {
                sources: sources.to_vec(),
                dest: dest.clone(),
            })
        })
        .collect()
}

/// Whether `.dockerignore` (its lines in `ignore`) keeps `path` out of the build
/// context: the last pattern matching the path or one of its parent directories
/// decides, as Docker does.
fn docker_ignores(ignore: &str, path: &str) -> bool {
    fn glob(pattern: &[&str], path: &[&str]) -> bool {
        match (pattern.split_first(), path.split_first()) {
            (None, None) => true,
            (Some((&"**", rest)), _) => {
                glob(rest, path) || (!path.is_empty() && glob(pattern, &path[1..]))
            }
            (Some((p, prest)), Some((s, srest))) => segment(p, s) && glob(prest, srest),
            _ => false,
        }
    }
    fn segment(pattern: &str, name: &str) -> bool {
        match pattern.chars().next() {
            None => name.is_empty(),
            Some('*') => (0..=name.len())
                .filter(|&i| name.is_char_boundary(i))
                .any(|i| segment(&pattern[1..], &name[i..])),
            Some(c) => {
                name.chars().next().is_some_and(|n| c == '?' || c == n) && {
                    let n = name.chars().next().map_or(0, char::len_utf8);
                    segment(&pattern[c.len_utf8()..], &name[n..])
                }
            }
        }
    }
    let parts: Vec<&str> = path.split('/').collect();
    let mut ignored = false;
    for line in ignore.lines().map(str::trim) {
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (keep, pattern) = match line.strip_prefix('!') {
            Some(p) => (true, p),
            None => (false, line),
        };
        let pattern = pattern.trim_start_matches("./").trim_matches('/');
        let pattern: Vec<&str> = pattern.split('/').collect();
        if (1..=parts.len()).any(|n| glob(&pattern, &parts[..n])) {
            ignored = !keep;
        }
    }
    ignored
}

/// The source files of the targets `Cargo.toml` declares (`[lib]`, `[[bin]]`,
/// `[[bench]]`, `[[example]]`), by their `path` or cargo's default for their name.
fn declared_target_files(manifest: &str) -> Vec<String> {
    let package = manifest
        .lines()
        .find_map(|l| l.trim().strip_prefix("name = "))
        .map(|n| n.trim_matches('"').to_owned())
        .expect("package name");
    let mut targets: Vec<(String, Option<String>, Option<String>)> = Vec::new();
    let mut in_target = false;
    for line in manifest.lines().map(str::trim) {
        if line.starts_with('[') {
            in_target = ["[lib]", "[[bin]]", "[[bench]]", "[[example]]"].contains(&line);
            if in_target {
                targets.push((line.trim_matches(['[', ']']).to_owned(), None, None));
            }
            continue;
        }
        let Some((key, value)) = line.split_once('=') else {
            continue;
        };
        let value = Some(value.trim().trim_matches('"').to_owned());
        if let (true, Some(target)) = (in_target, targets.last_mut()) {
            match key.trim() {
                "name" => target.1 = value,
                "path" => target.2 = value,
                _ => {}
            }
        }
    }
    targets
        .into_iter()
        .map(|(kind, name, path)| {
            path.unwrap_or_else(|| {
                let name = name.unwrap_or_else(|| package.clone());
                let candidates = match kind.as_str() {
                    "lib" => vec!["src/lib.rs".to_owned()],
                    "bin" if name == package => vec!["src/main.rs".to_owned()],
                    "bin" => vec![
                        format!("src/bin/{name}.rs"),
                        format!("src/bin/{name}/main.rs"),
                    ],
                    "bench" => vec![
                        format!("benches/{name}.rs"),
                        format!("benches/{name}/main.rs"),
                    ],
                    _ => vec![
                        format!("examples/{name}.rs"),
                        format!("examples/{name}/main.rs"),
                    ],
                };
                candidates
                    .iter()
                    .find(|c| repo(c).is_file())
                    .unwrap_or_else(|| panic!("no source file for {kind} {name}: {candidates:?}"))
                    .clone()
            })
        })
        .collect()
}

/// Whether a `COPY` of the build stage brings the context file `file` to the same
/// relative path in the stage's working directory.
fn copied_to_same_place(copies: &[Copy], file: &str) -> bool {
    let strip = |p: &str| p.trim_start_matches("./").trim_end_matches('/').to_owned();
    copies.iter().any(|copy| {
        let dest = strip(&copy.dest);
        copy.sources.iter().map(|s| strip(s)).any(|source| {
            if source == file {
                // A file copied into the working directory keeps its name.
                (dest.is_empty() && !file.contains('/')) || dest == file
            } else {
                // A directory's contents land in the destination directory.
                file.starts_with(&format!("{source}/")) && dest == source
            }
        })
    })
}

#[test]
fn the_build_stage_gets_every_file_the_manifest_declares() {
    let manifest = std::fs::read_to_string(repo("Cargo.toml")).expect("Cargo.toml");
    let dockerfile = std::fs::read_to_string(repo("Dockerfile")).expect("Dockerfile");
    let ignore = std::fs::read_to_string(repo(".dockerignore")).expect(".dockerignore");
    let copies = build_stage_copies(&dockerfile);
    let mut files = vec!["Cargo.toml".to_owned(), "Cargo.lock".to_owned()];
    files.extend(declared_target_files(&manifest));
    assert!(
        files.iter().any(|f| f.starts_with("benches/")),
        "the manifest declares benches: {files:?}"
    );
    // Cargo refuses to load a manifest whose declared target file is missing, even to
    // build another target: each one must reach the build stage.
    for file in &files {
        assert!(repo(file).is_file(), "{file} is declared but missing");
        assert!(
            !docker_ignores(&ignore, file),
            ".dockerignore keeps {file} out of the build context"
        );
        assert!(
            copied_to_same_place(&copies, file),
            "no COPY of the build stage brings {file} to ./{file}: {copies:?}"
        );
    }
    // The matcher itself: the allow-list shape this file relies on.
    assert!(docker_ignores("*\n!src/\n", "target/debug/tokend"));
    assert!(!docker_ignores("*\n!src/\n", "src/main.rs"));
    assert!(docker_ignores(
        "*\n!src/\nsrc/**/*.bak\n",
        "src/store/old.bak"
    ));

    // What cargo itself says of the staged context: the manifest loads.
    let staged = tempfile::tempdir().expect("temp dir");
    for copy in &copies {
        for source in &copy.sources {
            let source = source.trim_start_matches("./").trim_end_matches('/');
            let dest = staged.path().join(copy.dest.trim_start_matches("./"));
            stage(
                &ignore,
                source,
                &repo(source),
                &dest,
                copy.sources.len() > 1 || copy.dest.ends_with('/'),
            );
        }
    }
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    let out = Command::new(cargo)
        .args(["fetch", "--locked", "--offline"])
        .current_dir(staged.path())
        .env("CARGO_TARGET_DIR", staged.path().join("target"))
        .output()
        .expect("run cargo");
    // The cargo cache here may hold only what this platform's build needed, so an
    // offline fetch can stop at a download it may not make; that is past the point
    // where cargo checks the declared targets, which is what this test is about.
    let stderr = String::from_utf8_lossy(&out.stderr);
    let stopped_at_download = stderr.contains("--offline was specified");
    assert!(
        !stderr.contains("can't find") && (out.status.success() || stopped_at_download),
        "cargo loading the manifest in the staged build context failed:\n{stderr}"
    );
}

/// Copies `from` (context path `source`) as `COPY` would to `dest`, leaving out what
/// `.dockerignore` excludes. `into` means `dest` is a directory the file goes into.
fn stage(ignore: &str, source: &str, from: &Path, dest: &Path, into: bool) {
    if docker_ignores(ignore, source) && !from.is_dir() {
        return;
    }
    if from.is_dir() {
        for entry in std::fs::read_dir(from).expect("read dir") {
            let entry = entry.expect("dir entry");
            let name = entry.file_name();
            let name = name.to_str().expect("utf-8 name");
            stage(
                ignore,
                &format!("{source}/{name}"),
                &entry.path(),
                &dest.join(name),
                false,
            );
        }
        return;
    }
    let target = if into {
        dest.join(from.file_name().expect("file name"))
    } else {
        dest.to_path_buf()
    };
    std::fs::create_dir_all(target.parent().expect("parent")).expect("mkdir");
    std::fs::copy(from, &target).expect("stage file");
}

#[test]
fn keys_generate_if_missing_keeps_an_existing_keyring() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("keys.json");
    let path_arg = path.to_str().expect("utf-8 path");
    let args = ["keys", "generate", "--out", path_arg, "--if-missing"];
    assert_success("first start", &run(BIN, &args, "built by cargo"));
    let first = std::fs::read(&path).expect("written");
    let out = run(BIN, &args, "built by cargo");
    assert_success("second start", &out);
    assert_eq!(std::fs::read(&path).expect("kept"), first);
    assert!(String::from_utf8_lossy(&out.stdout).contains("kept"));

    std::fs::write(&path, b"not a keyring").expect("corrupt");
    let out = run(BIN, &args, "built by cargo");
    assert!(
        !out.status.success(),
        "a broken keyring is reported, not replaced"
    );
    assert_eq!(std::fs::read(&path).expect("left"), b"not a keyring");
}

// ---------------------------------------------------------------------------------
// Dashboard and alerts against a real Prometheus.

/// Percent-encodes a query-string value.
fn encode(value: &str) -> String {
    value
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

struct Prometheus {
    base: String,
    http: reqwest::Client,
    _process: Process,
    _dir: tempfile::TempDir,
}

impl Prometheus {
    /// Starts Prometheus with the shipped configuration and rules, scraping the metrics
    /// listener at `target` every second.
    async fn start(target: &str) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let shipped =
            std::fs::read_to_string(repo("ops/prometheus/prometheus.yml")).expect("prometheus.yml");
        let mut config = shipped.clone();
        for (from, to) in [
            ("\"tokend:9091\"", format!("\"{target}\"")),
            ("scrape_interval: 15s", "scrape_interval: 1s".to_owned()),
            (
                "evaluation_interval: 15s",
                "evaluation_interval: 1s".to_owned(),
            ),
        ] {
            assert_eq!(shipped.matches(from).count(), 1, "{from} in prometheus.yml");
            config = config.replace(from, &to);
        }
        std::fs::write(dir.path().join("prometheus.yml"), config).expect("write config");
        std::fs::copy(
            repo("ops/prometheus/alerts.yml"),
            dir.path().join("alerts.yml"),
        )
        .expect("copy alerts");

        let port = free_port();
        common::require_program("prometheus", "prometheus");
        let log = std::fs::File::create(dir.path().join("prometheus.log")).expect("log file");
        let child = Command::new("prometheus")
            .arg(format!(
                "--config.file={}",
                dir.path().join("prometheus.yml").display()
            ))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("prometheus must be installed (apt-get install prometheus)");
        let prometheus = Prometheus {
            base: format!("http://127.0.0.1:{port}"),
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(10))
                .build()
                .expect("client"),
            _process: Process(child),
            _dir: dir,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let ready = prometheus
                .http
                .get(format!("{}/-/ready", prometheus.base))
                .send()
                .await
                .is_ok_and(|r| r.status().is_success());
            if ready {
                break;
            }
            assert!(Instant::now() < deadline, "prometheus did not become ready");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        prometheus
    }

    async fn api(&self, path: &str) -> Value {
        let body: Value = self
            .http
            .get(format!("{}{path}", self.base))
            .send()
            .await
            .expect("prometheus answers")
            .json()
            .await
            .expect("prometheus JSON");
        assert_eq!(body["status"], "success", "{path}: {body}");
        body["data"].clone()
    }

    /// Evaluates an instant query now; fails the test on any error.
    async fn query(&self, expr: &str) -> Vec<Value> {
        let data = self
            .api(&format!("/api/v1/query?query={}", encode(expr)))
            .await;
        assert_eq!(data["resultType"], "vector", "{expr}");
        data["result"].as_array().expect("result").clone()
    }
}

/// Shows a query result as `{labels} value` items.
fn show(result: &[Value]) -> String {
    let items: Vec<String> = result
        .iter()
        .map(|sample| {
            let labels: Vec<String> = sample["metric"]
                .as_object()
                .map(|m| m.iter().map(|(k, v)| format!("{k}={v}")).collect())
                .unwrap_or_default();
            let value = sample["value"][1].as_str().unwrap_or("?");
            let value = value
                .parse::<f64>()
                .map_or(value.to_owned(), |v| format!("{v:.4}"));
            format!("{{{}}} {value}", labels.join(","))
        })
        .collect();
    if items.is_empty() {
        "(empty)".to_owned()
    } else {
        items.join("; ")
    }
}

async fn post(http: &reqwest::Client, url: String, body: Value) -> (u16, Value) {
    let r = http.post(url).json(&body).send().await.expect("request");
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

/// One round of every kind of traffic the dashboard shows: registrations, good and bad
/// logins, each refresh outcome, logouts, listings, JWKS and probes. Returns a
/// well-formed refresh token of a revoked session.
async fn drive(http: &reqwest::Client, api: &str) -> Value {
    let url = |p: &str| format!("{api}{p}");
    let (email, password) = (format!("ops-{}@example.com", unique()), "ops password 1");
    let (status, _) = post(
        http,
        url("/v1/users"),
        json!({"email": email, "password": password}),
    )
    .await;
    assert_eq!(status, 201);
    let other = format!("ops-{}@example.com", unique());
    let (_, created) = post(
        http,
        url("/v1/users"),
        json!({"email": other, "password": password}),
    )
    .await;
    let other_user = created["user_id"].as_str().expect("user id").to_owned();

    let login = json!({"email": email, "password": password});
    let (status, first) = post(http, url("/v1/auth/login"), login.clone()).await;
    assert_eq!(status, 200, "{first}");
    let (_, second) = post(http, url("/v1/auth/login"), login).await;
    let wrong = json!({"email": email, "password": "not the password"});
    assert_eq!(post(http, url("/v1/auth/login"), wrong).await.0, 401);

    let refresh = |token: &Value| json!({"refresh_token": token});
    let r1 = first["refresh_token"].clone();
    let (status, next) = post(http, url("/v1/auth/refresh"), refresh(&r1)).await;
    assert_eq!(status, 200, "ok: {next}");
    assert_eq!(
        post(http, url("/v1/auth/refresh"), refresh(&r1)).await.0,
        200,
        "grace"
    );
    let (_, latest) = post(
        http,
        url("/v1/auth/refresh"),
        refresh(&next["refresh_token"]),
    )
    .await;
    let (status, body) = post(http, url("/v1/auth/refresh"), refresh(&r1)).await;
    assert_eq!((status, &body["error"]), (401, &json!("token_reused")));
    let (status, _) = post(
        http,
        url("/v1/auth/refresh"),
        refresh(&latest["refresh_token"]),
    )
    .await;
    assert_eq!(status, 401, "revoked");
    assert_eq!(
        post(http, url("/v1/auth/refresh"), refresh(&json!("garbage")))
            .await
            .0,
        401
    );
    // The second session's token, under another user's id: no such session there.
    let parts: Vec<String> = second["refresh_token"]
        .as_str()
        .expect("refresh token")
        .split('.')
        .map(str::to_owned)
        .collect();
    let elsewhere = format!("{}.{other_user}.{}.{}", parts[0], parts[2], parts[3]);
    assert_eq!(
        post(http, url("/v1/auth/refresh"), refresh(&json!(elsewhere)))
            .await
            .0,
        401
    );

    let access = second["access_token"].as_str().expect("access token");
    let listed = http
        .get(url("/v1/sessions"))
        .bearer_auth(access)
        .send()
        .await
        .expect("sessions");
    assert_eq!(listed.status(), 200);
    let token = refresh(&second["refresh_token"]);
    assert_eq!(
        post(http, url("/v1/auth/logout"), token.clone()).await.0,
        204
    );
    assert_eq!(post(http, url("/v1/auth/logout"), token).await.0, 204);
    for path in ["/.well-known/jwks.json", "/healthz", "/readyz"] {
        let status = http.get(url(path)).send().await.expect(path).status();
        assert_eq!(status, 200, "{path}");
    }
    latest["refresh_token"].clone()
}

/// A login and a refresh that need the store, while it is down: both 503.
async fn drive_outage(http: &reqwest::Client, api: &str, refresh_token: &Value, log: &Path) {
    let log = || std::fs::read_to_string(log).unwrap_or_default();
    let (status, _) = post(
        http,
        format!("{api}/v1/auth/login"),
        json!({"email": "nobody@example.com", "password": "whatever it is"}),
    )
    .await;
    assert_eq!(status, 503, "login while Redis is down:\n{}", log());
    let (status, _) = post(
        http,
        format!("{api}/v1/auth/refresh"),
        json!({"refresh_token": refresh_token}),
    )
    .await;
    assert_eq!(status, 503, "refresh while Redis is down:\n{}", log());
}

/// Grafana's variables in the dashboard's queries, as Prometheus cannot expand them.
fn expand_grafana_variables(expr: &str) -> String {
    let expanded = expr
        .replace("$__rate_interval", "1m")
        .replace("$instance", ".*");
    assert!(!expanded.contains('$'), "unexpanded variable in {expr}");
    expanded
}

/// The dashboard's panels in order, with the panels that rows hold (a collapsed row
/// keeps its panels inside itself) after their row.
fn dashboard_panels(panels: &[Value]) -> Vec<&Value> {
    panels
        .iter()
        .flat_map(|panel| {
            let nested = panel["panels"].as_array().map_or(&[][..], Vec::as_slice);
            std::iter::once(panel).chain(dashboard_panels(nested))
        })
        .collect()
}

/// Label matchers of dashboard queries that select what the test traffic never causes,
/// so a query made of them is empty without its `or vector(0)`: a 5xx other than 503
/// is a bug.
const NOT_CAUSED_BY_THE_TRAFFIC: &[&str] = &[r#"status=~"5..", status!="503""#];

/// The series selectors of a query: each metric name written before `{`, with the
/// label names its matchers use.
fn selectors(expr: &str) -> Vec<(String, Vec<String>)> {
    let is_name = |c: char| c.is_ascii_alphanumeric() || c == '_' || c == ':';
    let mut found = Vec::new();
    let mut rest = expr;
    while let Some(open) = rest.find('{') {
        let metric: String = rest[..open]
            .chars()
            .rev()
            .take_while(|&c| is_name(c))
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
            .collect();
        let body = &rest[open + 1..];
        let (mut labels, mut quoted, mut close, mut at_start) = (Vec::new(), false, None, true);
        for (i, c) in body.char_indices() {
            match c {
                '"' if !body[..i].ends_with('\\') => quoted = !quoted,
                '}' if !quoted => {
                    close = Some(i);
                    break;
                }
                ',' if !quoted => at_start = true,
                _ if at_start && !quoted && is_name(c) => {
                    let name: String = body[i..].chars().take_while(|&c| is_name(c)).collect();
                    labels.push(name);
                    at_start = false;
                }
                _ => {}
            }
        }
        let close = close.unwrap_or_else(|| panic!("unclosed selector in {expr}"));
        if !metric.is_empty() {
            found.push((metric, labels));
        }
        rest = &body[close + 1..];
    }
    found
}

/// Fails unless every metric a query selects has series in Prometheus and carries
/// every label its matchers name, so a misspelt name cannot hide behind a fallback or
/// a negative matcher.
async fn check_series_exist(prometheus: &Prometheus, expr: &str) {
    let selectors = selectors(expr);
    assert!(!selectors.is_empty(), "no metric selector in {expr}");
    for (metric, labels) in selectors {
        let series = prometheus.query(&format!("group({metric})")).await;
        assert!(!series.is_empty(), "no series of {metric} ({expr})");
        for label in labels {
            let series = prometheus
                .query(&format!("group({metric}{{{label}!=\"\"}})"))
                .await;
            assert!(!series.is_empty(), "{metric} has no label {label} ({expr})");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_dashboard_and_alert_query_evaluates_against_a_real_prometheus() {
    let mut redis = RedisServer::private();
    let dir = tempfile::tempdir().expect("temp dir");
    let keys = common::generate_keys(dir.path());
    let cheap = [
        ("TOKEND_ARGON2_MEMORY_KIB", "1024"),
        ("TOKEND_ARGON2_ITERATIONS", "1"),
    ];
    let log = dir.path().join("tokend.log");
    let (_tokend, api, metrics) = start_tokend(&redis.url, &keys, &log, &cheap);
    // The container's check: it listens on 0.0.0.0 and checks itself on loopback.
    let out = Command::new(BIN)
        .arg("healthcheck")
        .env("TOKEND_LISTEN", format!("0.0.0.0:{api}"))
        .output()
        .expect("run healthcheck");
    assert_success("tokend healthcheck", &out);
    let api = format!("http://127.0.0.1:{api}");
    let prometheus = Prometheus::start(&format!("127.0.0.1:{metrics}")).await;
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .expect("client");

    // Prometheus applies new targets every few seconds: wait for the first scrape.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let targets = prometheus.api("/api/v1/targets").await;
        if targets["activeTargets"][0]["health"] == "up" {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "prometheus never scraped tokend: {targets}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // Two rounds a few scrapes apart, so every counter has grown between two samples and
    // rates are real numbers; then Redis goes away and clients see 503, twice.
    drive(&http, &api).await;
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let revoked = drive(&http, &api).await;
    redis.kill();
    drive_outage(&http, &api, &revoked, &log).await;
    tokio::time::sleep(Duration::from_millis(2000)).await;
    drive_outage(&http, &api, &revoked, &log).await;
    tokio::time::sleep(Duration::from_millis(2500)).await;

    let targets = prometheus.api("/api/v1/targets").await;
    let target = &targets["activeTargets"][0];
    assert_eq!(target["health"], "up", "scrape of tokend: {target}");

    let dashboard: Value = serde_json::from_str(
        &std::fs::read_to_string(repo("ops/grafana/dashboards/tokend.json")).expect("dashboard"),
    )
    .expect("dashboard JSON");
    let mut evaluated = 0;
    println!("Dashboard panels against Prometheus:");
    for panel in dashboard_panels(dashboard["panels"].as_array().expect("panels")) {
        let title = panel["title"].as_str().unwrap_or("?");
        if panel["type"] == "row" {
            println!("\n== {title}");
            continue;
        }
        assert_eq!(panel["datasource"]["uid"], "prometheus", "{title}");
        println!("- {title}");
        for target in panel["targets"].as_array().expect("targets") {
            let expr = expand_grafana_variables(target["expr"].as_str().expect("expr"));
            let result = prometheus.query(&expr).await;
            println!("    {expr}\n      => {}", show(&result));
            assert!(!result.is_empty(), "panel {title:?} shows no data: {expr}");
            check_series_exist(&prometheus, &expr).await;
            // `or vector(0)` answers even for a metric that does not exist: the query
            // without it must show the traffic above, bar the outcomes it never causes.
            if let Some(bare) = expr.trim().strip_suffix("or vector(0)") {
                let result = prometheus.query(bare).await;
                println!("    without the fallback => {}", show(&result));
                let never_caused = NOT_CAUSED_BY_THE_TRAFFIC.iter().any(|m| bare.contains(m));
                assert!(
                    !result.is_empty() || never_caused,
                    "panel {title:?} shows only its fallback: {bare}"
                );
            }
            evaluated += 1;
        }
    }
    assert!(evaluated >= 25, "only {evaluated} dashboard queries");

    // The instance picker: Grafana lists the label's values over the metric's series.
    let variables = dashboard["templating"]["list"]
        .as_array()
        .expect("variables");
    assert!(
        !variables.is_empty(),
        "the dashboard has an instance picker"
    );
    for variable in variables {
        let name = variable["name"].as_str().unwrap_or("?");
        assert_eq!(variable["type"], "query", "{name}");
        assert_eq!(variable["datasource"]["uid"], "prometheus", "{name}");
        let query = variable["query"]["query"].as_str().expect("variable query");
        let (metric, label) = query
            .strip_prefix("label_values(")
            .and_then(|q| q.strip_suffix(')'))
            .and_then(|q| q.split_once(','))
            .map(|(m, l)| (m.trim(), l.trim()))
            .unwrap_or_else(|| panic!("{name}: not label_values(metric, label): {query}"));
        let series = prometheus.query(metric).await;
        println!("\nVariable {name}: {metric} => {}", show(&series));
        assert!(
            !series.is_empty(),
            "variable {name}: {metric} has no series"
        );
        let values = prometheus
            .api(&format!(
                "/api/v1/label/{label}/values?match[]={}",
                encode(metric)
            ))
            .await;
        assert!(
            values.as_array().is_some_and(|v| !v.is_empty()),
            "variable {name} offers no {label}: {values}"
        );
    }

    println!("\nAlert rules:");
    let rules = alert_rules();
    for rule in &rules {
        let expr = rule["expr"].as_str().expect("expr");
        let result = prometheus.query(expr).await;
        println!(
            "- {}: {}",
            rule["alert"].as_str().unwrap_or("?"),
            show(&result)
        );
    }
    // Prometheus loaded and evaluated the same rules without error.
    let loaded = prometheus.api("/api/v1/rules").await;
    let loaded: Vec<&Value> = loaded["groups"]
        .as_array()
        .expect("groups")
        .iter()
        .flat_map(|g| g["rules"].as_array().expect("rules"))
        .collect();
    assert_eq!(loaded.len(), rules.len());
    for rule in loaded {
        assert_eq!(rule["health"], "ok", "{rule}");
        println!("  {} is {}", rule["name"], rule["state"]);
    }
    let firing = prometheus.query("ALERTS").await;
    assert!(
        firing
            .iter()
            .any(|a| a["metric"]["alertname"] == "TokendServerErrors"),
        "the 503s raise TokendServerErrors: {}",
        show(&firing)
    );
}

// ---------------------------------------------------------------------------------
// Graceful shutdown.

/// Reads an unlabelled gauge from a `/metrics` page.
fn gauge(page: &str, name: &str) -> f64 {
    page.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0.0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_lets_logins_in_flight_finish_then_exits_cleanly() {
    const LOGINS: usize = 8;
    let redis = RedisServer::private();
    let dir = tempfile::tempdir().expect("temp dir");
    let keys = common::generate_keys(dir.path());
    // The default argon2 cost, one hash at a time: a few logins make a queue that takes
    // a while to drain, as a login burst does in production.
    let log = dir.path().join("tokend.log");
    let (mut tokend, api, metrics) = start_tokend(
        &redis.url,
        &keys,
        &log,
        &[
            ("TOKEND_HASH_CONCURRENCY", "1"),
            ("TOKEND_SHUTDOWN_TIMEOUT", "30s"),
        ],
    );
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .expect("client");
    let base = format!("http://127.0.0.1:{api}");
    let (email, password) = (format!("drain-{}@example.com", unique()), "drain password");
    let (status, _) = post(
        &http,
        format!("{base}/v1/users"),
        json!({"email": email, "password": password}),
    )
    .await;
    assert_eq!(status, 201);

    let logins: Vec<_> = (0..LOGINS)
        .map(|_| {
            let (http, url) = (http.clone(), format!("{base}/v1/auth/login"));
            let body = json!({"email": email, "password": password});
            tokio::spawn(async move {
                let reply = post(&http, url, body).await;
                (reply, Instant::now())
            })
        })
        .collect();

    // Wait until every login is inside tokend (hashing, queued for hashing, or done)
    // and some are still queued: then they are all in flight.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let done = logins.iter().filter(|l| l.is_finished()).count();
        let page = http
            .get(format!("http://127.0.0.1:{metrics}/metrics"))
            .send()
            .await
            .expect("metrics")
            .text()
            .await
            .expect("metrics text");
        let queued = gauge(&page, "tokend_password_hashes_queued");
        let running = gauge(&page, "tokend_password_hashes_in_flight");
        if queued >= 1.0 && done + (queued + running) as usize >= LOGINS {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "logins never queued: {queued} {running} {done}"
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let signalled = Instant::now();
    let status = Command::new("kill")
        .args(["-TERM", &tokend.0.id().to_string()])
        .status()
        .expect("kill");
    assert!(status.success());

    let mut after_signal = 0;
    for login in logins {
        let ((status, body), finished) = login.await.expect("login task");
        assert_eq!(status, 200, "an in-flight login was cut off: {body}");
        assert!(body["access_token"].is_string());
        if finished > signalled {
            after_signal += 1;
        }
    }
    assert!(after_signal >= 1, "no login was still in flight at SIGTERM");

    let deadline = Instant::now() + Duration::from_secs(20);
    let code = loop {
        if let Some(code) = tokend.0.try_wait().expect("wait") {
            break code;
        }
        assert!(
            Instant::now() < deadline,
            "tokend did not exit after draining"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(code.success(), "exit status {code}");
    let log = std::fs::read_to_string(&log).expect("tokend log");
    assert!(log.contains("shutting down"), "{log}");
    assert!(
        log.contains("stopped") && !log.contains("drain timeout passed"),
        "{log}"
    );
    assert!(
        std::net::TcpStream::connect(("127.0.0.1", api)).is_err(),
        "the listener is closed"
    );
}

#[test]
fn the_healthcheck_command_fails_when_nothing_answers() {
    let port = free_port();
    let out = Command::new(BIN)
        .args(["healthcheck", "--listen", &format!("127.0.0.1:{port}")])
        .output()
        .expect("run healthcheck");
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("healthz"));
}
