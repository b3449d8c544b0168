//! Settings for browser front ends: the refresh cookie's name, `Domain` and `SameSite`,
//! and the CORS allow-list. Checked with the rest of the configuration, so a cookie or
//! origin that would weaken the session's protection stops tokend before it binds a port.

use std::net::IpAddr;

use super::ConfigError;

/// Prefix of the refresh cookie's name; browsers accept a cookie so named only with
/// `Secure` and from a secure origin, so no plain-HTTP page can plant or overwrite it.
pub const COOKIE_PREFIX: &str = "__Secure-";

/// Default name suffix: the cookie is `__Secure-tokend_refresh`.
pub const DEFAULT_COOKIE_SUFFIX: &str = "tokend_refresh";

/// Most origins `TOKEND_CORS_ORIGINS` takes.
pub const MAX_CORS_ORIGINS: usize = 64;

/// The refresh cookie's `SameSite` attribute.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SameSitePolicy {
    /// Sent only on requests from the same site (the default).
    Strict,
    /// Also sent on top-level navigations from other sites.
    Lax,
    /// Sent on cross-site requests too; allowed only because the cookie is always
    /// `Secure`, and only together with a CORS allow-list.
    None,
}

/// How the refresh cookie is named and scoped.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CookieConfig {
    /// Full cookie name, [`COOKIE_PREFIX`] included.
    pub name: String,
    /// `Domain` attribute; `None` makes a host-only cookie (the safest choice).
    pub domain: Option<String>,
    /// `SameSite` attribute (default `Strict`).
    pub same_site: SameSitePolicy,
}

/// Browser-facing settings, validated.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WebConfig {
    /// The refresh cookie.
    pub cookie: CookieConfig,
    /// Origins allowed to call the API with credentials, in the exact form browsers send
    /// in `Origin` (`https://app.example.com`, default ports left out). Empty by default:
    /// no cross-origin page gets CORS headers.
    pub cors_origins: Vec<String>,
}

/// The raw values, as given on the command line or in the environment.
#[derive(Default)]
pub struct WebArgs<'a> {
    /// `TOKEND_COOKIE_SUFFIX`.
    pub cookie_suffix: Option<&'a str>,
    /// `TOKEND_COOKIE_DOMAIN`.
    pub cookie_domain: Option<&'a str>,
    /// `TOKEND_COOKIE_SAMESITE`.
    pub cookie_samesite: Option<&'a str>,
    /// `TOKEND_CORS_ORIGINS`.
    pub cors_origins: Option<&'a str>,
}

fn err(var: &'static str, flag: &'static str, expected: &'static str) -> ConfigError {
    ConfigError {
        var,
        flag,
        expected,
    }
}

impl WebConfig {
    /// Validates the browser settings against the (already valid) issuer.
    ///
    /// # Errors
    /// A [`ConfigError`] for a malformed cookie suffix, a cookie domain that is an IP
    /// address, a public suffix or not the issuer's host or a parent of it, an unknown
    /// `SameSite` value, `SameSite=None` without CORS origins, or a CORS origin that is
    /// malformed, a wildcard, or plain HTTP on a host other than loopback.
    pub fn from_args(args: &WebArgs<'_>, issuer: &str) -> Result<Self, ConfigError> {
        let suffix = args.cookie_suffix.unwrap_or(DEFAULT_COOKIE_SUFFIX);
        if !valid_suffix(suffix) {
            return Err(err(
                "TOKEND_COOKIE_SUFFIX",
                "cookie-suffix",
                "1 to 64 letters, digits, '-', '_' or '.'",
            ));
        }

        let domain = match args.cookie_domain.map(str::trim) {
            None | Some("") => None,
            Some(raw) => Some(cookie_domain(raw, issuer)?),
        };

        let cors_origins = match args.cors_origins {
            None => Vec::new(),
            Some(raw) => cors_origins(raw)?,
        };

        let same_site = match args
            .cookie_samesite
            .map(|v| v.trim().to_ascii_lowercase())
            .as_deref()
        {
            None | Some("strict") => SameSitePolicy::Strict,
            Some("lax") => SameSitePolicy::Lax,
            Some("none") if !cors_origins.is_empty() => SameSitePolicy::None,
            Some("none") => {
                return Err(err(
                    "TOKEND_COOKIE_SAMESITE",
                    "cookie-samesite",
                    "strict or lax; none only together with TOKEND_CORS_ORIGINS, whose pages \
                     it exists for",
                ));
            }
            Some(_) => {
                return Err(err(
                    "TOKEND_COOKIE_SAMESITE",
                    "cookie-samesite",
                    "strict (default), lax or none",
                ));
            }
        };

        Ok(Self {
            cookie: CookieConfig {
                name: format!("{COOKIE_PREFIX}{suffix}"),
                domain,
                same_site,
            },
            cors_origins,
        })
    }
}

impl Default for WebConfig {
    fn default() -> Self {
        Self::from_args(&WebArgs::default(), "tokend").expect("the defaults are valid")
    }
}

fn valid_suffix(s: &str) -> bool {
    (1..=64).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

/// A DNS name of ASCII letters, digits and hyphens, lower-cased, with at least two labels.
fn dns_name(raw: &str) -> Option<String> {
    let name = raw.strip_prefix('.').unwrap_or(raw).to_ascii_lowercase();
    let labels_ok = name.split('.').all(|label| {
        (1..=63).contains(&label.len())
            && !label.starts_with('-')
            && !label.ends_with('-')
            && label
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-')
    });
    (labels_ok && name.len() <= 253 && name.contains('.') && name.parse::<IpAddr>().is_err())
        .then_some(name)
}

/// The host of an `https://host[:port][/path]` issuer, lower-cased. A `Secure` cookie
/// shared across a domain only makes sense for a service reached over https.
fn issuer_host(issuer: &str) -> Option<String> {
    let rest = issuer.strip_prefix("https://")?;
    let authority = rest.split(['/', '?', '#']).next()?;
    let host = authority.rsplit_once(':').map_or(authority, |(h, _)| h);
    (!host.is_empty() && !authority.contains('@')).then(|| host.to_ascii_lowercase())
}

fn cookie_domain(raw: &str, issuer: &str) -> Result<String, ConfigError> {
    let e = |expected| err("TOKEND_COOKIE_DOMAIN", "cookie-domain", expected);
    let domain = dns_name(raw).ok_or_else(|| {
        e("a DNS name like example.com (not an IP address); leave unset for a host-only cookie")
    })?;
    // A public suffix (com, co.uk, github.io) would hand the cookie to every site under it.
    if psl::domain_str(&domain).is_none() {
        return Err(e(
            "a registrable domain, not a public suffix such as com or co.uk",
        ));
    }
    let host = issuer_host(issuer).ok_or_else(|| {
        e(
            "unset, unless TOKEND_ISSUER is the https URL tokend is served at, whose host \
           the domain must match",
        )
    })?;
    if host != domain && !host.ends_with(&format!(".{domain}")) {
        return Err(e(
            "the host of TOKEND_ISSUER or a parent domain of it, and not a public suffix",
        ));
    }
    Ok(domain)
}

fn is_loopback(host: &str) -> bool {
    host == "localhost"
        || host == "[::1]"
        || host
            .parse::<IpAddr>()
            .is_ok_and(|ip| ip.is_loopback() && ip.is_ipv4())
}

/// One origin in the form browsers send it, or `None`.
fn origin(raw: &str) -> Option<String> {
    let raw = raw.trim().trim_end_matches('/').to_ascii_lowercase();
    let (scheme, authority) = raw.split_once("://")?;
    if authority.is_empty() || authority.contains(['/', '?', '#', '@', '*', ' ']) {
        return None;
    }
    let (host, port) = match authority.rsplit_once(':') {
        Some((h, p)) if !p.is_empty() && !h.ends_with(':') && !authority.ends_with(']') => {
            (h, Some(p.parse::<u16>().ok()?))
        }
        _ => (authority, None),
    };
    let host_ok = if let Some(v6) = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
        v6.parse::<std::net::Ipv6Addr>().is_ok()
    } else {
        host.parse::<std::net::Ipv4Addr>().is_ok()
            || dns_name(host).is_some()
            || host == "localhost"
    };
    let default_port = match scheme {
        "https" => 443,
        // Plain HTTP lets anyone on the network run script in that origin.
        "http" if is_loopback(host) => 80,
        _ => return None,
    };
    if !host_ok {
        return None;
    }
    Some(match port {
        Some(p) if p != default_port => format!("{scheme}://{host}:{p}"),
        _ => format!("{scheme}://{host}"),
    })
}

fn cors_origins(raw: &str) -> Result<Vec<String>, ConfigError> {
    let e = || {
        err(
            "TOKEND_CORS_ORIGINS",
            "cors-origins",
            "comma-separated origins like https://app.example.com, at most 64: no path, no \
             wildcard, plain http only for localhost or 127.0.0.1",
        )
    };
    let mut origins = Vec::new();
    for item in raw.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let o = origin(item).ok_or_else(e)?;
        if !origins.contains(&o) {
            origins.push(o);
        }
    }
    if origins.len() > MAX_CORS_ORIGINS {
        return Err(e());
    }
    Ok(origins)
}

#[cfg(test)]
mod tests {
    use super::*;

    const ISSUER: &str = "https://auth.example.com";

    fn parse(args: WebArgs<'_>) -> Result<WebConfig, ConfigError> {
        WebConfig::from_args(&args, ISSUER)
    }

    fn refused_var(args: WebArgs<'_>) -> &'static str {
        parse(args).expect_err("refused").var
    }

    #[test]
    fn defaults_are_a_strict_host_only_cookie_and_no_cors() {
        let c = WebConfig::default();
        assert_eq!(c.cookie.name, "__Secure-tokend_refresh");
        assert_eq!(c.cookie.domain, None);
        assert_eq!(c.cookie.same_site, SameSitePolicy::Strict);
        assert!(c.cors_origins.is_empty());
    }

    #[test]
    fn the_suffix_names_the_cookie_after_the_secure_prefix() {
        let c = parse(WebArgs {
            cookie_suffix: Some("app-1.refresh"),
            ..WebArgs::default()
        })
        .expect("valid");
        assert_eq!(c.cookie.name, "__Secure-app-1.refresh");
        for bad in ["", "a b", "a;b", "a=b", "ü", &"x".repeat(65)] {
            let args = WebArgs {
                cookie_suffix: Some(bad),
                ..WebArgs::default()
            };
            assert_eq!(refused_var(args), "TOKEND_COOKIE_SUFFIX", "{bad:?}");
        }
    }

    #[test]
    fn a_domain_must_cover_the_issuer_host() {
        for ok in ["example.com", ".Example.com", "auth.example.com"] {
            let c = parse(WebArgs {
                cookie_domain: Some(ok),
                ..WebArgs::default()
            })
            .expect(ok);
            assert!(c.cookie.domain.is_some_and(|d| !d.starts_with('.')));
        }
        for bad in ["other.com", "evil-example.com", "api.auth.example.com"] {
            let err = parse(WebArgs {
                cookie_domain: Some(bad),
                ..WebArgs::default()
            })
            .expect_err(bad);
            assert_eq!(err.var, "TOKEND_COOKIE_DOMAIN");
            assert!(err.expected.contains("TOKEND_ISSUER"), "{}", err.expected);
        }
    }

    #[test]
    fn a_public_suffix_domain_is_refused() {
        for suffix in ["com", "co.uk", "github.io"] {
            let issuer = format!("https://auth.someone.{suffix}");
            let err = WebConfig::from_args(
                &WebArgs {
                    cookie_domain: Some(suffix),
                    ..WebArgs::default()
                },
                &issuer,
            )
            .expect_err(suffix);
            assert_eq!(err.var, "TOKEND_COOKIE_DOMAIN");
        }
        let err = WebConfig::from_args(
            &WebArgs {
                cookie_domain: Some("co.uk"),
                ..WebArgs::default()
            },
            "https://auth.someone.co.uk",
        )
        .expect_err("suffix");
        assert!(err.expected.contains("public suffix"), "{}", err.expected);
    }

    #[test]
    fn a_domain_needs_an_issuer_url_and_a_dns_name() {
        let err = WebConfig::from_args(
            &WebArgs {
                cookie_domain: Some("example.com"),
                ..WebArgs::default()
            },
            "tokend",
        )
        .expect_err("issuer is no URL");
        assert_eq!(err.var, "TOKEND_COOKIE_DOMAIN");
        let err = WebConfig::from_args(
            &WebArgs {
                cookie_domain: Some("example.com"),
                ..WebArgs::default()
            },
            "http://auth.example.com",
        )
        .expect_err("issuer is not https");
        assert_eq!(err.var, "TOKEND_COOKIE_DOMAIN");
        for bad in ["127.0.0.1", "exa mple.com", "-x.example.com", "localhost"] {
            let args = WebArgs {
                cookie_domain: Some(bad),
                ..WebArgs::default()
            };
            assert_eq!(refused_var(args), "TOKEND_COOKIE_DOMAIN", "{bad:?}");
        }
    }

    #[test]
    fn same_site_is_strict_lax_or_none_with_cors() {
        let same_site = |value, cors| {
            parse(WebArgs {
                cookie_samesite: Some(value),
                cors_origins: cors,
                ..WebArgs::default()
            })
            .map(|c| c.cookie.same_site)
        };
        assert_eq!(same_site("Strict", None), Ok(SameSitePolicy::Strict));
        assert_eq!(same_site("lax", None), Ok(SameSitePolicy::Lax));
        assert_eq!(
            same_site("none", Some("https://app.example.net")),
            Ok(SameSitePolicy::None)
        );
        let err = same_site("none", None).expect_err("none without CORS");
        assert_eq!(err.var, "TOKEND_COOKIE_SAMESITE");
        assert!(err.expected.contains("TOKEND_CORS_ORIGINS"));
        let err = same_site("sometimes", None).expect_err("unknown");
        assert_eq!(err.var, "TOKEND_COOKIE_SAMESITE");
    }

    #[test]
    fn cors_origins_are_normalised_to_what_browsers_send() {
        let c = parse(WebArgs {
            cors_origins: Some(
                " https://App.example.com/, https://app.example.com:443,http://localhost:5173,\
                 http://127.0.0.1:8000 , https://[::1]:8443",
            ),
            ..WebArgs::default()
        })
        .expect("valid");
        assert_eq!(
            c.cors_origins,
            [
                "https://app.example.com",
                "http://localhost:5173",
                "http://127.0.0.1:8000",
                "https://[::1]:8443",
            ]
        );
    }

    #[test]
    fn unsafe_or_malformed_cors_origins_are_refused() {
        for bad in [
            "*",
            "null",
            "https://*.shop.test",
            "http://shop.test",
            "http://192.168.1.10",
            "https://shop.test/path",
            "https://user@shop.test",
            "ftp://shop.test",
            "shop.test",
            "https://shop.test:99999",
        ] {
            let err = parse(WebArgs {
                cors_origins: Some(bad),
                ..WebArgs::default()
            })
            .expect_err(bad);
            assert_eq!(err.var, "TOKEND_CORS_ORIGINS", "{bad:?}");
            assert!(!err.to_string().contains(bad), "the value is not echoed");
        }
    }
}
