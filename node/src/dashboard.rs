//! The live dashboard: an HTML page, its stylesheet and its script, embedded in the binary with
//! `include_str!` so a node serves a working dashboard offline (no CDN, no web fonts).
//!
//! The page derives its poll from the URL (`/polls/{poll}`; `/` shows the first open poll),
//! follows it over SSE and falls back to polling the results route when SSE fails; the script
//! (`assets/dashboard.js`) says how. Every response carries a Content-Security-Policy that
//! allows only this origin, so an external resource slipped into the page would not load.

use axum::Router;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;

/// The page.
const DASHBOARD_HTML: &str = include_str!("../assets/dashboard.html");
/// Its stylesheet, served at [`CSS_PATH`].
const DASHBOARD_CSS: &str = include_str!("../assets/dashboard.css");
/// Its script, served at [`JS_PATH`].
const DASHBOARD_JS: &str = include_str!("../assets/dashboard.js");

/// Where the page finds its stylesheet.
pub const CSS_PATH: &str = "/assets/dashboard.css";
/// Where the page finds its script.
pub const JS_PATH: &str = "/assets/dashboard.js";

/// Same-origin only; `data:` images for the inline favicon.
const CONTENT_SECURITY_POLICY: &str = "default-src 'self'; img-src 'self' data:; \
     object-src 'none'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

/// `GET /`, `GET /polls/{poll}` and the page's assets.
pub fn routes<S: Clone + Send + Sync + 'static>() -> Router<S> {
    Router::new()
        .route("/", get(page))
        .route("/polls/{poll}", get(page))
        .route(CSS_PATH, get(stylesheet))
        .route(JS_PATH, get(script))
}

async fn page() -> impl IntoResponse {
    asset("text/html; charset=utf-8", DASHBOARD_HTML)
}

async fn stylesheet() -> impl IntoResponse {
    asset("text/css; charset=utf-8", DASHBOARD_CSS)
}

async fn script() -> impl IntoResponse {
    asset("text/javascript; charset=utf-8", DASHBOARD_JS)
}

/// An embedded asset. `no-cache` makes browsers revalidate, so a new binary's page is never
/// mixed with an old cached script. (The voting page's assets are served through it too.)
pub(crate) fn asset(content_type: &'static str, body: &'static str) -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CACHE_CONTROL, "no-cache"),
            (header::CONTENT_SECURITY_POLICY, CONTENT_SECURITY_POLICY),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        ],
        body,
    )
}

#[cfg(test)]
mod tests {
    //! Goal: the embedded page works offline. Method: scan the assets for references that would
    //! leave the node, and check the page links the assets where the router serves them.

    use super::*;

    #[test]
    fn page_links_the_assets_the_router_serves() {
        assert!(DASHBOARD_HTML.contains(&format!("href=\"{CSS_PATH}\"")));
        assert!(DASHBOARD_HTML.contains(&format!("src=\"{JS_PATH}\"")));
    }

    #[test]
    fn assets_load_nothing_from_other_origins() {
        for (name, text) in [
            ("dashboard.html", DASHBOARD_HTML),
            ("dashboard.css", DASHBOARD_CSS),
            ("dashboard.js", DASHBOARD_JS),
        ] {
            for needle in ["src=\"http", "href=\"http", "url(", "@import", "src=\"//"] {
                assert!(!text.contains(needle), "{name} refers to `{needle}`");
            }
        }
    }
}
