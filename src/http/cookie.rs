//! The refresh cookie of cookie transport and the anti-CSRF rules around it. The cookie
//! is HttpOnly (no script reads it), Secure with the `__Secure-` prefix, scoped to
//! `Path=/v1/auth`, and lives as long as its session can.

use axum::http::HeaderMap;
use axum_extra::extract::CookieJar;
use axum_extra::extract::cookie::{Cookie, SameSite};

use crate::config::web::{CookieConfig, SameSitePolicy};

/// Header a cookie-authenticated request must carry: a page on another origin can send
/// it only after a CORS preflight, which only listed origins pass.
pub const CSRF_HEADER: &str = "x-requested-with";
/// The value [`CSRF_HEADER`] must have.
pub const CSRF_VALUE: &str = "tokend";
/// The only path the cookie is sent to.
pub const COOKIE_PATH: &str = "/v1/auth";

/// Builds, reads and clears the refresh cookie as configured.
#[derive(Clone, Debug)]
pub struct RefreshCookie {
    name: String,
    domain: Option<String>,
    same_site: SameSite,
}

impl RefreshCookie {
    /// The cookie of a validated configuration.
    pub fn new(config: &CookieConfig) -> Self {
        Self {
            name: config.name.clone(),
            domain: config.domain.clone(),
            same_site: match config.same_site {
                SameSitePolicy::Strict => SameSite::Strict,
                SameSitePolicy::Lax => SameSite::Lax,
                SameSitePolicy::None => SameSite::None,
            },
        }
    }

    /// The cookie's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// A cookie carrying `value` for `max_age_secs` seconds.
    pub fn set(&self, value: String, max_age_secs: u64) -> Cookie<'static> {
        let mut cookie = Cookie::build((self.name.clone(), value))
            .http_only(true)
            // Always Secure: the `__Secure-` prefix requires it, and so does SameSite=None.
            .secure(true)
            .same_site(self.same_site)
            .path(COOKIE_PATH)
            .max_age(time::Duration::seconds(
                i64::try_from(max_age_secs).unwrap_or(i64::MAX),
            ))
            .build();
        if let Some(domain) = &self.domain {
            cookie.set_domain(domain.clone());
        }
        cookie
    }

    /// An empty cookie with `Max-Age=0` and the same Path and Domain, which makes the
    /// browser drop the stored one.
    pub fn cleared(&self) -> Cookie<'static> {
        self.set(String::new(), 0)
    }

    /// The refresh token the request's cookie carries, if any.
    pub fn read<'a>(&self, jar: &'a CookieJar) -> Option<&'a str> {
        jar.get(&self.name)
            .map(Cookie::value)
            .filter(|v| !v.is_empty())
    }
}

/// Whether the request carries `X-Requested-With: tokend`.
pub fn has_csrf_header(headers: &HeaderMap) -> bool {
    headers
        .get(CSRF_HEADER)
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(CSRF_VALUE.as_bytes()))
}

/// Whether the request may set or clear the refresh cookie: it carries the anti-CSRF
/// header, or the browser did not mark it as coming from another origin.
///
/// Browsers send `Sec-Fetch-Site` with every request; a form that another site submits
/// is marked `cross-site` (or `same-site` from a sibling subdomain). Such a request
/// must neither plant a cookie (login CSRF) nor drop the user's one (logout CSRF).
/// Clients other than browsers send no such header and are not affected. A browser too
/// old to send it is protected by `SameSite` alone.
pub fn may_touch_cookie(headers: &HeaderMap) -> bool {
    let cross_origin = headers
        .get("sec-fetch-site")
        .is_some_and(|v| v.as_bytes() != b"same-origin" && v.as_bytes() != b"none");
    !cross_origin || has_csrf_header(headers)
}

#[cfg(test)]
mod tests {
    use axum::http::HeaderValue;

    use super::*;
    use crate::config::web::{WebArgs, WebConfig};

    fn cookie(args: WebArgs<'_>) -> RefreshCookie {
        let config = WebConfig::from_args(&args, "https://auth.example.com").expect("valid");
        RefreshCookie::new(&config.cookie)
    }

    fn header(c: &Cookie<'_>) -> String {
        c.to_string()
    }

    #[test]
    fn the_default_cookie_is_secure_prefixed() {
        let c = cookie(WebArgs::default()).set("v".into(), 60);
        assert_eq!(c.name(), "__Secure-tokend_refresh");
        assert!(header(&c).starts_with("__Secure-tokend_refresh=v;"));
    }

    #[test]
    fn the_cookie_is_http_only() {
        let c = cookie(WebArgs::default()).set("v".into(), 60);
        assert_eq!(c.http_only(), Some(true));
        assert!(header(&c).contains("; HttpOnly"));
    }

    #[test]
    fn the_cookie_is_always_secure() {
        for same_site in ["strict", "lax", "none"] {
            let c = cookie(WebArgs {
                cookie_samesite: Some(same_site),
                cors_origins: Some("https://app.example.com"),
                ..WebArgs::default()
            })
            .set("v".into(), 60);
            assert_eq!(c.secure(), Some(true), "{same_site}");
            assert!(header(&c).contains("; Secure"));
        }
    }

    #[test]
    fn same_site_is_strict_unless_configured() {
        let c = cookie(WebArgs::default()).set("v".into(), 60);
        assert!(header(&c).contains("; SameSite=Strict"));
        let lax = cookie(WebArgs {
            cookie_samesite: Some("lax"),
            ..WebArgs::default()
        });
        assert!(header(&lax.set("v".into(), 60)).contains("; SameSite=Lax"));
        let none = cookie(WebArgs {
            cookie_samesite: Some("none"),
            cors_origins: Some("https://app.example.com"),
            ..WebArgs::default()
        });
        assert!(header(&none.set("v".into(), 60)).contains("; SameSite=None"));
    }

    #[test]
    fn the_path_is_the_auth_endpoints_only() {
        let c = cookie(WebArgs::default()).set("v".into(), 60);
        assert_eq!(c.path(), Some("/v1/auth"));
        assert!(header(&c).contains("; Path=/v1/auth"));
    }

    #[test]
    fn max_age_is_the_given_lifetime() {
        let c = cookie(WebArgs::default()).set("v".into(), 2_592_000);
        assert!(header(&c).contains("; Max-Age=2592000"));
    }

    #[test]
    fn the_cookie_is_host_only_unless_a_domain_is_set() {
        let c = cookie(WebArgs::default()).set("v".into(), 60);
        assert_eq!(c.domain(), None);
        assert!(!header(&c).contains("Domain"));
        let c = cookie(WebArgs {
            cookie_domain: Some("example.com"),
            ..WebArgs::default()
        })
        .set("v".into(), 60);
        assert!(header(&c).contains("; Domain=example.com"));
    }

    #[test]
    fn clearing_keeps_name_path_and_domain() {
        let rc = cookie(WebArgs {
            cookie_suffix: Some("app"),
            cookie_domain: Some("example.com"),
            ..WebArgs::default()
        });
        let set = header(&rc.set("v".into(), 60));
        let cleared = header(&rc.cleared());
        assert!(cleared.starts_with("__Secure-app=;"), "{cleared}");
        assert!(cleared.contains("; Max-Age=0"), "{cleared}");
        for attr in [
            "; Path=/v1/auth",
            "; Domain=example.com",
            "; Secure",
            "; HttpOnly",
        ] {
            assert!(
                set.contains(attr) && cleared.contains(attr),
                "{attr}: {cleared}"
            );
        }
    }

    #[test]
    fn only_the_configured_non_empty_cookie_is_read() {
        let rc = cookie(WebArgs::default());
        let mut headers = HeaderMap::new();
        headers.insert(
            "cookie",
            HeaderValue::from_static("tokend_refresh=a; __Secure-tokend_refresh=b"),
        );
        assert_eq!(rc.read(&CookieJar::from_headers(&headers)), Some("b"));
        headers.insert(
            "cookie",
            HeaderValue::from_static("__Secure-tokend_refresh="),
        );
        assert_eq!(rc.read(&CookieJar::from_headers(&headers)), None);
    }

    #[test]
    fn cross_origin_browser_requests_need_the_header_to_touch_the_cookie() {
        let mut headers = HeaderMap::new();
        assert!(may_touch_cookie(&headers), "clients other than browsers");
        for site in ["same-origin", "none"] {
            headers.insert("sec-fetch-site", HeaderValue::from_static(site));
            assert!(may_touch_cookie(&headers), "{site}");
        }
        for site in ["cross-site", "same-site"] {
            headers.insert("sec-fetch-site", HeaderValue::from_static(site));
            assert!(!may_touch_cookie(&headers), "{site}");
            headers.insert(CSRF_HEADER, HeaderValue::from_static("tokend"));
            assert!(may_touch_cookie(&headers), "{site} with the header");
            headers.remove(CSRF_HEADER);
        }
        headers.insert(CSRF_HEADER, HeaderValue::from_static("XMLHttpRequest"));
        assert!(!has_csrf_header(&headers));
    }
}
