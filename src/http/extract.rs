//! Request extractors that turn every rejection into an [`ApiError`]: JSON bodies,
//! bearer tokens and client details; and the request body size limit.

use std::net::{IpAddr, SocketAddr};

use axum::extract::{ConnectInfo, FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse as _, Response};
use serde::de::DeserializeOwned;

use super::AppState;
use super::error::ApiError;
use crate::token::access::Claims;

/// Largest accepted request body, in bytes.
pub const BODY_LIMIT: usize = 16 * 1024;

/// Longest a request body may take to arrive in full once its handler reads it; a
/// client that declares a body and then stalls gets 400 and its connection is closed.
pub const BODY_READ_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// A JSON body; any content type is read as JSON. Rejections never echo the input.
pub struct JsonBody<T>(pub T);

fn describe(e: &serde_json::Error) -> String {
    use serde_json::error::Category;
    match e.classify() {
        Category::Syntax | Category::Eof | Category::Io => {
            "request body is not valid JSON".to_owned()
        }
        Category::Data => {
            let text = e.to_string();
            // serde names missing and repeated fields without any value; other data
            // errors can quote the offending value (a password, say), so they stay
            // generic.
            match text.split(" at line").next() {
                Some(m) if m.starts_with("missing field") || m.starts_with("duplicate field") => {
                    m.to_owned()
                }
                Some(m) if m.starts_with("unknown variant") => {
                    "a field has a value it does not accept".to_owned()
                }
                _ => "a field has the wrong type; expected a JSON object of strings".to_owned(),
            }
        }
    }
}

/// Refuses, on every route and before any other check of the route (token, CSRF
/// header, body), a request whose `Content-Length` declares more than [`BODY_LIMIT`]:
/// 413 `payload_too_large`, and the body is never read. A body without a declared
/// length (chunked) is cut off at the limit as it is read, by [`read_body`].
pub async fn refuse_declared_oversize(req: Request, next: Next) -> Response {
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > BODY_LIMIT as u64) {
        return ApiError::PayloadTooLarge.into_response();
    }
    next.run(req).await
}

/// Reads the body, refusing one that grows past [`BODY_LIMIT`] while it streams in or
/// that has not arrived within [`BODY_READ_TIMEOUT`].
async fn read_body<S: Send + Sync>(req: Request, state: &S) -> Result<bytes::Bytes, ApiError> {
    let read = tokio::time::timeout(BODY_READ_TIMEOUT, bytes::Bytes::from_request(req, state));
    let Ok(read) = read.await else {
        return Err(ApiError::InvalidRequest(
            "the request body did not arrive in time".to_owned(),
        ));
    };
    read.map_err(|r| {
        if r.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::PayloadTooLarge
        } else {
            ApiError::InvalidRequest("could not read the request body".to_owned())
        }
    })
}

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for JsonBody<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let body = read_body(req, state).await?;
        serde_json::from_slice(&body)
            .map(JsonBody)
            .map_err(|e| ApiError::InvalidRequest(describe(&e)))
    }
}

/// A JSON body that may be absent (empty): refresh and logout can come with a cookie
/// instead.
pub struct OptionalJsonBody<T>(pub Option<T>);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for OptionalJsonBody<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let body = read_body(req, state).await?;
        if body.iter().all(u8::is_ascii_whitespace) {
            return Ok(OptionalJsonBody(None));
        }
        serde_json::from_slice(&body)
            .map(|v| OptionalJsonBody(Some(v)))
            .map_err(|e| ApiError::InvalidRequest(describe(&e)))
    }
}

/// The bearer token of `Authorization`, verified: the caller's claims.
pub struct Caller(pub Claims);

/// The raw bearer token, if the header carries one.
pub fn bearer(parts: &Parts) -> Option<&str> {
    let value = parts.headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim())
        .filter(|t| !t.is_empty())
}

impl FromRequestParts<AppState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let token = bearer(parts).ok_or(ApiError::InvalidToken)?;
        let claims = state.lifecycle.verify_access(token)?;
        Ok(Caller(claims))
    }
}

/// Details of the client recorded on a new session.
pub struct ClientInfo {
    /// `User-Agent` header, if valid text.
    pub user_agent: Option<String>,
    /// Peer IP address of the connection.
    pub ip: Option<String>,
}

/// The client's address: the socket peer, unless the peer is a trusted proxy, in
/// which case `X-Forwarded-For` is read from the right, skipping trusted proxies, and
/// the first other address is the client. A header from an untrusted peer is ignored.
pub fn client_ip(peer: IpAddr, headers: &HeaderMap, trusted: &[ipnet::IpNet]) -> IpAddr {
    let is_trusted = |ip: &IpAddr| trusted.iter().any(|net| net.contains(ip));
    if !is_trusted(&peer) {
        return peer;
    }
    let mut client = peer;
    let hops = headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .collect::<Vec<_>>();
    for hop in hops.iter().rev() {
        match hop.parse::<IpAddr>() {
            Ok(ip) => {
                client = ip;
                if !is_trusted(&ip) {
                    break;
                }
            }
            // Anything unparsable ends the chain we can vouch for.
            Err(_) => break,
        }
    }
    client
}

impl FromRequestParts<AppState> for ClientInfo {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        // Any bytes are kept (lossily as UTF-8), so a non-ASCII agent is recorded, not
        // dropped; the lifecycle cuts it to length.
        let user_agent = parts
            .headers
            .get(header::USER_AGENT)
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned());
        let ip = parts
            .extensions
            .get::<ConnectInfo<SocketAddr>>()
            .map(|ConnectInfo(addr)| {
                client_ip(addr.ip(), &parts.headers, &state.trusted_proxies).to_string()
            });
        Ok(ClientInfo { user_agent, ip })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(xff: &[&str]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for v in xff {
            h.append("x-forwarded-for", v.parse().expect("header value"));
        }
        h
    }

    #[test]
    fn forwarded_for_is_ignored_from_untrusted_peers() {
        let trusted: Vec<ipnet::IpNet> = vec!["10.0.0.0/8".parse().expect("cidr")];
        let peer: IpAddr = "203.0.113.9".parse().expect("ip");
        assert_eq!(client_ip(peer, &headers(&["198.51.100.1"]), &trusted), peer);
        assert_eq!(client_ip(peer, &headers(&["198.51.100.1"]), &[]), peer);
    }

    #[test]
    fn forwarded_for_from_trusted_proxies_names_the_first_untrusted_hop() {
        let trusted: Vec<ipnet::IpNet> = vec!["10.0.0.0/8".parse().expect("cidr")];
        let proxy: IpAddr = "10.1.2.3".parse().expect("ip");
        // The client forged the first entry; our proxies appended the rest.
        let h = headers(&["1.2.3.4, 198.51.100.7", "10.9.9.9"]);
        assert_eq!(client_ip(proxy, &h, &trusted).to_string(), "198.51.100.7");
        assert_eq!(client_ip(proxy, &headers(&[]), &trusted), proxy);
        assert_eq!(client_ip(proxy, &headers(&["garbage"]), &trusted), proxy);
    }

    #[test]
    fn json_errors_never_quote_values() {
        #[derive(serde::Deserialize, Debug)]
        #[allow(dead_code)]
        struct Login {
            email: String,
            password: String,
        }
        let e = serde_json::from_str::<Login>(r#"{"email":"a@b.co","password":98765432}"#)
            .expect_err("wrong type");
        let msg = describe(&e);
        assert!(!msg.contains("98765432"), "{msg}");
        let e = serde_json::from_str::<Login>(r#"{"email":"a@b.co"}"#).expect_err("missing");
        assert_eq!(describe(&e), "missing field `password`");
        let e = serde_json::from_str::<Login>("{not json").expect_err("syntax");
        assert_eq!(describe(&e), "request body is not valid JSON");
        let e =
            serde_json::from_str::<Login>(r#"{"email":"a@b.co","password":"x","email":"c@d.ef"}"#)
                .expect_err("duplicate");
        assert_eq!(describe(&e), "duplicate field `email`");

        #[derive(Debug, serde::Deserialize)]
        #[serde(rename_all = "lowercase")]
        enum Mode {
            Body,
        }
        #[derive(Debug, serde::Deserialize)]
        struct WithMode {
            #[allow(dead_code)]
            mode: Mode,
        }
        let e = serde_json::from_str::<WithMode>(r#"{"mode":"carrier-pigeon"}"#)
            .expect_err("unknown variant");
        let msg = describe(&e);
        assert_eq!(msg, "a field has a value it does not accept");
        assert!(!msg.contains("pigeon"), "{msg}");
    }
}
