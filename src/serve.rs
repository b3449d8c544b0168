//! Builds the running service from a [`Config`] and serves it until SIGTERM or
//! Ctrl-C, then drains in-flight requests within the shutdown timeout.

use std::future::pending;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use axum::http::HeaderValue;
use tokio::net::TcpListener;

use crate::clock::Clock;
use crate::config::Config;
use crate::http::cookie::RefreshCookie;
use crate::http::{self, AppState};
use crate::lifecycle::{Lifecycle, LoginLimits, Policy};
use crate::password::PasswordHasher;
use crate::store::memory::MemoryStore;
use crate::store::redis::{RedisSettings, RedisStore};
use crate::store::{SessionStore as _, Store};
use crate::token::access::{AccessSigner, AccessVerifier, Jwks};
use crate::token::keyring::Keyring;
use crate::token::refresh::TokenHasher;

/// Why the service could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The keyring file is unusable.
    #[error("TOKEND_KEYS: {0}")]
    Keyring(#[from] crate::token::keyring::KeyringError),
    /// The Redis URL is unusable.
    #[error(transparent)]
    Redis(#[from] crate::store::redis::InvalidRedisUrl),
    /// argon2 refused the cost settings.
    #[error("TOKEND_ARGON2_*: {0}")]
    Password(#[from] crate::password::PasswordError),
    /// A listener could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The OS error.
        source: std::io::Error,
    },
    /// The worker threads or their runtimes could not be started.
    #[error("cannot start the runtime: {0}")]
    Runtime(std::io::Error),
    /// The metrics recorder could not be installed.
    #[error("metrics: {0}")]
    Metrics(String),
}

/// Builds the app state (keyring, store, lifecycle) from configuration, with the Redis
/// connections on the caller's runtime.
///
/// # Errors
/// [`StartError`] for an unusable keyring, Redis URL or argon2 setting.
pub async fn build_state(config: &Config, clock: Clock) -> Result<AppState, StartError> {
    build_state_on(config, clock, &[]).await
}

/// [`build_state`] with the Redis connections spread over the given worker runtimes,
/// each worker's requests using its own (see [`crate::worker`]).
///
/// # Errors
/// As [`build_state`].
pub async fn build_state_on(
    config: &Config,
    clock: Clock,
    workers: &[tokio::runtime::Handle],
) -> Result<AppState, StartError> {
    let rng = ring::rand::SystemRandom::new();
    let keyring = match &config.keys {
        Some(path) => {
            if Keyring::is_exposed(path) {
                tracing::warn!(
                    file = %path.display(),
                    "the keyring file is readable by other users; chmod 600 it"
                );
            }
            Keyring::load(path)?
        }
        None => {
            tracing::warn!(
                "TOKEND_KEYS is not set: generated a throwaway signing key; tokens will not \
                 survive a restart and other instances cannot verify them"
            );
            Keyring::ephemeral(&rng)
        }
    };
    let keyring = Arc::new(keyring);
    metrics::gauge!(crate::metrics::KEYRING_KEYS).set(keyring.keys().len() as f64);

    let store = match &config.redis_url {
        Some(url) => {
            let redis = RedisStore::connect(&RedisSettings {
                url: url.clone(),
                command_timeout: config.redis_timeout,
                pool_size: config.redis_pool_size,
                workers: workers.to_vec(),
            })?;
            if !redis.wait_connected(Duration::from_secs(2)).await {
                tracing::warn!("Redis is not reachable yet; serving 503 until it is");
            }
            Store::Redis(redis)
        }
        None => {
            let memory = MemoryStore::new(clock.clone());
            memory.spawn_sweeper(Duration::from_secs(60));
            Store::Memory(memory)
        }
    };

    let lifecycle = Lifecycle::new(
        store,
        PasswordHasher::new(config.argon2, config.hash_concurrency)?
            .with_queue_limit(config.hash_queue),
        TokenHasher::new(keyring.token_secret()),
        AccessSigner::new(
            keyring.clone(),
            &config.issuer,
            &config.audience,
            config.access_ttl.as_secs(),
        ),
        AccessVerifier::new(&keyring, &config.issuer, &config.audience),
        clock,
        Policy {
            idle_ttl: config.session_idle_ttl.min(config.session_max_ttl),
            max_ttl: config.session_max_ttl,
            refresh_grace: config.refresh_grace,
            registration_open: config.registration_open,
            login_limits: LoginLimits {
                per_account: config.login_max_failures,
                per_client: config.login_max_failures_per_ip,
                window: config.login_window,
            },
        },
    );
    let kids: Vec<&str> = keyring.keys().iter().map(|k| k.kid.as_str()).collect();
    tracing::info!(
        store = lifecycle.store().kind(),
        keyring = %config.keys.as_ref().map_or("ephemeral".into(), |p| p.display().to_string()),
        signing_kid = %keyring.signing_key().kid,
        published_kids = %kids.join(","),
        signing_backend = crate::token::signing::BACKEND,
        issuer = %config.issuer,
        audience = %config.audience,
        access_ttl_s = config.access_ttl.as_secs(),
        idle_ttl_s = config.session_idle_ttl.as_secs(),
        max_ttl_s = config.session_max_ttl.as_secs(),
        grace_ms = config.refresh_grace.as_millis() as u64,
        registration_open = config.registration_open,
        cookie = %config.web.cookie.name,
        cookie_domain = config.web.cookie.domain.as_deref().unwrap_or("(host only)"),
        cookie_samesite = ?config.web.cookie.same_site,
        cors_origins = config.web.cors_origins.len(),
        argon2_memory_kib = config.argon2.memory_kib,
        argon2_iterations = config.argon2.iterations,
        hash_concurrency = config.hash_concurrency,
        hash_queue = config.hash_queue,
        "configured"
    );
    let cors_origins = config
        .web
        .cors_origins
        .iter()
        .map(|o| HeaderValue::from_str(o).expect("validated origins are visible ASCII"))
        .collect();
    Ok(AppState {
        trusted_proxies: Arc::from(config.trusted_proxies.as_slice()),
        jwks: Arc::new(Jwks::new(&keyring)),
        lifecycle: Arc::new(lifecycle),
        cookie: Arc::new(RefreshCookie::new(&config.web.cookie)),
        cors_origins,
    })
}

async fn bind(addr: SocketAddr) -> Result<TcpListener, StartError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| StartError::Bind { addr, source })
}

/// How often the background probe pings the session store for `tokend_store_up`.
const STORE_PROBE_INTERVAL: Duration = Duration::from_secs(5);

/// Pings the store every [`STORE_PROBE_INTERVAL`] and publishes the answer as
/// `tokend_store_up`, so an outage shows (and alerts) even when no request arrives.
/// Logs once per change between up and down, not at every probe.
async fn probe_store(state: AppState) {
    let mut ticks = tokio::time::interval(STORE_PROBE_INTERVAL);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut was_up = true;
    loop {
        ticks.tick().await;
        let result = state.lifecycle.store().ping().await;
        let up = result.is_ok();
        metrics::gauge!(crate::metrics::STORE_UP).set(if up { 1.0 } else { 0.0 });
        match result {
            Ok(()) if !was_up => tracing::info!("session store answers again"),
            Err(e) if was_up => tracing::warn!(error = %e, "session store probe failed"),
            _ => {}
        }
        was_up = up;
    }
}

/// Resolves on SIGTERM or Ctrl-C.
/// Registers for SIGTERM and Ctrl-C now, so a signal that arrives as soon as the ports
/// are open already means "drain", and returns a future that resolves on the first.
fn shutdown_signal() -> impl std::future::Future<Output = ()> {
    #[cfg(unix)]
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
    async move {
        let ctrl_c = async {
            let _ = tokio::signal::ctrl_c().await;
        };
        #[cfg(unix)]
        let term = async {
            match term.as_mut() {
                Some(s) => {
                    s.recv().await;
                }
                None => std::future::pending::<()>().await,
            }
        };
        #[cfg(not(unix))]
        let term = std::future::pending::<()>();
        tokio::select! {
            () = ctrl_c => {},
            () = term => {},
        }
    }
}

/// Serves HTTP/1.1 on `listener` until `stop` completes, then stops accepting and
/// waits for the open connections to finish their requests. Each request carries the
/// peer's address as [`ConnectInfo`](axum::extract::ConnectInfo).
///
/// A connection waiting for a request's headers longer than `idle_timeout` is closed:
/// hyper counts from the moment the connection waits for the next request, so this
/// bounds idle keep-alive connections and clients that never finish their headers
/// alike. (Bodies have their own deadline, [`http::extract::BODY_READ_TIMEOUT`].)
pub async fn serve_http(
    listener: TcpListener,
    app: axum::Router,
    idle_timeout: Duration,
    stop: impl std::future::Future<Output = ()> + Send,
) {
    serve_incoming(Incoming::Listener(listener), app, idle_timeout, stop).await;
}

/// A connection accepted by [`dispatch`] and handed to a worker, with its peer.
type Handed = (std::net::TcpStream, SocketAddr);

/// Where a server's connections come from.
enum Incoming {
    /// Accepted here.
    Listener(TcpListener),
    /// Accepted elsewhere and handed over ([`dispatch`]); `open` counts this
    /// worker's open connections, for the dispatcher's choice.
    Handed {
        from: tokio::sync::mpsc::Receiver<Handed>,
        open: Arc<AtomicUsize>,
    },
}

impl Incoming {
    /// The next connection; `None` once no more can come.
    async fn next(&mut self) -> Option<(tokio::net::TcpStream, SocketAddr)> {
        loop {
            match self {
                Self::Listener(listener) => match listener.accept().await {
                    Ok(pair) => return Some(pair),
                    Err(e) => {
                        // Out of descriptors or a connection reset before it was
                        // taken: wait a moment rather than spin.
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                },
                Self::Handed { from, open } => {
                    let (stream, peer) = from.recv().await?;
                    match tokio::net::TcpStream::from_std(stream) {
                        Ok(stream) => return Some((stream, peer)),
                        Err(e) => {
                            // The dispatcher counted it in; it closes here.
                            open.fetch_sub(1, Ordering::Relaxed);
                            tracing::warn!(error = %e, "a worker cannot take a connection");
                        }
                    }
                }
            }
        }
    }

    /// [`next`](Self::next), or `None` as soon as `stop` completes.
    async fn next_before(
        &mut self,
        stop: std::pin::Pin<&mut impl std::future::Future<Output = ()>>,
    ) -> Option<(tokio::net::TcpStream, SocketAddr)> {
        tokio::select! {
            next = self.next() => next,
            () = stop => None,
        }
    }

    fn open_counter(&self) -> Option<Arc<AtomicUsize>> {
        match self {
            Self::Listener(_) => None,
            Self::Handed { open, .. } => Some(open.clone()),
        }
    }
}

/// Decrements a worker's open-connection count when its connection ends.
struct OpenGuard(Option<Arc<AtomicUsize>>);

impl Drop for OpenGuard {
    fn drop(&mut self) {
        if let Some(open) = &self.0 {
            open.fetch_sub(1, Ordering::Relaxed);
        }
    }
}

async fn serve_incoming(
    mut incoming: Incoming,
    app: axum::Router,
    idle_timeout: Duration,
    stop: impl std::future::Future<Output = ()> + Send,
) {
    use hyper_util::rt::{TokioIo, TokioTimer};
    use tower::ServiceExt as _;

    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(idle_timeout);
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let mut stop = std::pin::pin!(stop);
    while let Some((stream, peer)) = incoming.next_before(stop.as_mut()).await {
        // The dispatcher counted this connection in when it handed it over.
        let open = OpenGuard(incoming.open_counter());
        let app = app.clone();
        let service =
            hyper::service::service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                let mut req = req.map(axum::body::Body::new);
                req.extensions_mut()
                    .insert(axum::extract::ConnectInfo(peer));
                app.clone().oneshot(req)
            });
        let connection = graceful.watch(builder.serve_connection(TokioIo::new(stream), service));
        tokio::spawn(async move {
            let _open = open;
            if let Err(e) = connection.await {
                tracing::debug!(error = %e, "connection closed with an error");
            }
        });
    }
    drop(incoming);
    graceful.shutdown().await;
}

/// Hands `connection` to the worker with the fewest open connections whose queue has
/// room (ties go to the first from `turn` on), waiting only when every queue is full.
/// `false` if no worker takes connections any more.
async fn hand_over(
    workers: &[(tokio::sync::mpsc::Sender<Handed>, Arc<AtomicUsize>)],
    turn: usize,
    mut connection: Handed,
) -> bool {
    use tokio::sync::mpsc::error::TrySendError;
    let mut order: Vec<_> = (0..workers.len())
        .map(|k| &workers[(turn + k) % workers.len()])
        .collect();
    order.sort_by_key(|(_, open)| open.load(Ordering::Relaxed));
    for (to, open) in &order {
        open.fetch_add(1, Ordering::Relaxed);
        match to.try_send(connection) {
            Ok(()) => return true,
            Err(TrySendError::Full(back) | TrySendError::Closed(back)) => {
                open.fetch_sub(1, Ordering::Relaxed);
                connection = back;
            }
        }
    }
    for (to, open) in &order {
        open.fetch_add(1, Ordering::Relaxed);
        match to.send(connection).await {
            Ok(()) => return true,
            Err(back) => {
                open.fetch_sub(1, Ordering::Relaxed);
                connection = back.0;
            }
        }
    }
    false
}

/// Runs [`dispatch`] on a thread of its own, so that accepting never waits behind the
/// metrics listener or the store probe; the receiver resolves when it has stopped.
fn spawn_acceptor(
    listener: std::net::TcpListener,
    workers: Vec<(tokio::sync::mpsc::Sender<Handed>, Arc<AtomicUsize>)>,
    stop: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<tokio::sync::oneshot::Receiver<()>, StartError> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(StartError::Runtime)?;
    let (stopped, done) = tokio::sync::oneshot::channel();
    std::thread::Builder::new()
        .name("acceptor".into())
        .spawn(move || {
            runtime.block_on(async move {
                match TcpListener::from_std(listener) {
                    Ok(listener) => dispatch(listener, workers, stop).await,
                    Err(e) => tracing::error!(error = %e, "cannot accept on the API listener"),
                }
            });
            let _ = stopped.send(());
        })
        .map_err(StartError::Runtime)?;
    Ok(done)
}

/// Accepts on `listener` until `stop` completes and hands each connection to the
/// worker with the fewest open ones (the next in turn among equals). A connection stays
/// on its worker for its whole life, so counting them keeps the workers' shares even;
/// letting every worker accept on the socket instead gives a burst of new connections
/// (a client opening its pool) to whichever worker wakes first.
async fn dispatch(
    listener: TcpListener,
    workers: Vec<(tokio::sync::mpsc::Sender<Handed>, Arc<AtomicUsize>)>,
    stop: impl std::future::Future<Output = ()> + Send,
) {
    let mut incoming = Incoming::Listener(listener);
    let mut stop = std::pin::pin!(stop);
    let mut turn = 0;
    while let Some((stream, peer)) = incoming.next_before(stop.as_mut()).await {
        let stream = match stream.into_std() {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(error = %e, "cannot hand a connection over");
                continue;
            }
        };
        turn = (turn + 1) % workers.len();
        if !hand_over(&workers, turn, (stream, peer)).await {
            tracing::error!("no worker takes connections; closing the API listener");
            return;
        }
    }
}

/// Serves the API on [`Config::workers`] worker threads (see [`crate::worker`]), fed
/// by an acceptor thread, and the metrics listener on the calling thread, until a
/// shutdown signal; then drains. Blocks until stopped.
///
/// # Errors
/// [`StartError`] if the threads or the metrics recorder cannot be set up, the state
/// cannot be built or a port cannot be bound.
pub fn run(config: Config) -> Result<(), StartError> {
    let workers = crate::worker::Workers::start(config.workers).map_err(StartError::Runtime)?;
    let main = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(StartError::Runtime)?;
    let result = main.block_on(serve_on(config, workers.handles()));
    // Stops the workers (and with them connections still open after the drain).
    drop(workers);
    result
}

async fn serve_on(config: Config, workers: &[tokio::runtime::Handle]) -> Result<(), StartError> {
    let shutdown = shutdown_signal();
    let handle = crate::metrics::install().map_err(StartError::Metrics)?;
    let state = build_state_on(&config, Clock::System, workers).await?;
    let probe = tokio::spawn(probe_store(state.clone()));
    let api = std::net::TcpListener::bind(config.listen)
        .and_then(|l| l.set_nonblocking(true).map(|()| l))
        .map_err(|source| StartError::Bind {
            addr: config.listen,
            source,
        })?;
    let metrics = bind(config.metrics_listen).await?;
    tracing::info!(
        api = %api.local_addr().map_or(config.listen, |a| a),
        metrics = %metrics.local_addr().map_or(config.metrics_listen, |a| a),
        workers = workers.len(),
        "listening"
    );

    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let app = http::app(state);
    let mut api_tasks = Vec::with_capacity(workers.len());
    let mut to_workers = Vec::with_capacity(workers.len());
    for worker in workers {
        let (to, from) = tokio::sync::mpsc::channel(64);
        let open = Arc::new(AtomicUsize::new(0));
        to_workers.push((to, open.clone()));
        // A worker stops taking connections when the acceptor stops handing them
        // over (it drops the senders), after serving every one already handed over.
        let incoming = Incoming::Handed { from, open };
        let served = serve_incoming(incoming, app.clone(), config.idle_timeout, pending());
        api_tasks.push(worker.spawn(served));
    }
    let mut dispatch_stop = stop_rx.clone();
    let dispatcher = spawn_acceptor(api, to_workers, async move {
        let _ = dispatch_stop.wait_for(|s| *s).await;
    })?;
    let mut metrics_stop = stop_rx;
    let metrics_task = tokio::spawn(serve_http(
        metrics,
        http::metrics_app(handle),
        config.idle_timeout,
        async move {
            let _ = metrics_stop.wait_for(|s| *s).await;
        },
    ));

    shutdown.await;
    tracing::info!(
        drain_timeout_s = config.shutdown_timeout.as_secs(),
        "shutting down: no new connections, finishing in-flight requests"
    );
    let _ = stop_tx.send(true);
    probe.abort();
    let drained = tokio::time::timeout(config.shutdown_timeout, async {
        let _ = dispatcher.await;
        for task in api_tasks {
            let _ = task.await;
        }
        let _ = metrics_task.await;
    })
    .await;
    if drained.is_err() {
        tracing::warn!("drain timeout passed with requests still in flight; exiting");
    }
    tracing::info!("stopped");
    Ok(())
}
