//! Files and TLS material the configuration names, resolved against its directory.

use std::path::{Path, PathBuf};

use toml::Spanned;

use super::super::*;

/// Whether `host` (a name or an IP address, unbracketed) is this machine.
pub(crate) fn is_loopback(host: &str) -> bool {
    host == "localhost"
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// Checks a `ca_file` key (only for `https://`, must exist) and resolves it.
pub(crate) fn ca_file(
    f: &Option<Spanned<String>>,
    tls: bool,
    base: &Path,
    err: &mut dyn FnMut(Option<usize>, String),
    at: &dyn Fn(&std::ops::Range<usize>) -> Option<usize>,
) -> Option<PathBuf> {
    let f = f.as_ref()?;
    if !tls {
        err(
            at(&f.span()),
            "`ca_file` is only used with an `https://` URL".to_owned(),
        );
        return None;
    }
    let path = base.join(f.get_ref());
    if let Err(e) = std::fs::metadata(&path) {
        err(
            at(&f.span()),
            format!("cannot read `{}`: {e}", path.display()),
        );
        return None;
    }
    Some(path)
}

/// Checks a `[server.tls]` or `[admin.tls]` table: the TLS version, and
/// that every file it names exists.
pub(crate) fn check_tls(
    t: &ServerTlsConfig,
    base: &Path,
    err: &mut dyn FnMut(Option<usize>, String),
    at: &dyn Fn(&std::ops::Range<usize>) -> Option<usize>,
) {
    if !matches!(t.min_version.get_ref().as_str(), "1.2" | "1.3") {
        err(
            at(&t.min_version.span()),
            format!(
                "`min_version` must be \"1.2\" or \"1.3\", not `{}`",
                t.min_version.get_ref()
            ),
        );
    }
    let files = [
        Some(&t.cert_file),
        Some(&t.key_file),
        t.client_ca_file.as_ref(),
    ];
    for f in files.into_iter().flatten() {
        let path = base.join(f.get_ref());
        if let Err(e) = std::fs::metadata(&path) {
            err(
                at(&f.span()),
                format!("cannot read `{}`: {e}", path.display()),
            );
        }
    }
}

/// A TLS table's files resolved against `base`.
pub(crate) fn tls_files(t: &ServerTlsConfig, base: &Path) -> TlsFiles {
    TlsFiles {
        cert: base.join(t.cert_file.get_ref()),
        key: base.join(t.key_file.get_ref()),
        client_ca: t.client_ca_file.as_ref().map(|c| base.join(c.get_ref())),
        client_auth: t.client_auth,
        tls13_only: t.min_version.get_ref() == "1.3",
    }
}

pub(crate) fn resolve(base: &Path, p: PathBuf) -> PathBuf {
    if p.is_absolute() {
        p
    } else {
        base.join(p)
    }
}
