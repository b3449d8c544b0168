//! Shared test harness: private Redis servers, in-process tokend instances on port 0,
//! and a small HTTP client for the API.
#![allow(dead_code, unreachable_pub, missing_docs)]

/// Instantiates each named `async fn name(backend: &str)` as two tests, `memory::name`
/// and `redis::name`, one per store.
#[allow(unused_macros)]
macro_rules! on_both_stores {
    ($($name:ident),* $(,)?) => {
        mod memory {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name("memory").await;
                }
            )*
        }
        mod redis {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name("redis").await;
                }
            )*
        }
    };
}

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tokend::cli::ServeArgs;
use tokend::clock::Clock;
use tokend::config::Config;

/// A `redis-server` owned by one test, on a free port, stopped on drop. With
/// `TOKEND_TEST_REDIS_URL` set, tests that do not need to control the server use that
/// one instead.
pub struct RedisServer {
    pub url: String,
    pub port: u16,
    child: Option<Child>,
    /// Append-only directory when the server persists (survives kill and restart).
    persist: Option<tempfile::TempDir>,
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

fn wait_for_port(port: u16, up: bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        let open = std::net::TcpStream::connect(("127.0.0.1", port)).is_ok();
        if open == up {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    panic!(
        "redis on port {port} did not come {}",
        if up { "up" } else { "down" }
    );
}

impl RedisServer {
    /// A private server this test may stop and restart.
    pub fn private() -> Self {
        let port = free_port();
        let mut server = RedisServer {
            url: format!("redis://127.0.0.1:{port}"),
            port,
            child: None,
            persist: None,
        };
        server.start();
        server
    }

    /// A private server that writes every change to an append-only file, so its data
    /// survives [`RedisServer::kill`] and [`RedisServer::start`].
    pub fn private_persistent() -> Self {
        let port = free_port();
        let mut server = RedisServer {
            url: format!("redis://127.0.0.1:{port}"),
            port,
            child: None,
            persist: Some(tempfile::tempdir().expect("temp dir")),
        };
        server.start();
        server
    }

    /// The URL of a port where nothing listens yet; `start` brings a server there.
    pub fn not_started() -> Self {
        let port = free_port();
        RedisServer {
            url: format!("redis://127.0.0.1:{port}"),
            port,
            child: None,
            persist: None,
        }
    }

    /// The shared server named by `TOKEND_TEST_REDIS_URL`, else a private one.
    pub fn any() -> Self {
        match std::env::var("TOKEND_TEST_REDIS_URL") {
            Ok(url) if !url.is_empty() => RedisServer {
                url,
                port: 0,
                child: None,
                persist: None,
            },
            _ => Self::private(),
        }
    }

    /// (Re)starts the private server on its port.
    pub fn start(&mut self) {
        require_program("redis-server", "redis-server");
        let mut args = vec![
            "--port".to_owned(),
            self.port.to_string(),
            "--bind".into(),
            "127.0.0.1".into(),
            "--save".into(),
            String::new(),
        ];
        match &self.persist {
            Some(dir) => args.extend([
                "--appendonly".into(),
                "yes".into(),
                "--appendfsync".into(),
                "always".into(),
                "--dir".into(),
                dir.path().display().to_string(),
            ]),
            None => args.extend(["--appendonly".into(), "no".into()]),
        }
        let child = Command::new("redis-server")
            .args(&args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server must be installed (apt-get install redis-server)");
        self.child = Some(child);
        wait_for_port(self.port, true);
    }

    /// Kills the private server (as a crash would).
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
            wait_for_port(self.port, false);
        }
    }

    /// Runs `redis-cli` against this server and returns its output.
    pub fn cli(&self, args: &[&str]) -> String {
        let out = Command::new("redis-cli")
            .arg("-u")
            .arg(&self.url)
            .args(args)
            .output()
            .expect("redis-cli must be installed");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Raw bytes of a redis-cli call (for binary values).
    pub fn cli_raw(&self, args: &[&str]) -> Vec<u8> {
        Command::new("redis-cli")
            .arg("-u")
            .arg(&self.url)
            .args(args)
            .output()
            .expect("redis-cli must be installed")
            .stdout
    }
}

/// A Redis store (two connections, 2 s command timeout) connected to `url`, a server
/// or a Cluster node.
pub async fn connected_store(url: &str) -> tokend::store::redis::RedisStore {
    use tokend::store::redis::{RedisSettings, RedisStore};
    let store = RedisStore::connect(&RedisSettings {
        url: tokend::secret::Secret::new(url.to_owned()),
        command_timeout: Duration::from_secs(2),
        pool_size: 2,
        workers: Vec::new(),
    })
    .expect("valid Redis URL");
    assert!(
        store.wait_connected(Duration::from_secs(10)).await,
        "Redis reachable at {url}"
    );
    store
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Which store a test app runs on.
pub enum Backend {
    Memory,
    Redis(String),
}

/// Settings for a test app; cheap password hashing keeps the suite fast.
pub fn test_args(backend: &Backend) -> ServeArgs {
    ServeArgs {
        redis_url: match backend {
            Backend::Memory => None,
            Backend::Redis(url) => Some(url.clone()),
        },
        redis_timeout: Some("300ms".into()),
        argon2_memory_kib: Some("256".into()),
        argon2_iterations: Some("1".into()),
        hash_concurrency: Some("4".into()),
        issuer: Some("https://tokend.test".into()),
        audience: Some("test-api".into()),
        ..ServeArgs::default()
    }
}

/// A tokend served in this process on a loopback port.
pub struct TestApp {
    pub base: String,
    pub http: reqwest::Client,
    pub state: tokend::AppState,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for TestApp {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl TestApp {
    pub async fn start(args: ServeArgs) -> Self {
        let config = Config::from_args(&args).expect("valid test config");
        Self::start_with(config, Clock::System).await
    }

    pub async fn start_with(config: Config, clock: Clock) -> Self {
        let state = tokend::serve::build_state(&config, clock)
            .await
            .expect("state builds");
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind loopback");
        let addr = listener.local_addr().expect("local addr");
        let app = tokend::app(state.clone());
        let task = tokio::spawn(tokend::serve::serve_http(
            listener,
            app,
            config.idle_timeout,
            std::future::pending(),
        ));
        TestApp {
            base: format!("http://{addr}"),
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(10))
                .build()
                .expect("client"),
            state,
            task,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    pub async fn post(&self, path: &str, body: Value) -> Reply {
        Reply::read(self.http.post(self.url(path)).json(&body).send().await).await
    }

    pub async fn post_bearer(&self, path: &str, token: &str, body: Option<Value>) -> Reply {
        let mut req = self.http.post(self.url(path)).bearer_auth(token);
        if let Some(body) = body {
            req = req.json(&body);
        }
        Reply::read(req.send().await).await
    }

    pub async fn get_bearer(&self, path: &str, token: &str) -> Reply {
        Reply::read(
            self.http
                .get(self.url(path))
                .bearer_auth(token)
                .send()
                .await,
        )
        .await
    }

    pub async fn delete_bearer(&self, path: &str, token: &str) -> Reply {
        Reply::read(
            self.http
                .delete(self.url(path))
                .bearer_auth(token)
                .send()
                .await,
        )
        .await
    }

    /// Registers a fresh user and returns (email, password).
    pub async fn user(&self) -> (String, String) {
        let email = format!("user-{}@example.com", unique());
        let password = format!("pw-{}-long-enough", unique());
        let r = self
            .post("/v1/users", json!({"email": email, "password": password}))
            .await;
        assert_eq!(r.status, 201, "register: {}", r.body);
        (email, password)
    }

    /// Logs in and returns the token response.
    pub async fn login(&self, email: &str, password: &str, device: &str) -> Tokens {
        let r = self
            .post(
                "/v1/auth/login",
                json!({"email": email, "password": password, "device": device}),
            )
            .await;
        assert_eq!(r.status, 200, "login: {}", r.body);
        Tokens::from(&r.body)
    }

    pub async fn refresh(&self, refresh_token: &str) -> Reply {
        self.post("/v1/auth/refresh", json!({"refresh_token": refresh_token}))
            .await
    }
}

/// A status and JSON body (Null when empty).
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub body: Value,
    pub headers: reqwest::header::HeaderMap,
}

impl Reply {
    pub async fn read(result: reqwest::Result<reqwest::Response>) -> Self {
        let response = result.expect("request sent");
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let bytes = response.bytes().await.expect("body read");
        let body = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes)
                .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into()))
        };
        Reply {
            status,
            body,
            headers,
        }
    }

    pub fn code(&self) -> &str {
        self.body["error"].as_str().unwrap_or("")
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

/// The fields of a login or refresh response.
#[derive(Debug, Clone)]
pub struct Tokens {
    pub access: String,
    pub refresh: String,
    pub session_id: String,
}

impl Tokens {
    pub fn from(body: &Value) -> Self {
        Tokens {
            access: body["access_token"]
                .as_str()
                .expect("access_token")
                .to_owned(),
            refresh: body["refresh_token"]
                .as_str()
                .expect("refresh_token")
                .to_owned(),
            session_id: body["session_id"].as_str().expect("session_id").to_owned(),
        }
    }
}

/// A process-unique string for emails and passwords.
pub fn unique() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    format!(
        "{}-{}-{}",
        std::process::id(),
        nanos,
        N.fetch_add(1, Ordering::Relaxed)
    )
}

/// An app on the named store ("memory" or "redis"), with settings tweaked by the
/// test; the Redis server, if any, lives as long as the returned guard.
pub async fn app_on(
    backend: &str,
    tweak: impl FnOnce(&mut ServeArgs),
) -> (TestApp, Option<RedisServer>) {
    let (redis, backend) = match backend {
        "memory" => (None, Backend::Memory),
        _ => {
            let r = RedisServer::any();
            let url = r.url.clone();
            (Some(r), Backend::Redis(url))
        }
    };
    let mut args = test_args(&backend);
    tweak(&mut args);
    (TestApp::start(args).await, redis)
}

/// A three-primary Redis Cluster on free loopback ports, stopped on drop.
pub struct RedisCluster {
    pub url: String,
    nodes: Vec<Child>,
    _dir: tempfile::TempDir,
}

impl RedisCluster {
    pub fn start() -> Self {
        require_program("redis-server", "redis-server");
        let dir = tempfile::tempdir().expect("temp dir");
        let ports: Vec<u16> = (0..3).map(|_| free_port()).collect();
        let mut nodes = Vec::new();
        for port in &ports {
            let node_dir = dir.path().join(port.to_string());
            std::fs::create_dir_all(&node_dir).expect("node dir");
            let child = Command::new("redis-server")
                .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
                .args([
                    "--cluster-enabled",
                    "yes",
                    "--save",
                    "",
                    "--appendonly",
                    "no",
                ])
                .arg("--dir")
                .arg(&node_dir)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("redis-server must be installed");
            nodes.push(child);
            wait_for_port(*port, true);
        }
        let addrs: Vec<String> = ports.iter().map(|p| format!("127.0.0.1:{p}")).collect();
        let out = Command::new("redis-cli")
            .args(["--cluster", "create"])
            .args(&addrs)
            .args(["--cluster-replicas", "0", "--cluster-yes"])
            .output()
            .expect("redis-cli --cluster create");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stdout)
        );
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let ok = ports.iter().all(|p| {
                Command::new("redis-cli")
                    .args(["-p", &p.to_string(), "cluster", "info"])
                    .output()
                    .map(|o| String::from_utf8_lossy(&o.stdout).contains("cluster_state:ok"))
                    .unwrap_or(false)
            });
            if ok {
                break;
            }
            assert!(Instant::now() < deadline, "cluster did not converge");
            std::thread::sleep(Duration::from_millis(100));
        }
        let url = format!(
            "redis-cluster://{}?node={}&node={}",
            addrs[0], addrs[1], addrs[2]
        );
        RedisCluster {
            url,
            nodes,
            _dir: dir,
        }
    }
}

impl Drop for RedisCluster {
    fn drop(&mut self) {
        for node in &mut self.nodes {
            let _ = node.kill();
            let _ = node.wait();
        }
    }
}

/// Makes sure a system program the tests drive is installed: when it is missing and
/// the tests run as root on a Debian-like machine (as CI does), installs `package`
/// with apt-get; otherwise fails with the command to run. Keeps `cargo test` the one
/// command that sets up and runs the whole suite.
pub fn require_program(program: &str, package: &str) {
    static APT: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let found = |p: &str| {
        Command::new("sh")
            .args(["-c", &format!("command -v {p}")])
            .stdout(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    };
    if found(program) {
        return;
    }
    let _guard = APT
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    if found(program) {
        return;
    }
    let is_root = Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0");
    assert!(
        is_root && found("apt-get"),
        "{program} is missing: install it with `apt-get install -y {package}`"
    );
    let installed = Command::new("sh")
        .args([
            "-c",
            &format!(
                "apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq {package}"
            ),
        ])
        .status()
        .is_ok_and(|s| s.success());
    assert!(
        installed && found(program),
        "apt-get install -y {package} failed"
    );
}

/// Like [`require_program`], for a Python module the tests run with `python3 -m`,
/// installed with pip when missing.
pub fn require_python_module(module: &str, requirement: &str) {
    let present = || {
        Command::new("python3")
            .args(["-c", &format!("import {module}")])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    };
    if present() {
        return;
    }
    require_program("python3", "python3");
    let installed = Command::new("python3")
        .args(["-m", "pip", "install", "--quiet", requirement])
        .status()
        .is_ok_and(|s| s.success());
    assert!(installed && present(), "pip install {requirement} failed");
}

/// Writes a keyring with the real binary's `keys generate`, as a user would, into
/// `dir/keys.json`, and returns its path.
pub fn generate_keys(dir: &std::path::Path) -> std::path::PathBuf {
    let path = dir.join("keys.json");
    let out = Command::new(env!("CARGO_BIN_EXE_tokend"))
        .args(["keys", "generate", "--out"])
        .arg(&path)
        .output()
        .expect("run keys generate");
    assert!(
        out.status.success(),
        "keys generate failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    path
}
