//! The explorer and operator console: a single-page web UI (HTML, CSS and JavaScript with no
//! build step) embedded in the binary and served at `/` by every node that has an HTTP API:
//! chain validators (`deai chain run`, `deai devnet`), the gateway and the training
//! coordinator. The page reads the serving node's own versioned JSON API on the same origin
//! (documented in `docs/api.md`; `docs/explorer.md` maps pages to routes), so it needs no
//! separate server or CDN at run time.
//!
//! This crate owns the assets and the few routes that serve them. It must never depend on
//! the ledger, chain or node crates: what the UI shows comes only from the HTTP API, which
//! keeps the API honest (scripts can do everything the UI does).

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use serde_json::json;

const INDEX_HTML: &str = include_str!("../assets/index.html");
const APP_JS: &str = include_str!("../assets/app.js");
const STYLE_CSS: &str = include_str!("../assets/style.css");
const FAVICON_SVG: &str = include_str!("../assets/favicon.svg");

/// The page may load only its own scripts and styles and talk only to its own origin.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'self'; img-src 'self' data: blob:; \
     style-src 'self'; script-src 'self'; connect-src 'self'; frame-ancestors 'none'; \
     base-uri 'none'; form-action 'none'";

/// Which parts of the API the serving node answers; the UI hides what is absent
/// (`GET /ui/config.json`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct UiConfig {
    /// What kind of server this is: `"chain"`, `"gateway"`, `"worker"`, `"validator"` or
    /// `"training"`.
    pub service: &'static str,
    /// The chain's `/v1` query routes answer on this origin (a gateway proxies them).
    pub chain: bool,
    /// The OpenAI-compatible routes, receipts and `/v1/gateway/status` answer.
    pub gateway: bool,
    /// The DiLoCo coordinator's `/train/v1` routes answer.
    pub training: bool,
}

impl UiConfig {
    pub const CHAIN: UiConfig = UiConfig {
        service: "chain",
        chain: true,
        gateway: false,
        training: false,
    };
    pub const GATEWAY: UiConfig = UiConfig {
        service: "gateway",
        chain: true,
        gateway: true,
        training: false,
    };
    /// A worker node: its own `/worker/v1` routes plus the chain's, proxied.
    pub const WORKER: UiConfig = UiConfig {
        service: "worker",
        chain: true,
        gateway: false,
        training: false,
    };
    /// A validator (verification role) node: the chain's routes, proxied.
    pub const VALIDATOR: UiConfig = UiConfig {
        service: "validator",
        chain: true,
        gateway: false,
        training: false,
    };
    pub const TRAINING: UiConfig = UiConfig {
        service: "training",
        chain: false,
        gateway: false,
        training: true,
    };
}

fn asset(content_type: &'static str, body: &'static str) -> Response {
    let mut r = body.into_response();
    let h = r.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    // Assets change with the binary: revalidate rather than serve a stale UI after an upgrade.
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CONTENT_SECURITY_POLICY),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    r
}

/// The UI's routes: `/` (the page), `/ui/{app.js,style.css,favicon.svg}`, `/favicon.ico`
/// and `/ui/config.json`. Merge it into a node's API router; it has no state of its own.
pub fn router<S: Clone + Send + Sync + 'static>(cfg: UiConfig) -> Router<S> {
    let config = json!({
        "service": cfg.service,
        "chain": cfg.chain,
        "gateway": cfg.gateway,
        "training": cfg.training,
        "version": env!("CARGO_PKG_VERSION"),
    })
    .to_string();
    const ASSETS: [(&str, &str, &str); 6] = [
        ("/", "text/html; charset=utf-8", INDEX_HTML),
        ("/index.html", "text/html; charset=utf-8", INDEX_HTML),
        ("/ui/app.js", "text/javascript; charset=utf-8", APP_JS),
        ("/ui/style.css", "text/css; charset=utf-8", STYLE_CSS),
        ("/ui/favicon.svg", "image/svg+xml", FAVICON_SVG),
        ("/favicon.ico", "image/svg+xml", FAVICON_SVG),
    ];
    let mut r = Router::new();
    for (path, content_type, body) in ASSETS {
        r = r.route(path, get(move || async move { asset(content_type, body) }));
    }
    r.route(
        "/ui/config.json",
        get(move || {
            let body = config.clone();
            async move {
                (
                    StatusCode::OK,
                    [
                        (header::CONTENT_TYPE, "application/json"),
                        (header::CACHE_CONTROL, "no-store"),
                    ],
                    body,
                )
            }
        }),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn serve(cfg: UiConfig) -> String {
        let app: Router = router(cfg);
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(l, app).await.unwrap() });
        format!("http://{addr}")
    }

    #[tokio::test]
    async fn serves_the_page_its_assets_and_config() {
        let base = serve(UiConfig::GATEWAY).await;
        let c = reqwest::Client::builder().no_proxy().build().unwrap();
        let page = c.get(format!("{base}/")).send().await.unwrap();
        assert_eq!(page.status(), 200);
        assert_eq!(page.headers()["content-type"], "text/html; charset=utf-8");
        assert!(page.headers()["content-security-policy"]
            .to_str()
            .unwrap()
            .contains("script-src 'self'"));
        let html = page.text().await.unwrap();
        // The page loads exactly the assets this router serves.
        for path in ["/ui/app.js", "/ui/style.css", "/ui/favicon.svg"] {
            assert!(html.contains(path), "index.html does not reference {path}");
            let r = c.get(format!("{base}{path}")).send().await.unwrap();
            assert_eq!(r.status(), 200, "{path}");
            assert!(!r.text().await.unwrap().is_empty(), "{path} is empty");
        }
        let js = c.get(format!("{base}/ui/app.js")).send().await.unwrap();
        assert_eq!(
            js.headers()["content-type"],
            "text/javascript; charset=utf-8"
        );
        let cfg: serde_json::Value = c
            .get(format!("{base}/ui/config.json"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(cfg["service"], "gateway");
        assert_eq!(cfg["chain"], true);
        assert_eq!(cfg["training"], false);
    }

    #[tokio::test]
    async fn each_service_says_what_it_serves() {
        for (cfg, chain, gateway, training) in [
            (UiConfig::CHAIN, true, false, false),
            (UiConfig::GATEWAY, true, true, false),
            (UiConfig::TRAINING, false, false, true),
        ] {
            let base = serve(cfg).await;
            let v: serde_json::Value = reqwest::Client::builder()
                .no_proxy()
                .build()
                .unwrap()
                .get(format!("{base}/ui/config.json"))
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            assert_eq!(v["service"], cfg.service);
            assert_eq!(v["chain"], chain);
            assert_eq!(v["gateway"], gateway);
            assert_eq!(v["training"], training);
        }
    }

    #[tokio::test]
    async fn unknown_asset_is_not_served() {
        let base = serve(UiConfig::CHAIN).await;
        let c = reqwest::Client::builder().no_proxy().build().unwrap();
        for path in ["/ui/", "/ui/lib.rs", "/Cargo.toml", "/ui/app.js.map"] {
            let r = c.get(format!("{base}{path}")).send().await.unwrap();
            assert_eq!(r.status(), 404, "{path}");
        }
    }
}
