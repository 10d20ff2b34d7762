//! Keystone token validation, as keystonemiddleware's auth_token does it:
//! the controller signs in with its own service credentials
//! (`[keystone_authtoken]`), then asks Keystone about each caller's token
//! (`GET /v3/auth/tokens` with `X-Subject-Token`). Answers are cached until
//! the token expires or for five minutes, whichever comes first, so a busy
//! client costs Keystone one validation per token, not one per request.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use axum::http::{HeaderMap, HeaderValue, Method, Request, StatusCode};
use bytes::Bytes;
use futures_util::future::BoxFuture;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde_json::{Value, json};
use tokio::sync::Mutex;

use crate::api::Authenticate;
use crate::api::error::{ApiError, ApiResult};
use crate::auth::Context;
use crate::config::KeystoneAuthtoken;

/// How long a validated token is trusted without asking again.
const CACHE_TIME: Duration = Duration::from_secs(300);
/// Entries kept at most; expired ones are dropped first.
const CACHE_SIZE: usize = 10_000;

type Https = hyper_rustls::HttpsConnector<HttpConnector>;

#[derive(Debug)]
pub struct Keystone {
    settings: KeystoneAuthtoken,
    client: Client<Https, Full<Bytes>>,
    service_token: Mutex<Option<(String, Instant)>>,
    cache: Mutex<HashMap<String, (Context, Instant)>>,
}

#[derive(Debug, thiserror::Error)]
enum KeystoneError {
    #[error("cannot reach Keystone at {url}: {reason}")]
    Unreachable { url: String, reason: String },
    #[error("Keystone refused the service credentials: {0}")]
    ServiceAuth(StatusCode),
    #[error("unexpected answer from Keystone: {0}")]
    Protocol(String),
}

impl Keystone {
    pub fn new(mut settings: KeystoneAuthtoken) -> anyhow::Result<Keystone> {
        // keystoneauth takes auth_url with or without the version; we speak v3.
        if let Some(base) = settings.auth_url.strip_suffix("/v3") {
            settings.auth_url = base.to_owned();
        }
        let https =
            hyper_rustls::HttpsConnectorBuilder::new().with_native_roots()?.https_or_http().enable_http1().build();
        let client = Client::builder(TokioExecutor::new()).pool_idle_timeout(Duration::from_secs(30)).build(https);
        Ok(Keystone { settings, client, service_token: Mutex::new(None), cache: Mutex::new(HashMap::new()) })
    }

    async fn send(
        &self,
        method: Method,
        path: &str,
        headers: &[(&str, &str)],
        body: Option<Value>,
    ) -> Result<(StatusCode, HeaderMap, Value), KeystoneError> {
        let url = format!("{}{path}", self.settings.auth_url);
        let mut req = Request::builder().method(method).uri(&url).header("accept", "application/json");
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let body = match body {
            Some(b) => {
                req = req.header("content-type", "application/json");
                Full::new(Bytes::from(b.to_string()))
            }
            None => Full::new(Bytes::new()),
        };
        let req = req.body(body).map_err(|e| KeystoneError::Protocol(e.to_string()))?;
        let unreachable = |reason: String| KeystoneError::Unreachable { url: url.clone(), reason };
        let resp = tokio::time::timeout(Duration::from_secs(10), self.client.request(req))
            .await
            .map_err(|_| unreachable("timed out".into()))?
            .map_err(|e| unreachable(e.to_string()))?;
        let (parts, body) = resp.into_parts();
        let bytes = body.collect().await.map_err(|e| unreachable(e.to_string()))?.to_bytes();
        let value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        Ok((parts.status, parts.headers, value))
    }

    /// The controller's own token, signing in again when it is near expiry.
    async fn service_token(&self, renew: bool) -> Result<String, KeystoneError> {
        let mut cached = self.service_token.lock().await;
        if !renew
            && let Some((token, until)) = cached.as_ref()
            && Instant::now() < *until
        {
            return Ok(token.clone());
        }
        let s = &self.settings;
        let body = json!({"auth": {
            "identity": {"methods": ["password"], "password": {"user": {
                "name": s.username, "password": s.password, "domain": {"name": s.user_domain_name}}}},
            "scope": {"project": {"name": s.project_name, "domain": {"name": s.project_domain_name}}},
        }});
        let (status, headers, value) = self.send(Method::POST, "/v3/auth/tokens", &[], Some(body)).await?;
        if status != StatusCode::CREATED {
            return Err(KeystoneError::ServiceAuth(status));
        }
        let token = headers
            .get("x-subject-token")
            .and_then(|v| v.to_str().ok())
            .ok_or_else(|| KeystoneError::Protocol("no X-Subject-Token in the sign-in answer".into()))?
            .to_owned();
        let until = expiry(&value["token"]).min(Instant::now() + Duration::from_secs(3600));
        // Renew a minute early so a request never carries an expiring token.
        *cached = Some((token.clone(), until.checked_sub(Duration::from_secs(60)).unwrap_or(until)));
        Ok(token)
    }

    async fn validate(&self, token: &str) -> ApiResult<Context> {
        {
            let cache = self.cache.lock().await;
            if let Some((ctx, until)) = cache.get(token)
                && Instant::now() < *until
            {
                return Ok(ctx.clone());
            }
        }
        let internal = |e: KeystoneError| ApiError::Unavailable(format!("Identity service unavailable: {e}"));
        let mut renew = false;
        let (status, value) = loop {
            let service = self.service_token(renew).await.map_err(internal)?;
            let (status, _, value) = self
                .send(Method::GET, "/v3/auth/tokens", &[("x-auth-token", &service), ("x-subject-token", token)], None)
                .await
                .map_err(internal)?;
            if status == StatusCode::UNAUTHORIZED && !renew {
                renew = true;
                continue;
            }
            break (status, value);
        };
        match status {
            StatusCode::OK => {}
            StatusCode::NOT_FOUND | StatusCode::UNAUTHORIZED => return Err(ApiError::Unauthorized),
            other => return Err(internal(KeystoneError::Protocol(format!("token validation answered {other}")))),
        }
        let t = &value["token"];
        let roles = t["roles"]
            .as_array()
            .map(|r| r.iter().filter_map(|r| r["name"].as_str().map(str::to_owned)).collect())
            .unwrap_or_default();
        let ctx = Context::from_roles(
            t["project"]["id"].as_str().map(str::to_owned),
            t["user"]["id"].as_str().map(str::to_owned),
            roles,
        );
        let until = expiry(t).min(Instant::now() + CACHE_TIME);
        let mut cache = self.cache.lock().await;
        if cache.len() >= CACHE_SIZE {
            let now = Instant::now();
            cache.retain(|_, (_, until)| *until > now);
            if cache.len() >= CACHE_SIZE {
                cache.clear();
            }
        }
        cache.insert(token.to_owned(), (ctx.clone(), until));
        Ok(ctx)
    }

    /// keystonemiddleware's answer to a request without a valid token.
    pub fn www_authenticate(&self) -> HeaderValue {
        let uri = self.settings.www_authenticate_uri.as_deref().unwrap_or(&self.settings.auth_url);
        HeaderValue::from_str(&format!("Keystone uri=\"{uri}\"")).unwrap_or(HeaderValue::from_static("Keystone"))
    }
}

/// When a token's `expires_at` falls, as an instant (now when unreadable).
fn expiry(token: &Value) -> Instant {
    let parsed = token["expires_at"]
        .as_str()
        .and_then(|s| time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339).ok());
    match parsed {
        Some(at) => {
            let left = at - time::OffsetDateTime::now_utc();
            Instant::now() + Duration::try_from(left).unwrap_or(Duration::ZERO)
        }
        None => Instant::now(),
    }
}

impl Authenticate for Keystone {
    fn authenticate<'a>(&'a self, headers: &'a HeaderMap) -> BoxFuture<'a, ApiResult<Context>> {
        Box::pin(async move {
            let token = headers.get("x-auth-token").and_then(|v| v.to_str().ok()).filter(|t| !t.is_empty());
            match token {
                Some(token) => self.validate(token).await,
                None => Err(ApiError::Unauthorized),
            }
        })
    }

    fn challenge(&self) -> Option<HeaderValue> {
        Some(self.www_authenticate())
    }
}
