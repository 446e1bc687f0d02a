//! OpenStack Swift: objects in one container, optionally under a prefix.
//!
//! Authentication comes from the environment the OpenStack CLI and restic read:
//! Keystone v3 (password or application credential), v1 (tempauth/swauth:
//! `ST_AUTH`, `ST_USER`, `ST_KEY`) or a pre-made token (`OS_STORAGE_URL` with
//! `OS_AUTH_TOKEN`). Writes carry the MD5 `ETag` (Swift rejects a corrupted
//! transfer) and `If-None-Match: *` (an existing object is never overwritten).
//! An expired or revoked token (401) is renewed once per request; tokens are also
//! renewed shortly before they expire. Other retries belong to the retry layer.

use std::ops::Range;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bytes::Bytes;
use md5::Digest as _;
use reqwest::{StatusCode, header};
use serde_json::json;
use tokio::sync::Mutex;

use super::{BResult, Backend, BackendError, FileInfo, FileKind, Handle};
use crate::id::Id;

/// How to obtain a token and the storage URL.
#[derive(Clone)]
enum Auth {
    /// v1 (tempauth, swauth): GET the auth URL with user and key headers.
    V1 { url: String, user: String, key: String },
    /// Keystone v3: POST `/auth/tokens`, endpoint from the catalog.
    V3 { url: String, body: serde_json::Value, region: Option<String>, interface: String },
    /// A token made elsewhere, with its storage URL.
    Token { storage_url: String, token: String },
}

struct Session {
    token: String,
    storage_url: String,
    /// Renew after this instant (shortly before the token expires).
    renew_at: Option<Instant>,
}

/// Settings from `-o swift.*` options.
#[derive(Debug, Clone)]
pub struct SwiftOptions {
    /// Requests in flight (`swift.connections`, default 8).
    pub connections: usize,
    /// Storage policy for a container made by `init` (`swift.storage-policy`).
    pub storage_policy: Option<String>,
    /// Objects per listing page (`swift.page-limit`, at most 10,000).
    pub page_limit: usize,
}

impl Default for SwiftOptions {
    fn default() -> Self {
        SwiftOptions { connections: 8, storage_policy: None, page_limit: 10_000 }
    }
}

/// A repository in a Swift container.
pub struct SwiftBackend {
    client: reqwest::Client,
    auth: Auth,
    container: String,
    /// Empty, or ends with `/`.
    prefix: String,
    opts: SwiftOptions,
    session: Mutex<Option<Session>>,
}

fn env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}

/// Percent-encodes everything but unreserved characters and `/`.
fn encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~/".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn permanent(op: &'static str, name: impl Into<String>, msg: impl Into<String>) -> BackendError {
    BackendError::Permanent { op, name: name.into(), msg: msg.into() }
}

fn transient(op: &'static str, name: impl Into<String>, msg: impl Into<String>) -> BackendError {
    BackendError::Transient { op, name: name.into(), msg: msg.into(), retry_after: None }
}

/// Maps a transport error (no HTTP status) for `op` on `name`.
fn transport(op: &'static str, name: &str, e: &reqwest::Error) -> BackendError {
    // reqwest's message may include the URL, never credentials (they travel in headers).
    let mut msg = e.to_string();
    let mut src = std::error::Error::source(e);
    while let Some(s) = src {
        msg = format!("{msg}: {s}");
        src = s.source();
    }
    if e.is_builder() { permanent(op, name, msg) } else { transient(op, name, msg) }
}

/// Maps an unexpected HTTP status.
fn status_error(op: &'static str, name: &str, status: StatusCode, body: &str) -> BackendError {
    let detail = body.trim().chars().take(200).collect::<String>();
    let msg = if detail.is_empty() { status.to_string() } else { format!("{status}: {detail}") };
    if op == "authenticate" && status == StatusCode::NOT_FOUND {
        // Not a missing repository: the auth URL itself is wrong.
        return permanent(op, name, format!("{msg} (check the auth URL)"));
    }
    match status.as_u16() {
        404 => BackendError::NotFound(name.to_string()),
        413 => permanent(op, name, format!("quota exceeded ({msg})")),
        401 | 403 => permanent(op, name, format!("access denied ({msg})")),
        408 | 409 | 422 | 425 | 429 | 498 | 500..=599 => transient(op, name, msg),
        _ => permanent(op, name, msg),
    }
}

impl SwiftBackend {
    /// Parses `CONTAINER[:/PREFIX]` and reads credentials from the environment.
    pub fn from_env(spec: &str, opts: SwiftOptions) -> Result<SwiftBackend, BackendError> {
        let (container, prefix) = match spec.split_once(':') {
            Some((c, p)) => (c, p.trim_matches('/')),
            None => (spec, ""),
        };
        if container.is_empty() || container.contains('/') {
            return Err(permanent("open", spec, "expected swift:CONTAINER or swift:CONTAINER:/PREFIX"));
        }
        let auth = auth_from_env().map_err(|m| permanent("authenticate", "swift", m))?;
        let client = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(20))
            .read_timeout(Duration::from_secs(120))
            .pool_max_idle_per_host(opts.connections.max(1))
            .build()
            .map_err(|e| permanent("open", "swift", e.to_string()))?;
        Ok(SwiftBackend {
            client,
            auth,
            container: container.to_string(),
            prefix: if prefix.is_empty() { String::new() } else { format!("{prefix}/") },
            opts: SwiftOptions { page_limit: opts.page_limit.clamp(1, 10_000), ..opts },
            session: Mutex::new(None),
        })
    }

    /// A valid session, authenticating if there is none, it is stale, or `renew`.
    async fn session(&self, renew: bool) -> BResult<(String, String)> {
        let mut s = self.session.lock().await;
        let fresh = s.as_ref().is_some_and(|s| s.renew_at.is_none_or(|t| Instant::now() < t));
        if renew || !fresh {
            *s = Some(self.authenticate().await?);
        }
        let s = s.as_ref().expect("just set");
        Ok((s.token.clone(), s.storage_url.clone()))
    }

    async fn authenticate(&self) -> BResult<Session> {
        match &self.auth {
            Auth::Token { storage_url, token } => Ok(Session {
                token: token.clone(),
                storage_url: storage_url.trim_end_matches('/').into(),
                renew_at: None,
            }),
            Auth::V1 { url, user, key } => {
                let r = self
                    .client
                    .get(url)
                    .header("X-Auth-User", user)
                    .header("X-Auth-Key", key)
                    .send()
                    .await
                    .map_err(|e| transport("authenticate", url, &e))?;
                if !r.status().is_success() {
                    return Err(Self::fail("authenticate", url, r).await);
                }
                let h = |n: &str| r.headers().get(n).and_then(|v| v.to_str().ok()).map(str::to_string);
                let (Some(storage_url), Some(token)) = (h("X-Storage-Url"), h("X-Auth-Token")) else {
                    return Err(permanent("authenticate", url, "the auth reply has no storage URL or token"));
                };
                let renew_at = h("X-Auth-Token-Expires")
                    .and_then(|s| s.parse::<u64>().ok())
                    .map(|secs| Instant::now() + renew_after(secs as i64));
                Ok(Session { token, storage_url: storage_url.trim_end_matches('/').into(), renew_at })
            }
            Auth::V3 { url, body, region, interface } => {
                let tokens = format!("{}/auth/tokens", url.trim_end_matches('/'));
                let r = self
                    .client
                    .post(&tokens)
                    .json(body)
                    .send()
                    .await
                    .map_err(|e| transport("authenticate", &tokens, &e))?;
                if !r.status().is_success() {
                    return Err(Self::fail("authenticate", &tokens, r).await);
                }
                let token = r.headers().get("X-Subject-Token").and_then(|v| v.to_str().ok()).map(str::to_string);
                let text = r.text().await.unwrap_or_default();
                let token =
                    token.ok_or_else(|| permanent("authenticate", &tokens, "Keystone sent no X-Subject-Token"))?;
                let v: serde_json::Value = serde_json::from_str(&text)
                    .map_err(|e| permanent("authenticate", &tokens, format!("unreadable Keystone reply: {e}")))?;
                let storage_url = catalog_endpoint(&v, region.as_deref(), interface)
                    .map_err(|m| permanent("authenticate", &tokens, m))?;
                let renew_at = v["token"]["expires_at"]
                    .as_str()
                    .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
                    .map(|t| {
                        Instant::now() + renew_after((t.with_timezone(&chrono::Utc) - chrono::Utc::now()).num_seconds())
                    });
                Ok(Session { token, storage_url: storage_url.trim_end_matches('/').into(), renew_at })
            }
        }
    }

    fn object_path(&self, h: &Handle) -> String {
        format!("{}/{}", encode(&self.container), encode(&format!("{}{}", self.prefix, h.path())))
    }

    /// Sends a request built by `build` (given the storage URL); renews the token
    /// once on 401. Returns the response whatever its status.
    async fn send(
        &self,
        op: &'static str,
        name: &str,
        build: impl Fn(&str, &str) -> reqwest::RequestBuilder,
    ) -> BResult<reqwest::Response> {
        let mut renew = false;
        loop {
            let (token, storage_url) = self.session(renew).await?;
            let r = build(&storage_url, &token).send().await.map_err(|e| transport(op, name, &e))?;
            if r.status() == StatusCode::UNAUTHORIZED && !renew && !matches!(self.auth, Auth::Token { .. }) {
                renew = true;
                continue;
            }
            return Ok(r);
        }
    }

    async fn fail(op: &'static str, name: &str, r: reqwest::Response) -> BackendError {
        let status = r.status();
        let asked = r.headers().get(header::RETRY_AFTER).and_then(|v| v.to_str().ok()).and_then(retry_after);
        let mut body = r.text().await.unwrap_or_default();
        // Keystone's message says what is wrong ("The request you have made requires authentication.").
        if let Some(m) = serde_json::from_str::<serde_json::Value>(&body)
            .ok()
            .and_then(|v| v["error"]["message"].as_str().map(str::to_string))
        {
            body = m;
        }
        match status_error(op, name, status, &body) {
            BackendError::Transient { op, name, msg, .. } => {
                BackendError::Transient { op, name, msg, retry_after: asked }
            }
            e => e,
        }
    }
}

/// When to renew a token that expires in `life` seconds: two minutes before, or
/// after three quarters of its life if it is short.
fn renew_after(life: i64) -> Duration {
    let life = life.max(0) as u64;
    Duration::from_secs(life - (life / 4).min(120))
}

/// Parses a `Retry-After` value: delay seconds or an HTTP date.
fn retry_after(v: &str) -> Option<Duration> {
    if let Ok(secs) = v.trim().parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let at = chrono::DateTime::parse_from_rfc2822(v.trim()).ok()?;
    Some((at.with_timezone(&chrono::Utc) - chrono::Utc::now()).to_std().unwrap_or_default())
}

/// Finds the object-store endpoint in a Keystone v3 token's catalog.
fn catalog_endpoint(v: &serde_json::Value, region: Option<&str>, interface: &str) -> Result<String, String> {
    let catalog = v["token"]["catalog"].as_array().ok_or("the token has no service catalog")?;
    let store = catalog
        .iter()
        .find(|s| s["type"] == "object-store")
        .ok_or("the service catalog has no object-store (Swift) endpoint")?;
    let eps = store["endpoints"].as_array().ok_or("the object-store entry has no endpoints")?;
    let mut regions: Vec<&str> = eps.iter().filter_map(|e| e["region_id"].as_str().or(e["region"].as_str())).collect();
    regions.sort_unstable();
    regions.dedup();
    eps.iter()
        .find(|e| {
            e["interface"] == interface
                && region.is_none_or(|r| e["region_id"].as_str() == Some(r) || e["region"].as_str() == Some(r))
        })
        .and_then(|e| e["url"].as_str().map(str::to_string))
        .ok_or_else(|| match region {
            Some(r) => {
                format!("no {interface} object-store endpoint in region {r:?} (regions: {})", regions.join(", "))
            }
            None => format!("no {interface} object-store endpoint"),
        })
}

/// Reads the credentials from the environment (openrc variables, v1, or a token).
fn auth_from_env() -> Result<Auth, String> {
    if let (Some(storage_url), Some(token)) = (env("OS_STORAGE_URL"), env("OS_AUTH_TOKEN")) {
        return Ok(Auth::Token { storage_url, token });
    }
    if let (Some(url), Some(user), Some(key)) = (env("ST_AUTH"), env("ST_USER"), env("ST_KEY")) {
        return Ok(Auth::V1 { url, user, key });
    }
    let Some(mut url) = env("OS_AUTH_URL") else {
        return Err("no Swift credentials: source an openrc file (OS_AUTH_URL, ...), or set ST_AUTH/ST_USER/ST_KEY, \
                    or OS_STORAGE_URL with OS_AUTH_TOKEN"
            .into());
    };
    let trimmed = url.trim_end_matches('/');
    url = if trimmed.ends_with("/v3") { trimmed.to_string() } else { format!("{trimmed}/v3") };
    let interface = env("OS_INTERFACE").unwrap_or_else(|| "public".into()).trim_end_matches("URL").to_string();
    let region = env("OS_REGION_NAME");
    let domain = |id: &str, name: &str| match (env(id), env(name)) {
        (Some(id), _) => json!({"id": id}),
        (None, Some(name)) => json!({"name": name}),
        (None, None) => json!({"name": "Default"}),
    };
    let identity = if let Some(secret) = env("OS_APPLICATION_CREDENTIAL_SECRET") {
        let cred = match (env("OS_APPLICATION_CREDENTIAL_ID"), env("OS_APPLICATION_CREDENTIAL_NAME")) {
            (Some(id), _) => json!({"id": id, "secret": secret}),
            (None, Some(name)) => {
                let user = match (env("OS_USER_ID"), env("OS_USERNAME")) {
                    (Some(id), _) => json!({"id": id}),
                    (None, Some(n)) => json!({"name": n, "domain": domain("OS_USER_DOMAIN_ID", "OS_USER_DOMAIN_NAME")}),
                    (None, None) => return Err("OS_APPLICATION_CREDENTIAL_NAME needs OS_USERNAME or OS_USER_ID".into()),
                };
                json!({"name": name, "secret": secret, "user": user})
            }
            (None, None) => {
                return Err("OS_APPLICATION_CREDENTIAL_SECRET needs OS_APPLICATION_CREDENTIAL_ID or _NAME".into());
            }
        };
        // Application credentials carry their own project scope.
        return Ok(Auth::V3 {
            url,
            body: json!({"auth": {"identity": {"methods": ["application_credential"], "application_credential": cred}}}),
            region,
            interface,
        });
    } else {
        let password = env("OS_PASSWORD").ok_or("OS_AUTH_URL is set but OS_PASSWORD is not")?;
        let user = match (env("OS_USER_ID"), env("OS_USERNAME")) {
            (Some(id), _) => json!({"id": id, "password": password}),
            (None, Some(n)) => {
                json!({"name": n, "password": password, "domain": domain("OS_USER_DOMAIN_ID", "OS_USER_DOMAIN_NAME")})
            }
            (None, None) => return Err("OS_AUTH_URL is set but neither OS_USERNAME nor OS_USER_ID".into()),
        };
        json!({"methods": ["password"], "password": {"user": user}})
    };
    let project_domain = domain("OS_PROJECT_DOMAIN_ID", "OS_PROJECT_DOMAIN_NAME");
    let scope = match (env("OS_PROJECT_ID").or(env("OS_TENANT_ID")), env("OS_PROJECT_NAME").or(env("OS_TENANT_NAME"))) {
        (Some(id), _) => json!({"project": {"id": id}}),
        (None, Some(name)) => json!({"project": {"name": name, "domain": project_domain}}),
        (None, None) => return Err("OS_AUTH_URL is set but neither OS_PROJECT_NAME nor OS_PROJECT_ID".into()),
    };
    Ok(Auth::V3 { url, body: json!({"auth": {"identity": identity, "scope": scope}}), region, interface })
}

#[async_trait]
impl Backend for SwiftBackend {
    fn location(&self) -> String {
        if self.prefix.is_empty() {
            format!("swift:{}", self.container)
        } else {
            format!("swift:{}:/{}", self.container, self.prefix.trim_end_matches('/'))
        }
    }

    fn concurrency(&self) -> usize {
        self.opts.connections.max(1)
    }

    async fn create(&self) -> BResult<()> {
        let name = self.container.clone();
        let c = encode(&self.container);
        let r = self
            .send("create", &name, |url, t| self.client.head(format!("{url}/{c}")).header("X-Auth-Token", t))
            .await?;
        if r.status().is_success() {
            return Ok(());
        }
        if r.status() != StatusCode::NOT_FOUND {
            return Err(Self::fail("create", &name, r).await);
        }
        let policy = self.opts.storage_policy.clone();
        let r = self
            .send("create", &name, |url, t| {
                let mut b =
                    self.client.put(format!("{url}/{c}")).header("X-Auth-Token", t).header(header::CONTENT_LENGTH, 0);
                if let Some(p) = &policy {
                    b = b.header("X-Storage-Policy", p);
                }
                b
            })
            .await?;
        if r.status().is_success() { Ok(()) } else { Err(Self::fail("create", &name, r).await) }
    }

    async fn write(&self, h: &Handle, data: Bytes) -> BResult<()> {
        let (name, path) = (h.path(), self.object_path(h));
        let etag = hex::encode(md5::Md5::digest(&data));
        let r = self
            .send("write", &name, |url, t| {
                self.client
                    .put(format!("{url}/{path}"))
                    .header("X-Auth-Token", t)
                    .header(header::ETAG, &etag)
                    .header(header::IF_NONE_MATCH, "*")
                    .header(header::CONTENT_TYPE, "application/octet-stream")
                    .header(header::CONTENT_LENGTH, data.len())
                    .body(data.clone())
            })
            .await?;
        match r.status() {
            s if s.is_success() => Ok(()),
            StatusCode::PRECONDITION_FAILED => Err(BackendError::AlreadyExists(name)),
            StatusCode::NOT_FOUND => {
                Err(permanent("write", name, format!("container {:?} does not exist", self.container)))
            }
            StatusCode::UNPROCESSABLE_ENTITY => {
                Err(transient("write", name, "checksum mismatch: the upload was corrupted"))
            }
            _ => Err(Self::fail("write", &name, r).await),
        }
    }

    async fn read(&self, h: &Handle, range: Option<Range<u64>>) -> BResult<Bytes> {
        let (name, path) = (h.path(), self.object_path(h));
        if let Some(r) = &range
            && r.start >= r.end
        {
            if r.start > r.end {
                return Err(permanent("read", name, "empty or reversed range"));
            }
            // A zero-length range: the object must exist and be long enough.
            let head = self
                .send("read", &name, |url, t| self.client.head(format!("{url}/{path}")).header("X-Auth-Token", t))
                .await?;
            if !head.status().is_success() {
                return Err(Self::fail("read", &name, head).await);
            }
            let len = head.content_length().unwrap_or(0);
            return if r.end <= len {
                Ok(Bytes::new())
            } else {
                Err(permanent("read", name, "range is beyond the end"))
            };
        }
        let r = self
            .send("read", &name, |url, t| {
                let b = self.client.get(format!("{url}/{path}")).header("X-Auth-Token", t);
                match &range {
                    Some(r) => b.header(header::RANGE, format!("bytes={}-{}", r.start, r.end - 1)),
                    None => b,
                }
            })
            .await?;
        let status = r.status();
        if status == StatusCode::RANGE_NOT_SATISFIABLE {
            return Err(permanent("read", name, "range is beyond the end of the object"));
        }
        if !status.is_success() {
            return Err(Self::fail("read", &name, r).await);
        }
        let body = r.bytes().await.map_err(|e| transport("read", &name, &e))?;
        if let Some(want) = &range {
            // A server that ignores the range, or a short body, is an error.
            if status != StatusCode::PARTIAL_CONTENT || body.len() as u64 != want.end - want.start {
                return Err(permanent(
                    "read",
                    name,
                    format!("asked for {} bytes, got {} ({status})", want.end - want.start, body.len()),
                ));
            }
        }
        Ok(body)
    }

    async fn remove(&self, h: &Handle) -> BResult<()> {
        let (name, path) = (h.path(), self.object_path(h));
        let r = self
            .send("remove", &name, |url, t| self.client.delete(format!("{url}/{path}")).header("X-Auth-Token", t))
            .await?;
        if r.status().is_success() { Ok(()) } else { Err(Self::fail("remove", &name, r).await) }
    }

    async fn list(&self, kind: FileKind) -> BResult<Vec<FileInfo>> {
        let dir = format!("{}{}/", self.prefix, kind.dir());
        let c = encode(&self.container);
        let mut out = Vec::new();
        let mut marker = String::new();
        loop {
            let query = format!(
                "format=json&limit={}&prefix={}&marker={}",
                self.opts.page_limit,
                encode(&dir).replace('/', "%2F"),
                encode(&marker).replace('/', "%2F")
            );
            let r = self
                .send("list", kind.dir(), |url, t| {
                    self.client.get(format!("{url}/{c}?{query}")).header("X-Auth-Token", t)
                })
                .await?;
            if !r.status().is_success() {
                return Err(Self::fail("list", kind.dir(), r).await);
            }
            let page: Vec<serde_json::Value> =
                r.json().await.map_err(|e| transient("list", kind.dir(), format!("unreadable listing: {e}")))?;
            let Some(last) = page.last().and_then(|o| o["name"].as_str()) else { break };
            marker = last.to_string();
            for o in &page {
                let (Some(full), Some(size)) = (o["name"].as_str(), o["bytes"].as_u64()) else { continue };
                let name = full.rsplit('/').next().unwrap_or_default();
                let rel = &full[dir.len().min(full.len())..];
                // Data lives one level deeper (data/XX/ID); everything else directly in its folder.
                let depth_ok = if kind == FileKind::Pack { rel.matches('/').count() == 1 } else { !rel.contains('/') };
                if depth_ok && Id::is_valid_name(name) {
                    out.push(FileInfo { name: name.to_string(), size });
                }
            }
            if page.len() < self.opts.page_limit {
                break;
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn catalog_selection() {
        let v = json!({"token": {"catalog": [
            {"type": "identity", "endpoints": []},
            {"type": "object-store", "endpoints": [
                {"interface": "public", "region_id": "A", "url": "http://a/v1/KEY_p"},
                {"interface": "internal", "region_id": "A", "url": "http://a-int/v1/KEY_p"},
                {"interface": "public", "region_id": "B", "url": "http://b/v1/KEY_p"}
            ]}
        ]}});
        assert_eq!(catalog_endpoint(&v, Some("B"), "public").unwrap(), "http://b/v1/KEY_p");
        assert_eq!(catalog_endpoint(&v, Some("A"), "internal").unwrap(), "http://a-int/v1/KEY_p");
        assert_eq!(catalog_endpoint(&v, None, "public").unwrap(), "http://a/v1/KEY_p");
        let e = catalog_endpoint(&v, Some("C"), "public").unwrap_err();
        assert!(e.contains("region \"C\"") && e.contains("(regions: A, B)"), "{e}");
        assert!(catalog_endpoint(&json!({"token": {"catalog": []}}), None, "public").is_err());
        assert_eq!(encode("a b/c%"), "a%20b/c%25");
        assert_eq!(retry_after(" 7 "), Some(Duration::from_secs(7)));
        assert_eq!(retry_after("Thu, 01 Jan 1970 00:00:00 GMT"), Some(Duration::ZERO));
        assert_eq!(retry_after("soon"), None);
        assert_eq!(renew_after(3600), Duration::from_secs(3480));
        assert_eq!(renew_after(20), Duration::from_secs(15));
        assert_eq!(renew_after(-5), Duration::ZERO);
    }
}
