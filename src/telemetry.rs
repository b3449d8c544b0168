//! Log output: human-readable lines or JSON, filtered by `TOKEND_LOG`. Nothing logged
//! anywhere in tokend carries a token, password or hash.

use tracing_subscriber::filter::LevelFilter;

use crate::config::{Config, LogFormat};

/// Installs the global subscriber; a second call (tests) is ignored.
pub fn init(config: &Config) {
    let filter = tracing_subscriber::EnvFilter::try_new(filter_directives(&config.log))
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

/// The `EnvFilter` directives for a `TOKEND_LOG` value.
///
/// A bare level (`debug`) is tokend's level (default `info`); dependencies log at
/// `warn`, or at that level when it is quieter (`error`, `off`), because at debug they
/// log connection chatter that buries tokend's own lines. Directives that name a target
/// are kept as written, so `debug,fred=debug` hears the Redis client too, and
/// `tokend=trace` or `tokend::http=trace` overrides the bare level for tokend.
pub fn filter_directives(log: &str) -> String {
    let mut level = LevelFilter::INFO;
    let mut named = Vec::new();
    for directive in log.split(',').map(str::trim).filter(|d| !d.is_empty()) {
        match directive.parse::<LevelFilter>() {
            Ok(bare) => level = bare,
            Err(_) => named.push(directive),
        }
    }
    let dependencies = level.min(LevelFilter::WARN);
    let names_tokend = named
        .iter()
        .any(|d| d.split(['=', '[']).next() == Some("tokend"));
    let mut directives = vec![dependencies.to_string()];
    if !names_tokend && level != dependencies {
        directives.push(format!("tokend={level}"));
    }
    directives.extend(named.iter().map(|d| (*d).to_owned()));
    directives.join(",")
}

/// Whether `TOKEND_LOG` can be used: every bare word is a level (tracing would take a
/// misspelt one, `verbose`, for a target name and silently log nothing new), and the
/// directives [`init`] builds from it parse.
pub fn is_valid_filter(log: &str) -> bool {
    let bare_words_are_levels = log
        .split(',')
        .map(str::trim)
        .filter(|d| !d.is_empty() && !d.contains(['=', '[']))
        .all(|d| d.parse::<LevelFilter>().is_ok());
    bare_words_are_levels && tracing_subscriber::EnvFilter::try_new(filter_directives(log)).is_ok()
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use super::*;

    #[test]
    fn a_bare_level_is_tokends_and_dependencies_stay_at_warn() {
        assert_eq!(filter_directives("info"), "warn,tokend=info");
        assert_eq!(filter_directives("debug"), "warn,tokend=debug");
        assert_eq!(filter_directives("TRACE"), "warn,tokend=trace");
        assert_eq!(filter_directives("warn"), "warn");
        assert_eq!(filter_directives("error"), "error");
        assert_eq!(filter_directives("off"), "off");
    }

    #[test]
    fn named_targets_are_kept_and_tokend_defaults_to_info() {
        assert_eq!(filter_directives("tokend=debug"), "warn,tokend=debug");
        assert_eq!(filter_directives("tokend=debug,info"), "warn,tokend=debug");
        assert_eq!(
            filter_directives("debug, fred=debug"),
            "warn,tokend=debug,fred=debug"
        );
        assert_eq!(
            filter_directives("fred=debug"),
            "warn,tokend=info,fred=debug"
        );
        assert_eq!(
            filter_directives("tokend::http=trace"),
            "warn,tokend=info,tokend::http=trace"
        );
    }

    #[derive(Clone, Default)]
    struct Capture(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Capture {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().expect("lock").extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn debug_shows_tokends_debug_lines_and_only_warnings_of_dependencies() {
        let capture = Capture::default();
        let writer = capture.clone();
        let filter = tracing_subscriber::EnvFilter::new(filter_directives("debug"));
        let subscriber = tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_ansi(false)
            .with_writer(move || writer.clone())
            .finish();
        tracing::subscriber::with_default(subscriber, || {
            tracing::debug!(target: "tokend::http", "tokend-debug");
            tracing::debug!(target: "fred::protocol", "dependency-debug");
            tracing::info!(target: "hyper::proto", "dependency-info");
            tracing::warn!(target: "fred::router", "dependency-warn");
        });
        let logs = String::from_utf8(capture.0.lock().expect("lock").clone()).expect("utf-8");
        assert!(logs.contains("tokend-debug"), "{logs}");
        assert!(logs.contains("dependency-warn"), "{logs}");
        assert!(!logs.contains("dependency-debug"), "{logs}");
        assert!(!logs.contains("dependency-info"), "{logs}");
    }
}
