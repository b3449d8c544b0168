//! Log output: human-readable lines or JSON, filtered by `TOKEND_LOG`. Nothing logged
//! anywhere in tokend carries a token, password or hash.

use crate::config::{Config, LogFormat};

/// Installs the global subscriber; a second call (tests) is ignored.
pub fn init(config: &Config) {
    // Dependencies log connection chatter at debug and below; keep them at warn unless
    // the operator names them.
    let directive = format!("warn,{}", config.log).replace("warn,info", "warn,tokend=info");
    let filter = tracing_subscriber::EnvFilter::try_new(directive)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    // Colour only on a terminal: escape codes in a log file break grep.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(ansi)
        .with_writer(std::io::stderr);
    let _ = match config.log_format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
    };
}
