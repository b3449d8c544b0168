//! The example page of `examples/web` in a real headless Chromium, driven by
//! `tests/browser/drive.mjs`: cookie-transport login, a reload that restores the session,
//! a page of another site that can neither use nor drop the session, and logout. Every
//! server is in this process on loopback; the page and tokend share a site (127.0.0.1,
//! two ports) and the attacking page is another site (localhost).
//!
//! Needs Debian's `chromium` and `npm ci --prefix tests/browser`; without them the test
//! fails, it never skips. The screenshot of the signed-in page is written to
//! `target/tmp/browser/example-signed-in.png`.

mod common;

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use common::{Backend, TestApp, test_args};
use tokio::net::TcpListener;

/// Upper bound on the whole browser run; the driver gives up a little earlier by itself.
const BROWSER_DEADLINE: Duration = Duration::from_secs(60);

const OTHER_PAGE: &str = "<!doctype html><title>another site</title><p>another site</p>";

fn chromium() -> String {
    if std::env::var_os("CHROMIUM").is_none() {
        common::require_program("chromium", "chromium");
        common::require_program("npm", "npm");
    }
    let path = std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".to_owned());
    assert!(
        Path::new(&path).exists(),
        "headless Chromium is missing at {path}: apt-get install chromium (or set CHROMIUM)"
    );
    path
}

fn driver_dir() -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/browser");
    if !dir.join("node_modules/playwright-core").is_dir() {
        // The locked driver package, from the npm registry.
        let status = std::process::Command::new("npm")
            .args(["ci", "--no-audit", "--no-fund", "--prefix"])
            .arg(&dir)
            .status();
        assert!(
            status.is_ok_and(|s| s.success()),
            "npm ci --prefix tests/browser failed"
        );
    }
    assert!(
        dir.join("node_modules/playwright-core").is_dir(),
        "playwright-core is missing: npm ci --prefix tests/browser"
    );
    dir
}

/// Serves the example page's files, with `config.js` pointing at the test's tokend.
async fn example_file(State(api): State<String>, uri: Uri) -> Response {
    let (name, content_type) = match uri.path() {
        "/" | "/index.html" => ("index.html", "text/html; charset=utf-8"),
        "/app.js" => ("app.js", "text/javascript"),
        "/style.css" => ("style.css", "text/css"),
        "/config.js" => {
            let js = format!("window.TOKEND_API = {api:?};\n");
            return ([(header::CONTENT_TYPE, "text/javascript")], js).into_response();
        }
        _ => return StatusCode::NOT_FOUND.into_response(),
    };
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("examples/web")
        .join(name);
    match tokio::fs::read(&path).await {
        Ok(bytes) => ([(header::CONTENT_TYPE, content_type)], bytes).into_response(),
        Err(_) => StatusCode::NOT_FOUND.into_response(),
    }
}

fn spawn(listener: TcpListener, router: Router) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let _ = axum::serve(listener, router).await;
    })
}

/// Stops a task when the test ends, however it ends.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_example_page_keeps_the_session_out_of_reach_of_script_and_other_sites() {
    let chromium = chromium();
    let driver = driver_dir();
    let started = Instant::now();

    let page_listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let other_listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let page_origin = format!(
        "http://127.0.0.1:{}",
        page_listener.local_addr().expect("addr").port()
    );
    let other_origin = format!(
        "http://localhost:{}",
        other_listener.local_addr().expect("addr").port()
    );

    let mut args = test_args(&Backend::Memory);
    args.cors_origins = Some(page_origin.clone());
    args.session_max_ttl = Some("1d".into());
    let app = TestApp::start(args).await;
    let (email, password) = app.user().await;
    let cookie_name = app.state.cookie.name().to_owned();

    let _page = AbortOnDrop(spawn(
        page_listener,
        Router::new()
            .fallback(example_file)
            .with_state(app.base.clone()),
    ));
    let _other = AbortOnDrop(spawn(
        other_listener,
        Router::new().fallback(|| async { axum::response::Html(OTHER_PAGE) }),
    ));

    let screenshot = Path::new(env!("CARGO_TARGET_TMPDIR")).join("browser/example-signed-in.png");
    std::fs::create_dir_all(screenshot.parent().expect("a parent")).expect("artefact dir");
    let _ = std::fs::remove_file(&screenshot);

    let mut node = tokio::process::Command::new("node");
    node.arg("drive.mjs")
        .current_dir(&driver)
        .env("TOKEND_API", &app.base)
        .env("PAGE_ORIGIN", &page_origin)
        .env("OTHER_ORIGIN", &other_origin)
        .env("USER_EMAIL", &email)
        .env("USER_PASSWORD", &password)
        .env("COOKIE_NAME", &cookie_name)
        .env("SCREENSHOT", &screenshot)
        .env("CHROMIUM", &chromium)
        .env(
            "DEADLINE_MS",
            (BROWSER_DEADLINE.as_millis() - 10_000).to_string(),
        )
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        // Its own process group, so that Chromium goes too if the driver must be killed.
        .process_group(0)
        .kill_on_drop(true);
    let child = node
        .spawn()
        .expect("node must be installed (Node 20 or later)");
    let group = child.id().expect("a running child");
    let output = match tokio::time::timeout(BROWSER_DEADLINE, child.wait_with_output()).await {
        Ok(output) => output.expect("driver output"),
        Err(_) => {
            let _ = std::process::Command::new("kill")
                .args(["-KILL", "--", &format!("-{group}")])
                .status();
            panic!("the browser test did not finish within {BROWSER_DEADLINE:?}");
        }
    };
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    println!("{stdout}");
    eprintln!("{stderr}");
    println!("browser test took {:?}", started.elapsed());
    assert!(
        output.status.success(),
        "the browser checks failed:\n{stdout}\n{stderr}"
    );
    assert!(stdout.contains("ok: the old refresh cookie no longer works"));

    let png = std::fs::read(&screenshot).expect("the screenshot was saved");
    assert!(
        png.starts_with(b"\x89PNG") && png.len() > 10_000,
        "a real screenshot"
    );
}
