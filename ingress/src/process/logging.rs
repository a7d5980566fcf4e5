//! Process logging: `tracing` to stderr, filtered by `RUST_LOG` or
//! `[log] level`, as text (colours on a terminal) or JSON lines.

use toolgate_core::config::ValidConfig;

/// Installs the global subscriber; a second call changes nothing.
pub(super) fn init(cfg: &ValidConfig) {
    use tracing_subscriber::EnvFilter;
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(&cfg.config.log.level));
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(ansi);
    let _ = if cfg.config.log.format == "json" {
        builder.json().try_init()
    } else {
        builder.try_init()
    };
}
