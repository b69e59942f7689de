//! The ARI REST client: the calls the dialer makes, typed. One `AriClient` is shared by the
//! whole process (it is cheap to clone; reqwest pools connections).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use reqwest::{Method, StatusCode};
use secrecy::{ExposeSecret, SecretString};
use serde::de::DeserializeOwned;
use serde::Serialize;
use url::Url;

use super::models::{Application, AsteriskInfo, Bridge, Channel, LiveRecording, Playback, RtpStats, Variable};

#[derive(Clone)]
pub struct AriClient {
    http: reqwest::Client,
    /// Ends with `/ari/`, so relative paths join under it.
    base: Url,
    username: String,
    password: SecretString,
    app: String,
    /// Requests in flight, shared by every clone: Asterisk refuses HTTP sessions past its
    /// `http.conf` `sessionlimit` (100 by default), and a burst of media checks and
    /// originates with hundreds of calls live went past it.
    in_flight: Arc<tokio::sync::Semaphore>,
}

/// At most this many ARI requests at once (the rest wait their turn), well under Asterisk's
/// default `sessionlimit` of 100, which the events websocket and the CLI's share too.
pub const MAX_REQUESTS_IN_FLIGHT: usize = 64;

impl std::fmt::Debug for AriClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AriClient")
            .field("base", &self.base.as_str())
            .field("username", &self.username)
            .field("app", &self.app)
            .finish_non_exhaustive()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum AriError {
    #[error("ARI {method} {path} answered {status}: {message}")]
    Status {
        method: Method,
        path: String,
        status: StatusCode,
        message: String,
    },
    #[error("ARI {method} {path} failed: {source}")]
    Transport {
        method: Method,
        path: String,
        source: reqwest::Error,
    },
    #[error("ARI {method} {path} answered with a body that does not match its model: {source}")]
    Decode {
        method: Method,
        path: String,
        source: serde_json::Error,
    },
    #[error("bad ARI URL {0:?}: it must be http(s)://host:port/ari")]
    BadUrl(String),
}

impl AriError {
    pub fn status(&self) -> Option<StatusCode> {
        match self {
            AriError::Status { status, .. } => Some(*status),
            _ => None,
        }
    }

    /// The channel or bridge is gone (already hung up, destroyed): callers usually treat this as done.
    pub fn is_not_found(&self) -> bool {
        self.status() == Some(StatusCode::NOT_FOUND)
    }

    /// The request never reached Asterisk (no connection): nothing it asked for happened.
    pub fn never_reached(&self) -> bool {
        matches!(self, AriError::Transport { source, .. } if source.is_connect())
    }

    /// Asterisk refused because the id is already in use: an originate retried with the same
    /// attempt id lands here instead of dialling twice.
    pub fn is_conflict(&self) -> bool {
        self.status() == Some(StatusCode::CONFLICT)
    }
}

/// Why we hang up a channel (ARI `reason`; Asterisk maps it to a Q.850 cause).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HangupReason {
    Normal,
    Busy,
    Congestion,
    NoAnswer,
    Timeout,
    Rejected,
    Unallocated,
    Failure,
}

impl HangupReason {
    fn as_str(self) -> &'static str {
        match self {
            HangupReason::Normal => "normal",
            HangupReason::Busy => "busy",
            HangupReason::Congestion => "congestion",
            HangupReason::NoAnswer => "no_answer",
            HangupReason::Timeout => "timeout",
            HangupReason::Rejected => "rejected",
            HangupReason::Unallocated => "unallocated",
            HangupReason::Failure => "failure",
        }
    }
}

/// `POST /channels`: dial an endpoint and hand the answered channel to our Stasis app.
#[derive(Debug, Clone, Default)]
pub struct Originate {
    /// `PJSIP/+79161234567@trunk`
    pub endpoint: String,
    /// Our id for the channel (the attempt id); Asterisk answers 409 if it exists.
    pub channel_id: Option<String>,
    pub app_args: Vec<String>,
    /// `"Name" <number>` or a bare number.
    pub caller_id: Option<String>,
    /// Seconds to ring before giving up.
    pub timeout_secs: Option<u32>,
    /// Channel variables and functions, e.g. `CDR(userfield)`.
    pub variables: BTreeMap<String, String>,
    pub other_channel_id: Option<String>,
    pub originator: Option<String>,
}

/// `POST /channels/create`: a channel that is not dialled until [`AriClient::dial`].
#[derive(Debug, Clone, Default)]
pub struct CreateChannel {
    pub endpoint: String,
    pub channel_id: Option<String>,
    pub app_args: Vec<String>,
    pub variables: BTreeMap<String, String>,
    pub originator: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BridgeType {
    /// Media flows between members: the customer–operator bridge.
    Mixing,
    /// Members hear hold audio, not each other: the operator's waiting room.
    Holding,
}

#[derive(Serialize)]
struct VariablesBody<'a> {
    variables: &'a BTreeMap<String, String>,
}

impl AriClient {
    /// `url` is the ARI root, such as `http://127.0.0.1:8088/ari`.
    pub fn new(url: &str, username: &str, password: SecretString, app: &str) -> Result<Self, AriError> {
        let mut base = Url::parse(url).map_err(|_| AriError::BadUrl(url.to_owned()))?;
        if !matches!(base.scheme(), "http" | "https") {
            return Err(AriError::BadUrl(url.to_owned()));
        }
        if !base.path().ends_with('/') {
            base.set_path(&format!("{}/", base.path()));
        }
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .connect_timeout(Duration::from_secs(3))
            .pool_idle_timeout(Duration::from_secs(30))
            .build()
            .expect("reqwest client with static settings");
        Ok(AriClient {
            http,
            base,
            username: username.to_owned(),
            password,
            app: app.to_owned(),
            in_flight: Arc::new(tokio::sync::Semaphore::new(MAX_REQUESTS_IN_FLIGHT)),
        })
    }

    pub fn app(&self) -> &str {
        &self.app
    }

    pub fn username(&self) -> &str {
        &self.username
    }

    pub fn password(&self) -> &SecretString {
        &self.password
    }

    pub fn base_url(&self) -> &Url {
        &self.base
    }

    /// A client for the same Asterisk under another Stasis application name.
    pub fn with_app(&self, app: &str) -> AriClient {
        AriClient {
            app: app.to_owned(),
            ..self.clone()
        }
    }

    // ---- channels ------------------------------------------------------------------------

    pub async fn originate(&self, req: &Originate) -> Result<Channel, AriError> {
        let mut query = vec![("endpoint", req.endpoint.clone()), ("app", self.app.clone())];
        push_opt(&mut query, "channelId", req.channel_id.clone());
        if !req.app_args.is_empty() {
            query.push(("appArgs", req.app_args.join(",")));
        }
        push_opt(&mut query, "callerId", req.caller_id.clone());
        push_opt(&mut query, "timeout", req.timeout_secs.map(|t| t.to_string()));
        push_opt(&mut query, "otherChannelId", req.other_channel_id.clone());
        push_opt(&mut query, "originator", req.originator.clone());
        let body = VariablesBody {
            variables: &req.variables,
        };
        self.call(Method::POST, "channels", &query, Some(&body)).await
    }

    pub async fn create_channel(&self, req: &CreateChannel) -> Result<Channel, AriError> {
        let mut query = vec![("endpoint", req.endpoint.clone()), ("app", self.app.clone())];
        push_opt(&mut query, "channelId", req.channel_id.clone());
        if !req.app_args.is_empty() {
            query.push(("appArgs", req.app_args.join(",")));
        }
        push_opt(&mut query, "originator", req.originator.clone());
        let body = VariablesBody {
            variables: &req.variables,
        };
        self.call(Method::POST, "channels/create", &query, Some(&body)).await
    }

    /// Dials a channel made by [`AriClient::create_channel`].
    pub async fn dial(
        &self,
        channel_id: &str,
        caller: Option<&str>,
        timeout_secs: Option<u32>,
    ) -> Result<(), AriError> {
        let mut query = Vec::new();
        push_opt(&mut query, "caller", caller.map(str::to_owned));
        push_opt(&mut query, "timeout", timeout_secs.map(|t| t.to_string()));
        self.call_empty(Method::POST, &format!("channels/{}/dial", seg(channel_id)), &query)
            .await
    }

    pub async fn hangup(&self, channel_id: &str, reason: HangupReason) -> Result<(), AriError> {
        let query = [("reason", reason.as_str().to_owned())];
        self.call_empty(Method::DELETE, &format!("channels/{}", seg(channel_id)), &query)
            .await
    }

    pub async fn answer(&self, channel_id: &str) -> Result<(), AriError> {
        self.call_empty(Method::POST, &format!("channels/{}/answer", seg(channel_id)), &[])
            .await
    }

    /// Sends ringing indication to the channel (the caller hears ringback).
    pub async fn ring(&self, channel_id: &str) -> Result<(), AriError> {
        self.call_empty(Method::POST, &format!("channels/{}/ring", seg(channel_id)), &[])
            .await
    }

    pub async fn ring_stop(&self, channel_id: &str) -> Result<(), AriError> {
        self.call_empty(Method::DELETE, &format!("channels/{}/ring", seg(channel_id)), &[])
            .await
    }

    /// Leaves Stasis and goes on in the dialplan (e.g. the AMD hop, which comes back).
    pub async fn continue_in_dialplan(
        &self,
        channel_id: &str,
        context: &str,
        extension: &str,
        priority: i64,
    ) -> Result<(), AriError> {
        let query = [
            ("context", context.to_owned()),
            ("extension", extension.to_owned()),
            ("priority", priority.to_string()),
        ];
        self.call_empty(Method::POST, &format!("channels/{}/continue", seg(channel_id)), &query)
            .await
    }

    /// Plays `media` (`sound:...`, `recording:...`, `tone:...`) to the channel.
    pub async fn play(&self, channel_id: &str, media: &str, playback_id: Option<&str>) -> Result<Playback, AriError> {
        let mut query = vec![("media", media.to_owned())];
        push_opt(&mut query, "playbackId", playback_id.map(str::to_owned));
        self.call(
            Method::POST,
            &format!("channels/{}/play", seg(channel_id)),
            &query,
            None::<&()>,
        )
        .await
    }

    pub async fn get_variable(&self, channel_id: &str, name: &str) -> Result<String, AriError> {
        let query = [("variable", name.to_owned())];
        let v: Variable = self
            .call(
                Method::GET,
                &format!("channels/{}/variable", seg(channel_id)),
                &query,
                None::<&()>,
            )
            .await?;
        Ok(v.value)
    }

    pub async fn set_variable(&self, channel_id: &str, name: &str, value: &str) -> Result<(), AriError> {
        let query = [("variable", name.to_owned()), ("value", value.to_owned())];
        self.call_empty(Method::POST, &format!("channels/{}/variable", seg(channel_id)), &query)
            .await
    }

    pub async fn get_channel(&self, channel_id: &str) -> Result<Channel, AriError> {
        self.call(Method::GET, &format!("channels/{}", seg(channel_id)), &[], None::<&()>)
            .await
    }

    pub async fn list_channels(&self) -> Result<Vec<Channel>, AriError> {
        self.call(Method::GET, "channels", &[], None::<&()>).await
    }

    /// RTP counters of a channel's audio (403 for a channel without RTP, 404 before media).
    pub async fn rtp_statistics(&self, channel_id: &str) -> Result<RtpStats, AriError> {
        self.call(
            Method::GET,
            &format!("channels/{}/rtp_statistics", seg(channel_id)),
            &[],
            None::<&()>,
        )
        .await
    }

    // ---- bridges -------------------------------------------------------------------------

    pub async fn create_bridge(&self, bridge_id: &str, kind: BridgeType, name: &str) -> Result<Bridge, AriError> {
        let kind = match kind {
            BridgeType::Mixing => "mixing",
            BridgeType::Holding => "holding",
        };
        let query = [("type", kind.to_owned()), ("name", name.to_owned())];
        self.call(
            Method::POST,
            &format!("bridges/{}", seg(bridge_id)),
            &query,
            None::<&()>,
        )
        .await
    }

    pub async fn add_channels(&self, bridge_id: &str, channel_ids: &[&str]) -> Result<(), AriError> {
        let query = [("channel", channel_ids.join(","))];
        self.call_empty(Method::POST, &format!("bridges/{}/addChannel", seg(bridge_id)), &query)
            .await
    }

    pub async fn remove_channel(&self, bridge_id: &str, channel_id: &str) -> Result<(), AriError> {
        let query = [("channel", channel_id.to_owned())];
        self.call_empty(
            Method::POST,
            &format!("bridges/{}/removeChannel", seg(bridge_id)),
            &query,
        )
        .await
    }

    pub async fn destroy_bridge(&self, bridge_id: &str) -> Result<(), AriError> {
        self.call_empty(Method::DELETE, &format!("bridges/{}", seg(bridge_id)), &[])
            .await
    }

    /// Records the bridge's mixed audio to `name.format` in Asterisk's recording directory.
    pub async fn record_bridge(&self, bridge_id: &str, name: &str, format: &str) -> Result<LiveRecording, AriError> {
        let query = [
            ("name", name.to_owned()),
            ("format", format.to_owned()),
            ("ifExists", "overwrite".to_owned()),
            ("beep", "false".to_owned()),
        ];
        self.call(
            Method::POST,
            &format!("bridges/{}/record", seg(bridge_id)),
            &query,
            None::<&()>,
        )
        .await
    }

    /// Plays `media` to everyone in the bridge (e.g. `tone:ring` while a customer is rung).
    pub async fn play_bridge(&self, bridge_id: &str, media: &str, playback_id: &str) -> Result<Playback, AriError> {
        let query = [("media", media.to_owned()), ("playbackId", playback_id.to_owned())];
        self.call(
            Method::POST,
            &format!("bridges/{}/play", seg(bridge_id)),
            &query,
            None::<&()>,
        )
        .await
    }

    pub async fn stop_playback(&self, playback_id: &str) -> Result<(), AriError> {
        self.call_empty(Method::DELETE, &format!("playbacks/{}", seg(playback_id)), &[])
            .await
    }

    /// Stops a live recording and keeps the file.
    pub async fn stop_recording(&self, name: &str) -> Result<(), AriError> {
        self.call_empty(Method::POST, &format!("recordings/live/{}/stop", seg(name)), &[])
            .await
    }

    /// A stored recording's audio as Asterisk streams it (`GET /recordings/stored/{name}/file`);
    /// the body is left to the caller to stream. A 404 is `AriError::Status`. It does not wait
    /// for a turn among `MAX_REQUESTS_IN_FLIGHT`: a download may last minutes, and holding a
    /// turn that long would delay calls.
    pub async fn stored_recording_file(&self, name: &str) -> Result<reqwest::Response, AriError> {
        let path = format!("recordings/stored/{}/file", seg(name));
        let response = self
            .request(Method::GET, &path)?
            // Long recordings take longer than an ordinary request's 10 s to pass through.
            .timeout(Duration::from_secs(600))
            .send()
            .await
            .map_err(|source| AriError::Transport {
                method: Method::GET,
                path: path.clone(),
                source,
            })?;
        let status = response.status();
        if status.is_success() {
            return Ok(response);
        }
        let bytes = response.bytes().await.unwrap_or_default();
        Err(status_error(Method::GET, &path, status, &bytes))
    }

    pub async fn get_bridge(&self, bridge_id: &str) -> Result<Bridge, AriError> {
        self.call(Method::GET, &format!("bridges/{}", seg(bridge_id)), &[], None::<&()>)
            .await
    }

    pub async fn list_bridges(&self) -> Result<Vec<Bridge>, AriError> {
        self.call(Method::GET, "bridges", &[], None::<&()>).await
    }

    // ---- applications and system -----------------------------------------------------------

    /// Our application as Asterisk sees it: the channels and bridges it holds (for reconciling).
    pub async fn application(&self) -> Result<Application, AriError> {
        self.call(
            Method::GET,
            &format!("applications/{}", seg(&self.app)),
            &[],
            None::<&()>,
        )
        .await
    }

    /// Subscribes our application to an event source: `channel:ID`, `bridge:ID`,
    /// `endpoint:PJSIP/op1`.
    pub async fn subscribe(&self, source: &str) -> Result<(), AriError> {
        let query = [("eventSource", source.to_owned())];
        self.send(
            Method::POST,
            &format!("applications/{}/subscription", seg(&self.app)),
            &query,
            None::<&()>,
        )
        .await
        .map(drop)
    }

    pub async fn unsubscribe(&self, source: &str) -> Result<(), AriError> {
        let query = [("eventSource", source.to_owned())];
        self.send(
            Method::DELETE,
            &format!("applications/{}/subscription", seg(&self.app)),
            &query,
            None::<&()>,
        )
        .await
        .map(drop)
    }

    pub async fn list_applications(&self) -> Result<Vec<Application>, AriError> {
        self.call(Method::GET, "applications", &[], None::<&()>).await
    }

    pub async fn asterisk_info(&self) -> Result<AsteriskInfo, AriError> {
        self.call(Method::GET, "asterisk/info", &[], None::<&()>).await
    }

    // ---- plumbing ------------------------------------------------------------------------

    async fn call<T: DeserializeOwned, B: Serialize + ?Sized>(
        &self,
        method: Method,
        path: &str,
        query: &[(&str, String)],
        body: Option<&B>,
    ) -> Result<T, AriError> {
        let bytes = self.send(method.clone(), path, query, body).await?;
        serde_json::from_slice(&bytes).map_err(|source| AriError::Decode {
            method,
            path: path.to_owned(),
            source,
        })
    }

    async fn call_empty(&self, method: Method, path: &str, query: &[(&str, String)]) -> Result<(), AriError> {
        self.send(method, path, query, None::<&()>).await.map(drop)
    }

    async fn send<B: Serialize + ?Sized>(
        &self,
        method: Method,
        path: &str,
        query: &[(&str, String)],
        body: Option<&B>,
    ) -> Result<bytes::Bytes, AriError> {
        let asked = Instant::now();
        let _turn = self.in_flight.acquire().await.expect("the semaphore is never closed");
        let started = Instant::now();
        metrics::histogram!(crate::metrics::ARI_REQUEST_WAIT).record((started - asked).as_secs_f64());
        let mut request = self.request(method.clone(), path)?.query(query);
        if let Some(body) = body {
            request = request.json(body);
        }
        let transport = |source| AriError::Transport {
            method: method.clone(),
            path: path.to_owned(),
            source,
        };
        let response = request.send().await.map_err(transport)?;
        let status = response.status();
        let bytes = response.bytes().await.map_err(transport)?;
        metrics::histogram!(crate::metrics::ARI_REQUEST).record(started.elapsed().as_secs_f64());
        tracing::debug!(%method, path, status = status.as_u16(), duration_ms = started.elapsed().as_millis() as u64, "ari request");
        if status.is_success() {
            return Ok(bytes);
        }
        Err(status_error(method, path, status, &bytes))
    }

    /// A request to `path` under the ARI base, with our credentials.
    fn request(&self, method: Method, path: &str) -> Result<reqwest::RequestBuilder, AriError> {
        let url = self.base.join(path).map_err(|_| AriError::BadUrl(path.to_owned()))?;
        Ok(self
            .http
            .request(method, url)
            .basic_auth(&self.username, Some(self.password.expose_secret())))
    }
}

/// An ARI refusal: its JSON `message`, else the body as text.
fn status_error(method: Method, path: &str, status: StatusCode, body: &[u8]) -> AriError {
    let message = serde_json::from_slice::<serde_json::Value>(body)
        .ok()
        .and_then(|v| v.get("message").and_then(|m| m.as_str()).map(str::to_owned))
        .unwrap_or_else(|| String::from_utf8_lossy(body).trim().to_owned());
    AriError::Status {
        method,
        path: path.to_owned(),
        status,
        message,
    }
}

fn push_opt(query: &mut Vec<(&'static str, String)>, name: &'static str, value: Option<String>) {
    if let Some(value) = value {
        query.push((name, value));
    }
}

/// Escapes an id for use as one path segment.
fn seg(id: &str) -> String {
    url::form_urlencoded::byte_serialize(id.as_bytes())
        .collect::<String>()
        .replace('+', "%20")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base_url_gets_a_trailing_slash_so_paths_join_under_ari() {
        let c = AriClient::new("http://127.0.0.1:8088/ari", "u", SecretString::from("p"), "obzvon").unwrap();
        assert_eq!(
            c.base_url().join("channels").unwrap().as_str(),
            "http://127.0.0.1:8088/ari/channels"
        );
    }

    #[test]
    fn rejects_non_http_urls() {
        assert!(AriClient::new("ws://127.0.0.1:8088/ari", "u", SecretString::from("p"), "a").is_err());
        assert!(AriClient::new("not a url", "u", SecretString::from("p"), "a").is_err());
    }

    #[test]
    fn path_segments_are_escaped() {
        assert_eq!(seg("a/b c"), "a%2Fb%20c");
        assert_eq!(seg("5b1e0c3a-uuid"), "5b1e0c3a-uuid");
    }

    #[tokio::test]
    async fn no_more_requests_in_flight_than_the_bound_however_many_are_made() {
        use std::sync::atomic::{AtomicUsize, Ordering};
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        // A server that holds each request 100 ms and counts how many it holds at once (each
        // on its own connection, as Asterisk counts HTTP sessions).
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let (now, peak) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
        let (n, p) = (now.clone(), peak.clone());
        tokio::spawn(async move {
            loop {
                let (mut socket, _) = listener.accept().await.unwrap();
                let (n, p) = (n.clone(), p.clone());
                tokio::spawn(async move {
                    let mut buf = vec![0u8; 4096];
                    loop {
                        match socket.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(_) => {}
                        }
                        let held = n.fetch_add(1, Ordering::SeqCst) + 1;
                        p.fetch_max(held, Ordering::SeqCst);
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        n.fetch_sub(1, Ordering::SeqCst);
                        let reply = b"HTTP/1.1 204 No Content\r\ncontent-length: 0\r\n\r\n";
                        if socket.write_all(reply).await.is_err() {
                            return;
                        }
                    }
                });
            }
        });
        let c = AriClient::new(
            &format!("http://127.0.0.1:{port}/ari"),
            "u",
            SecretString::from("p"),
            "a",
        )
        .unwrap();
        let calls = (0..MAX_REQUESTS_IN_FLIGHT * 3).map(|i| {
            let c = c.clone();
            async move { c.answer(&format!("ch-{i}")).await }
        });
        let results = futures_util::future::join_all(calls).await;
        assert!(
            results.iter().all(Result::is_ok),
            "{:?}",
            results.iter().find(|r| r.is_err())
        );
        let peak = peak.load(Ordering::SeqCst);
        assert!(peak <= MAX_REQUESTS_IN_FLIGHT, "{peak} requests at once");
        assert!(
            peak > MAX_REQUESTS_IN_FLIGHT / 2,
            "the bound, not the server, kept it to {peak}"
        );
    }

    #[test]
    fn debug_output_hides_the_password() {
        let c = AriClient::new("http://h/ari", "u", SecretString::from("hunter2"), "a").unwrap();
        assert!(!format!("{c:?}").contains("hunter2"));
    }
}
