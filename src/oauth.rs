//! OAuth2 for mailbox and SMTP logins (`auth = "oauth2"`): the SASL XOAUTH2 and OAUTHBEARER
//! (RFC 7628) client responses, access tokens from a refresh token (RFC 6749 §6) cached per
//! mailbox and refreshed before they expire, rotated refresh tokens saved atomically, and the
//! device authorization grant (RFC 8628) behind `postdesk oauth login`. The protocol itself is
//! the `oauth2` crate's (over reqwest with rustls/ring); this module only drives it.
//! Tokens and client secrets never appear in errors, logs or `Debug` output.

use crate::clock::SharedClock;
use crate::config::{OAuth2, Secret};
use oauth2::basic::{BasicClient, BasicErrorResponseType};
use oauth2::{DeviceCodeErrorResponseType, StandardDeviceAuthorizationResponse};
use oauth2::{AuthType, ClientId, ClientSecret, DeviceAuthorizationUrl, EndpointMaybeSet, EndpointNotSet, EndpointSet, RefreshToken, RequestTokenError, Scope, TokenResponse, TokenUrl};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use time::OffsetDateTime;

// ---------------------------------------------------------------------------------------------
// SASL (pure).

/// SASL mechanisms that carry a bearer token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mechanism {
    /// Google's and Microsoft's `XOAUTH2`.
    XOAuth2,
    /// RFC 7628 `OAUTHBEARER`.
    OAuthBearer,
}

impl Mechanism {
    pub fn name(self) -> &'static str {
        match self {
            Mechanism::XOAuth2 => "XOAUTH2",
            Mechanism::OAuthBearer => "OAUTHBEARER",
        }
    }

    /// The one the server offers, XOAUTH2 first (Gmail and Microsoft offer both; it is the one
    /// they document). `offered` holds the mechanism names the server announced.
    pub fn choose<'a>(offered: impl IntoIterator<Item = &'a str>) -> Option<Mechanism> {
        let offered: Vec<String> = offered.into_iter().map(str::to_ascii_uppercase).collect();
        [Mechanism::XOAuth2, Mechanism::OAuthBearer].into_iter().find(|m| offered.iter().any(|o| o == m.name()))
    }

    /// The client's initial response (before base64), see [`xoauth2`] and [`oauthbearer`].
    pub fn response(self, user: &str, token: &str) -> String {
        match self {
            Mechanism::XOAuth2 => xoauth2(user, token),
            Mechanism::OAuthBearer => oauthbearer(user, token),
        }
    }
}

/// `user=USER^Aauth=Bearer TOKEN^A^A` (Google's and Microsoft's XOAUTH2).
pub fn xoauth2(user: &str, token: &str) -> String {
    format!("user={user}\x01auth=Bearer {token}\x01\x01")
}

/// RFC 7628 §3.1: GS2 header `n,a=USER,` then `^Aauth=Bearer TOKEN^A^A`. `,` and `=` in the
/// authzid are escaped as RFC 5801 §4 says.
pub fn oauthbearer(user: &str, token: &str) -> String {
    let user = user.replace('=', "=3D").replace(',', "=2C");
    format!("n,a={user},\x01auth=Bearer {token}\x01\x01")
}

/// async-imap's `AUTHENTICATE` handshake: the first challenge is empty and gets the response;
/// a second one carries the server's JSON error and gets what ends the exchange so the server
/// can answer NO: `^A` for OAUTHBEARER (RFC 7628 §3.2.3), an empty line for XOAUTH2 (Google's
/// and Microsoft's documentation).
pub struct Authenticator {
    mechanism: Mechanism,
    response: Option<String>,
}

impl Authenticator {
    pub fn new(mechanism: Mechanism, user: &str, token: &Secret) -> Authenticator {
        Authenticator { mechanism, response: Some(mechanism.response(user, token.expose())) }
    }
}

impl async_imap::Authenticator for Authenticator {
    type Response = String;
    fn process(&mut self, _challenge: &[u8]) -> String {
        self.response.take().unwrap_or_else(|| match self.mechanism {
            Mechanism::OAuthBearer => "\x01".to_string(),
            Mechanism::XOAuth2 => String::new(),
        })
    }
}

// ---------------------------------------------------------------------------------------------
// Tokens.

/// Why no access token could be had. `Revoked` and `Config` need an admin (they alert);
/// `Network` is retried quietly.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    /// The provider refused the refresh token (`invalid_grant`: consent revoked, token expired,
    /// password changed). A new `postdesk oauth login` is needed.
    #[error("the provider refused the refresh token ({0}); run `postdesk oauth login` again")]
    Revoked(String),
    /// The token endpoint could not be reached or gave no usable answer; retrying may help.
    #[error("token endpoint: {0}")]
    Network(String),
    /// Something only the admin can fix: no refresh token yet, an unknown client, a bad scope.
    #[error("{0}")]
    Config(String),
}

impl TokenError {
    /// Whether an admin must act (an alert is sent), rather than a retry helping.
    pub fn needs_admin(&self) -> bool {
        !matches!(self, TokenError::Network(_))
    }
}

/// An access token and its times.
#[derive(Debug, Clone)]
pub struct AccessToken {
    pub secret: Secret,
    pub obtained_at: OffsetDateTime,
    pub expires_at: OffsetDateTime,
    /// When to get the next one: 80% into its life, at most 60 s before it expires.
    pub refresh_at: OffsetDateTime,
}

/// When to refresh a token of `lifetime` obtained at `at`: `lifetime - min(lifetime/5, 60 s)`.
pub fn refresh_moment(at: OffsetDateTime, lifetime: Duration) -> OffsetDateTime {
    let early = (lifetime / 5).min(Duration::from_secs(60));
    at + time::Duration::try_from(lifetime - early).unwrap_or(time::Duration::ZERO)
}

/// Assumed when the provider does not say (RFC 6749 §5.1 makes `expires_in` optional).
const DEFAULT_LIFETIME: Duration = Duration::from_secs(3600);

type Client = BasicClient<EndpointNotSet, EndpointMaybeSet, EndpointNotSet, EndpointNotSet, EndpointSet>;

fn client(cfg: &OAuth2) -> Result<Client, TokenError> {
    let token_url = TokenUrl::new(cfg.token_url.clone()).map_err(|e| TokenError::Config(format!("{}.token_url: {e}", cfg.name)))?;
    let device = match &cfg.device_url {
        Some(u) => Some(DeviceAuthorizationUrl::new(u.clone()).map_err(|e| TokenError::Config(format!("{}.device_url: {e}", cfg.name)))?),
        None => None,
    };
    let mut c = BasicClient::new(ClientId::new(cfg.client_id.clone()))
        // Google and Microsoft both take the client credentials in the form body.
        .set_auth_type(AuthType::RequestBody)
        .set_token_uri(token_url)
        .set_device_authorization_url_option(device);
    if let Some(s) = &cfg.client_secret {
        c = c.set_client_secret(ClientSecret::new(s.expose().to_string()));
    }
    Ok(c)
}

/// The HTTP client for token endpoints: no redirects (RFC 6749 §3.2 endpoints answer directly,
/// and a redirect must not carry the refresh token elsewhere), bounded time.
pub fn http_client() -> Result<oauth2::reqwest::Client, TokenError> {
    oauth2::reqwest::Client::builder()
        .redirect(oauth2::reqwest::redirect::Policy::none())
        .connect_timeout(Duration::from_secs(15))
        .timeout(Duration::from_secs(30))
        .build()
        .map_err(|e| TokenError::Config(format!("HTTP client: {}", crate::outbound::transport::error_chain(&e))))
}

fn scopes(cfg: &OAuth2) -> Vec<Scope> {
    cfg.scopes.iter().map(|s| Scope::new(s.clone())).collect()
}

/// The error of a token request, without the response body (it may hold a token).
fn request_error<RE: std::error::Error + 'static>(e: RequestTokenError<RE, oauth2::basic::BasicErrorResponse>) -> TokenError {
    match e {
        RequestTokenError::ServerResponse(r) => {
            let what = match r.error_description() {
                Some(d) => format!("{}: {}", r.error(), one_line(d)),
                None => r.error().to_string(),
            };
            match r.error() {
                BasicErrorResponseType::InvalidGrant => TokenError::Revoked(what),
                _ => TokenError::Config(format!("the token endpoint refused the request ({what})")),
            }
        }
        RequestTokenError::Request(e) => TokenError::Network(crate::outbound::transport::error_chain(&e)),
        RequestTokenError::Parse(e, _body) => TokenError::Network(format!("unreadable answer: {}", one_line(&e.to_string()))),
        RequestTokenError::Other(m) => TokenError::Network(one_line(&m)),
    }
}

fn one_line(s: &str) -> String {
    s.chars().filter(|c| !c.is_control()).take(300).collect()
}

/// Read the refresh token file.
pub fn read_refresh_token(cfg: &OAuth2) -> Result<Secret, TokenError> {
    let login = login_hint(cfg);
    match std::fs::read_to_string(&cfg.refresh_token_file) {
        Ok(s) if !s.trim().is_empty() => Ok(Secret::new(s.trim().to_string())),
        Ok(_) => Err(TokenError::Config(format!("{} is empty: run `{login}`", cfg.refresh_token_file.display()))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(TokenError::Config(format!("no refresh token yet ({} missing): run `{login}`", cfg.refresh_token_file.display()))),
        Err(e) => Err(TokenError::Config(format!("cannot read {}: {e}", cfg.refresh_token_file.display()))),
    }
}

/// The command that gets this config's first refresh token.
pub fn login_hint(cfg: &OAuth2) -> String {
    login_command(&cfg.name)
}

/// `postdesk oauth login --mailbox NAME` for `mailboxes.NAME`, `… --outbound` for `outbound`.
pub fn login_command(name: &str) -> String {
    match name.strip_prefix("mailboxes.") {
        Some(m) => format!("postdesk oauth login --mailbox {m}"),
        None => "postdesk oauth login --outbound".to_string(),
    }
}

/// Replace the refresh token file atomically: a 0600 temp file in the same 0700 folder,
/// written and synced, renamed over the old one, the folder synced. A crash leaves the old or
/// the new token, never half of one.
pub fn save_refresh_token(path: &Path, token: &Secret) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let dir = path.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
    crate::fsmode::private_dir(dir)?;
    let tmp = dir.join(format!(".{}.{}.{:x}", path.file_name().and_then(|n| n.to_str()).unwrap_or("refresh"), std::process::id(), rand::random::<u64>()));
    let result = (|| {
        let mut f = std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(&tmp)?;
        f.write_all(token.expose().as_bytes())?;
        f.write_all(b"\n")?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)?;
        std::fs::File::open(dir)?.sync_all()
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

/// One refresh: the stored refresh token → a new access token; a rotated refresh token is saved
/// before the access token is handed out. The function the lead's `status`/`check --connect`
/// use; the daemon goes through [`TokenSource`], which caches.
pub async fn refresh(cfg: &OAuth2, http: &oauth2::reqwest::Client, now: OffsetDateTime) -> Result<AccessToken, TokenError> {
    let refresh = read_refresh_token(cfg)?;
    let client = client(cfg)?;
    let rt = RefreshToken::new(refresh.expose().to_string());
    let resp = client.exchange_refresh_token(&rt).add_scopes(scopes(cfg)).request_async(http).await.map_err(request_error)?;
    if let Some(new) = resp.refresh_token()
        && new.secret() != refresh.expose()
    {
        save_refresh_token(&cfg.refresh_token_file, &Secret::new(new.secret().clone()))
            .map_err(|e| TokenError::Config(format!("cannot save the rotated refresh token to {}: {e}", cfg.refresh_token_file.display())))?;
        tracing::info!(oauth = %cfg.name, "refresh token rotated and saved");
    }
    let lifetime = resp.expires_in().filter(|d| !d.is_zero()).unwrap_or(DEFAULT_LIFETIME);
    Ok(AccessToken {
        secret: Secret::new(resp.access_token().secret().clone()),
        obtained_at: now,
        expires_at: now + time::Duration::try_from(lifetime).unwrap_or(time::Duration::HOUR),
        refresh_at: refresh_moment(now, lifetime),
    })
}

/// A fresh access token for one mailbox or outbound config, with the real clock: for commands
/// (`status`, `check --connect`). Typed errors say whether an admin must act.
pub async fn fresh_access_token(cfg: &OAuth2) -> Result<AccessToken, TokenError> {
    use crate::clock::Clock;
    refresh(cfg, &http_client()?, crate::clock::SystemClock.now()).await
}

/// Told about each refresh and failure (the daemon records them and alerts admins once).
pub trait TokenEvents: Send + Sync {
    fn refreshed(&self, name: &str, token: &AccessToken);
    fn failed(&self, name: &str, error: &TokenError);
}

/// The access tokens of one mailbox (or of outbound SMTP): handed out from the cache while
/// they are young, refreshed once they reach [`AccessToken::refresh_at`].
pub struct TokenSource {
    cfg: OAuth2,
    clock: SharedClock,
    http: oauth2::reqwest::Client,
    cached: tokio::sync::Mutex<Option<AccessToken>>,
    events: Option<Arc<dyn TokenEvents>>,
}

impl std::fmt::Debug for TokenSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "TokenSource({})", self.cfg.name)
    }
}

impl TokenSource {
    pub fn new(cfg: OAuth2, clock: SharedClock, events: Option<Arc<dyn TokenEvents>>) -> Result<TokenSource, TokenError> {
        Ok(TokenSource { cfg, clock, http: http_client()?, cached: tokio::sync::Mutex::new(None), events })
    }

    pub fn config(&self) -> &OAuth2 {
        &self.cfg
    }

    /// A token good for a login now.
    pub async fn token(&self) -> Result<AccessToken, TokenError> {
        let mut cached = self.cached.lock().await;
        let now = self.clock.now();
        if let Some(t) = cached.as_ref()
            && now < t.refresh_at
        {
            return Ok(t.clone());
        }
        match refresh(&self.cfg, &self.http, now).await {
            Ok(t) => {
                tracing::debug!(oauth = %self.cfg.name, expires_at = %crate::clock::rfc3339(t.expires_at), "access token refreshed");
                if let Some(e) = &self.events {
                    e.refreshed(&self.cfg.name, &t);
                }
                *cached = Some(t.clone());
                Ok(t)
            }
            Err(err) => {
                *cached = None;
                if let Some(e) = &self.events {
                    e.failed(&self.cfg.name, &err);
                }
                Err(err)
            }
        }
    }

    /// Forget the cached token (the server refused it at login).
    pub async fn forget(&self) {
        *self.cached.lock().await = None;
    }

    /// The refresh token file's modification time: a new `postdesk oauth login` changes it.
    pub fn refresh_file_stamp(&self) -> Option<std::time::SystemTime> {
        std::fs::metadata(&self.cfg.refresh_token_file).and_then(|m| m.modified()).ok()
    }
}

// ---------------------------------------------------------------------------------------------
// Device authorization grant (RFC 8628), for `postdesk oauth login`.

/// What the user must do to approve the login.
#[derive(Debug, Clone)]
pub struct DevicePrompt {
    pub verification_uri: String,
    pub user_code: String,
    pub verification_uri_complete: Option<String>,
    pub expires_in: Duration,
}

/// Run the device grant: ask for a code, `show` it to the user, poll the token endpoint at the
/// server's interval (RFC 8628 §3.5, `slow_down` honoured) until approved, denied or expired,
/// and store the refresh token (0600, atomically).
pub async fn device_login(cfg: &OAuth2, show: impl FnOnce(&DevicePrompt)) -> Result<(), TokenError> {
    let http = http_client()?;
    let client = client(cfg)?;
    let request = client
        .exchange_device_code()
        .map_err(|_| TokenError::Config(format!("{}: no device authorization endpoint (set device_url)", cfg.name)))?
        .add_scopes(scopes(cfg));
    let details: StandardDeviceAuthorizationResponse = request.request_async(&http).await.map_err(request_error)?;
    show(&DevicePrompt {
        verification_uri: details.verification_uri().to_string(),
        user_code: details.user_code().secret().clone(),
        verification_uri_complete: details.verification_uri_complete().map(|u| u.secret().clone()),
        expires_in: details.expires_in(),
    });
    let token = client.exchange_device_access_token(&details).request_async(&http, tokio::time::sleep, None).await.map_err(|e| match e {
        RequestTokenError::ServerResponse(r) => {
            let what = r.error().to_string();
            match r.error() {
                DeviceCodeErrorResponseType::AccessDenied => TokenError::Revoked(format!("{what}: the login was denied")),
                DeviceCodeErrorResponseType::ExpiredToken => TokenError::Revoked(format!("{what}: the code expired before it was entered")),
                _ => TokenError::Config(format!("the token endpoint refused the device grant ({what})")),
            }
        }
        RequestTokenError::Request(e) => TokenError::Network(crate::outbound::transport::error_chain(&e)),
        RequestTokenError::Parse(e, _) => TokenError::Network(format!("unreadable answer: {}", one_line(&e.to_string()))),
        RequestTokenError::Other(m) => TokenError::Network(one_line(&m)),
    })?;
    let Some(refresh) = token.refresh_token() else {
        return Err(TokenError::Config("the provider sent no refresh token (Microsoft needs the offline_access scope)".into()));
    };
    save_refresh_token(&cfg.refresh_token_file, &Secret::new(refresh.secret().clone()))
        .map_err(|e| TokenError::Config(format!("cannot save the refresh token to {}: {e}", cfg.refresh_token_file.display())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sasl_responses() {
        assert_eq!(xoauth2("support@example.com", "ya29.tok"), "user=support@example.com\x01auth=Bearer ya29.tok\x01\x01");
        assert_eq!(oauthbearer("support@example.com", "ya29.tok"), "n,a=support@example.com,\x01auth=Bearer ya29.tok\x01\x01");
        // RFC 5801 §4: `,` and `=` in the authzid are escaped.
        assert_eq!(oauthbearer("a,b=c@x", "t"), "n,a=a=2Cb=3Dc@x,\x01auth=Bearer t\x01\x01");
        assert_eq!(Mechanism::OAuthBearer.response("u", "t"), oauthbearer("u", "t"));
    }

    #[test]
    fn mechanism_choice_prefers_xoauth2() {
        assert_eq!(Mechanism::choose(["PLAIN", "OAUTHBEARER", "XOAUTH2"]), Some(Mechanism::XOAuth2));
        assert_eq!(Mechanism::choose(["plain", "oauthbearer"]), Some(Mechanism::OAuthBearer));
        assert_eq!(Mechanism::choose(["PLAIN", "LOGIN"]), None);
    }

    #[test]
    fn authenticator_answers_once_then_ends_an_error_challenge() {
        use async_imap::Authenticator as _;
        let mut a = Authenticator::new(Mechanism::XOAuth2, "u", &Secret::new("t"));
        assert_eq!(a.process(b""), "user=u\x01auth=Bearer t\x01\x01");
        assert_eq!(a.process(b"{\"status\":\"401\"}"), "");
        // RFC 7628 §3.2.3: after the server's error challenge the client sends %x01.
        let mut a = Authenticator::new(Mechanism::OAuthBearer, "u", &Secret::new("t"));
        assert_eq!(a.process(b""), "n,a=u,\x01auth=Bearer t\x01\x01");
        assert_eq!(a.process(b"{\"status\":\"invalid_token\"}"), "\x01");
    }

    #[test]
    fn refresh_before_expiry() {
        let t0 = OffsetDateTime::from_unix_timestamp(1_000_000).unwrap();
        assert_eq!(refresh_moment(t0, Duration::from_secs(3600)) - t0, time::Duration::seconds(3540));
        assert_eq!(refresh_moment(t0, Duration::from_secs(4)) - t0, time::Duration::milliseconds(3200));
        assert_eq!(refresh_moment(t0, Duration::from_secs(100)) - t0, time::Duration::seconds(80));
    }

    #[test]
    fn errors_never_show_secrets_and_say_who_acts() {
        assert!(TokenError::Revoked("invalid_grant".into()).needs_admin());
        assert!(TokenError::Config("x".into()).needs_admin());
        assert!(!TokenError::Network("refused".into()).needs_admin());
        assert!(!format!("{:?}", AccessToken {
            secret: Secret::new("ya29.secret"),
            obtained_at: OffsetDateTime::UNIX_EPOCH,
            expires_at: OffsetDateTime::UNIX_EPOCH,
            refresh_at: OffsetDateTime::UNIX_EPOCH,
        })
        .contains("ya29"));
    }

    #[test]
    fn refresh_token_saved_atomically_0600() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("oauth/support.refresh");
        save_refresh_token(&path, &Secret::new("one")).unwrap();
        save_refresh_token(&path, &Secret::new("two")).unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "two\n");
        assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        assert_eq!(std::fs::metadata(path.parent().unwrap()).unwrap().permissions().mode() & 0o777, 0o700);
        assert_eq!(std::fs::read_dir(path.parent().unwrap()).unwrap().count(), 1, "no temp files left");
    }
}
