//! Keeps the IdP's signing keys current when `[auth.jwt] jwks_url` is set,
//! off the request path.
//!
//! Runs on shard 0 with its own small connection pool. The JWKS is fetched
//! at start, every `jwks_refresh_s`, and when a token names a `kid` the
//! current keys lack (a shard raises [`Shared::want_jwks`]) — at most once
//! per `jwks_refetch_min_s`, so tokens with random `kid`s cannot make
//! toolgate hammer the IdP. A fetch that fails, or returns something that is
//! not a JWKS, keeps the previous keys and is retried with backoff.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::shared::Shared;
use toolgate_net::client::Pool;

/// Largest JWKS accepted, bytes.
const MAX_JWKS_BYTES: usize = 1 << 20;
/// Time allowed for one fetch.
const FETCH_TIMEOUT: Duration = Duration::from_secs(10);
/// How often the task looks for a wanted fetch.
const TICK: Duration = Duration::from_millis(100);

/// Fetches the JWKS and keeps it fresh; returns at once without `jwks_url`.
pub async fn run(shared: Arc<Shared>) {
    let (Some(url), Some(jwt)) = (
        shared.config.jwks_url.clone(),
        shared.config.config.auth.jwt.clone(),
    ) else {
        return;
    };
    let refresh = Duration::from_secs(jwt.jwks_refresh_s.max(1));
    let refetch_min = Duration::from_secs(jwt.jwks_refetch_min_s);
    let pool = Pool::new(url.dial_target(), 1, shared.jwks_tls.clone());
    let request = format!(
        "GET {} HTTP/1.1\r\nHost: {}\r\nAccept: application/json\r\nUser-Agent: toolgate/{}\r\n\r\n",
        url.path,
        url.authority,
        env!("CARGO_PKG_VERSION")
    );
    let mut next_due = Instant::now();
    let mut last_fetch: Option<Instant> = None;
    let mut backoff = Duration::from_millis(500);
    loop {
        let now = Instant::now();
        let may_refetch = last_fetch.is_none_or(|t| now.duration_since(t) >= refetch_min);
        let wanted = may_refetch && shared.jwks_wanted.swap(false, Ordering::AcqRel);
        if now >= next_due || wanted {
            last_fetch = Some(now);
            match fetch(&pool, request.as_bytes()).await {
                Ok(text) => match shared.set_jwks(text) {
                    Ok(changed) => {
                        if changed {
                            tracing::info!(url = %url.authority, "JWKS fetched; new keys published");
                        }
                        backoff = Duration::from_millis(500);
                        next_due = now + refresh;
                    }
                    Err(e) => {
                        tracing::warn!(url = %url.authority, error = %e, "JWKS refused; the previous keys stay");
                        next_due = now + backoff;
                        backoff = (backoff * 2).min(refresh);
                    }
                },
                Err(e) => {
                    tracing::warn!(url = %url.authority, error = %e, "cannot fetch the JWKS; the previous keys stay");
                    next_due = now + backoff;
                    backoff = (backoff * 2).min(refresh);
                }
            }
            shared.jwks_attempted.store(true, Ordering::Release);
        }
        glommio::timer::sleep(TICK).await;
    }
}

async fn fetch(pool: &Pool, request: &[u8]) -> Result<String, String> {
    let resp = pool
        .exchange(request, MAX_JWKS_BYTES, FETCH_TIMEOUT)
        .await
        .map_err(|e| e.to_string())?;
    if resp.status != 200 {
        return Err(format!("HTTP {}", resp.status));
    }
    String::from_utf8(resp.body).map_err(|_| "the JWKS is not UTF-8".to_owned())
}
