//! The HTTP client every deai program uses to reach another node: no redirects, bounded
//! timeouts, and loopback reached directly even where a proxy is configured.

use std::time::Duration;

/// A client for `url` with a 3 s connect timeout and an overall `timeout`.
///
/// No redirects: every URL a node fetches was checked (or registered) as given, and a
/// redirect would let its owner point the request anywhere else. Loopback nodes are reached
/// directly even when `HTTP_PROXY` is set without a matching `NO_PROXY` (as on hosts that
/// reach the internet only through a proxy): a proxy cannot reach this machine's loopback.
pub fn http_client(url: &str, timeout: Duration) -> reqwest::Client {
    let mut b = reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(3))
        .redirect(reqwest::redirect::Policy::none())
        .timeout(timeout);
    if is_loopback_url(url) {
        b = b.no_proxy();
    }
    b.build()
        .expect("a client with these options always builds")
}

/// True when `url`'s host is `localhost` or a loopback IP address.
pub fn is_loopback_url(url: &str) -> bool {
    let Ok(u) = reqwest::Url::parse(url) else {
        return false;
    };
    let host = u.host_str().unwrap_or_default();
    host.eq_ignore_ascii_case("localhost")
        || host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_hosts_are_recognised() {
        for u in [
            "http://127.0.0.1:8080",
            "http://localhost/x",
            "http://LOCALHOST:1",
            "http://[::1]:9000/v1",
            "http://127.3.4.5",
        ] {
            assert!(is_loopback_url(u), "{u}");
        }
        for u in [
            "http://10.0.0.1",
            "http://example.com",
            "not a url",
            "http://[::2]",
        ] {
            assert!(!is_loopback_url(u), "{u}");
        }
    }
}
