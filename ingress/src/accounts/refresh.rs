//! The refresher: one task on shard 0 that renews users' access tokens
//! before they expire, with their refresh tokens, so no call waits for a
//! provider; and reads the store again now and then, for connections made
//! or removed on other replicas. Store writes run on glommio's blocking
//! pool, never on the shard's thread.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use toolgate_net::client::Pool;
use toolgate_upstream::connect::GrantError;

use super::{now_s, Accounts, Token};

/// How often the refresher looks for tokens to renew.
const TICK: Duration = Duration::from_secs(1);
/// How often the store is read again.
const SYNC_EVERY_S: u64 = 10;
/// Wait before trying a failed refresh again, seconds.
const RETRY_S: u64 = 15;
/// Most refreshes per tick (the rest wait for the next).
const PER_TICK: usize = 64;

/// Whether `t` should be renewed at `now`: no access token yet, or within
/// a fifth of its lifetime (5 to 60 s) of expiring.
fn due(t: &Token, now: u64) -> bool {
    if t.revoked || t.refresh.is_none() || t.retry_at > now {
        return false;
    }
    let Some(_) = &t.line else { return true };
    let lifetime = t.expires.saturating_sub(t.obtained);
    let margin = (lifetime / 5).clamp(5, 60);
    now + margin >= t.expires
}

/// Starts the refresher on the current shard; returns at once.
pub fn spawn_refresher(accounts: Arc<Accounts>) {
    glommio::spawn_local(run(accounts)).detach();
}

async fn run(accounts: Arc<Accounts>) {
    let pools: HashMap<String, Pool> = accounts
        .providers
        .iter()
        .map(|(name, p)| (name.clone(), p.pool()))
        .collect();
    let mut synced = now_s();
    tracing::info!(
        upstreams = pools.len(),
        "connected accounts: refresher running"
    );
    loop {
        glommio::timer::sleep(TICK).await;
        let now = now_s();
        if now >= synced + SYNC_EVERY_S {
            synced = now;
            let a = Arc::clone(&accounts);
            if let Err(e) = glommio::executor().spawn_blocking(move || a.sync()).await {
                tracing::warn!(error = %e, "connected accounts: the store cannot be read; keeping what is known");
            }
        }
        let live = accounts.live.load();
        let todo: Vec<(String, String, Token)> = live
            .iter()
            .flat_map(|(u, users)| {
                users
                    .iter()
                    .filter(|(_, t)| due(t, now))
                    .map(move |(user, t)| (u.clone(), user.clone(), t.clone()))
            })
            .take(PER_TICK)
            .collect();
        drop(live);
        for (upstream, user, token) in todo {
            let (Some(provider), Some(pool), Some(refresh)) = (
                accounts.providers.get(&upstream),
                pools.get(&upstream),
                token.refresh.as_ref(),
            ) else {
                continue;
            };
            match provider.refresh(pool, refresh).await {
                Ok(granted) => {
                    let now = now_s();
                    let rotated = granted.refresh.map(Arc::new);
                    let mut resealed = None;
                    if let Some(r) = &rotated {
                        let a = Arc::clone(&accounts);
                        let (u, s, t, r) =
                            (upstream.clone(), user.clone(), token.clone(), Arc::clone(r));
                        match glommio::executor()
                            .spawn_blocking(move || a.reseal(&u, &s, &t, &r))
                            .await
                        {
                            Ok(sealed) => resealed = Some(sealed),
                            Err(e) => {
                                tracing::warn!(upstream = %upstream, user = %user, error = %e, "connected accounts: a rotated refresh token could not be stored; the one in memory is used")
                            }
                        }
                    }
                    let granted_lifetime = granted.lifetime.as_secs();
                    let line = Arc::new(granted.line);
                    let expires = now + granted_lifetime;
                    accounts.set(&upstream, &user, token.connected_at, |t| {
                        t.line = Some(line);
                        t.obtained = now;
                        t.expires = expires;
                        t.retry_at = 0;
                        if let Some(r) = rotated {
                            t.refresh = Some(r);
                        }
                        if let Some(sealed) = resealed {
                            t.sealed = sealed;
                        }
                    });
                    tracing::info!(upstream = %upstream, user = %user, lifetime_s = granted_lifetime, "connected account token renewed");
                }
                Err(GrantError::Revoked) => {
                    tracing::info!(upstream = %upstream, user = %user, "connected account grant expired or revoked; the user must connect again");
                    accounts.set(&upstream, &user, token.connected_at, |t| {
                        t.revoked = true;
                        t.line = None;
                    });
                }
                Err(GrantError::Failed(why)) => {
                    tracing::warn!(upstream = %upstream, user = %user, error = %why, "connected account token not renewed; trying again");
                    let retry = now_s() + RETRY_S;
                    accounts.set(&upstream, &user, token.connected_at, |t| t.retry_at = retry);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use toolgate_core::secret::Secret;

    fn token(expires: u64, obtained: u64) -> Token {
        Token {
            line: Some(Arc::new(Secret::new(b"l".to_vec()))),
            expires,
            obtained,
            refresh: Some(Arc::new(Secret::new(b"r".to_vec()))),
            sealed: Arc::from(""),
            revoked: false,
            retry_at: 0,
            scope: String::new(),
            connected_at: 0,
        }
    }

    #[test]
    fn tokens_are_renewed_within_a_fifth_of_their_lifetime() {
        // 1000 s lifetime: renewed from 60 s before expiry (a fifth, capped).
        assert!(!due(&token(1000, 0), 939));
        assert!(due(&token(1000, 0), 940));
        // 50 s lifetime: from 10 s before.
        assert!(!due(&token(150, 100), 139));
        assert!(due(&token(150, 100), 140));
        let mut t = token(1000, 0);
        t.line = None;
        assert!(due(&t, 0), "no token yet");
        t.revoked = true;
        assert!(!due(&t, 0), "revoked: only the user can help");
        let mut t = token(10, 0);
        t.retry_at = 20;
        assert!(!due(&t, 15), "failed a moment ago");
        assert!(due(&t, 20));
    }
}
