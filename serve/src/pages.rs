//! The pages node and edge both serve, embedded in the binary with `include_str!` so they
//! work offline (no CDN, no web fonts):
//!
//! - the live dashboard (`/`, `/polls/{poll}`, its stylesheet and script): it derives its poll
//!   from the URL (`/` shows the first open poll), follows it over SSE and falls back to
//!   polling the results route when SSE fails (`assets/dashboard.js` says how), and shows how
//!   old the figures are when an edge says they are stale;
//! - the browser client `/client.js` (a dependency-free ES module, `assets/client.js`) and the
//!   voting page `/vote/{poll}` (one large button per option, then the live split), which votes
//!   through the regions' `public_endpoints` (nearest first; the serving host last), named in a
//!   meta tag.
//!
//! Every response carries a Content-Security-Policy that allows only this origin (and, for the
//! voting page, exactly the configured endpoints), so an external resource slipped into a page
//! would not load.

use std::sync::Arc;

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

const CLIENT_JS: &str = include_str!("../assets/client.js");
const VOTE_HTML: &str = include_str!("../assets/vote.html");
const VOTE_JS: &str = include_str!("../assets/vote.js");
const VOTE_CSS: &str = include_str!("../assets/vote.css");

/// Where the browser client is served.
pub const CLIENT_JS_PATH: &str = "/client.js";
/// Where the page finds its script.
pub const VOTE_JS_PATH: &str = "/assets/vote.js";
/// Where the page finds its stylesheet.
pub const VOTE_CSS_PATH: &str = "/assets/vote.css";

/// Every page route, for a router of any state; the voting page votes through
/// `public_endpoints`.
pub fn routes<S>(public_endpoints: Arc<[String]>) -> Router<S>
where
    S: Clone + Send + Sync + 'static,
{
    let page = || async { asset("text/html; charset=utf-8", DASHBOARD_HTML) };
    Router::new()
        .route("/", get(page))
        .route("/polls/{poll}", get(page))
        .route(
            CSS_PATH,
            get(|| async { asset("text/css; charset=utf-8", DASHBOARD_CSS) }),
        )
        .route(
            JS_PATH,
            get(|| async { asset("text/javascript; charset=utf-8", DASHBOARD_JS) }),
        )
        .route(CLIENT_JS_PATH, get(client_js))
        .route(
            "/vote/{poll}",
            get(move || {
                let endpoints = public_endpoints.clone();
                async move { vote_page(&endpoints) }
            }),
        )
        .route(VOTE_JS_PATH, get(vote_js))
        .route(VOTE_CSS_PATH, get(vote_css))
}

/// An embedded asset. `no-cache` makes browsers revalidate, so a new binary's page is never
/// mixed with an old cached script. (The voting page's assets are served through it too.)
fn asset(content_type: &'static str, body: &'static str) -> impl IntoResponse {
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

async fn client_js() -> impl IntoResponse {
    asset("text/javascript; charset=utf-8", CLIENT_JS)
}

async fn vote_js() -> impl IntoResponse {
    asset("text/javascript; charset=utf-8", VOTE_JS)
}

async fn vote_css() -> impl IntoResponse {
    asset("text/css; charset=utf-8", VOTE_CSS)
}

fn vote_page(public_endpoints: &[String]) -> impl IntoResponse + use<> {
    let endpoints = serde_json::to_string(public_endpoints).unwrap_or_else(|_| "[]".into());
    let page = VOTE_HTML.replace("{{ENDPOINTS}}", &html_attribute(&endpoints));
    let connect: Vec<&str> = public_endpoints.iter().map(String::as_str).collect();
    let policy = format!(
        "default-src 'self'; connect-src 'self' {}; img-src 'self' data:; object-src 'none'; \
         base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
        connect.join(" ")
    );
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8".to_owned()),
            (header::CACHE_CONTROL, "no-cache".to_owned()),
            (header::CONTENT_SECURITY_POLICY, policy),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff".to_owned()),
        ],
        page,
    )
}

/// Escapes `text` for a double-quoted HTML attribute.
fn html_attribute(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('"', "&quot;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

#[cfg(test)]
mod tests {
    //! Goal: the embedded pages work offline. Method: scan the assets for references that
    //! would leave the host, and check the pages link the assets where the router serves them.

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

    #[test]
    fn the_page_links_what_the_router_serves_and_nothing_foreign() {
        assert!(VOTE_HTML.contains(&format!("href=\"{VOTE_CSS_PATH}\"")));
        assert!(VOTE_HTML.contains(&format!("src=\"{VOTE_JS_PATH}\"")));
        assert!(VOTE_JS.contains(&format!("from \"{CLIENT_JS_PATH}\"")));
        for (name, text) in [("vote.html", VOTE_HTML), ("vote.css", VOTE_CSS)] {
            for needle in ["src=\"http", "href=\"http", "url(", "@import", "src=\"//"] {
                assert!(!text.contains(needle), "{name} refers to `{needle}`");
            }
        }
    }

    #[test]
    fn endpoints_are_escaped_into_the_attribute() {
        assert_eq!(
            html_attribute(r#"["http://a\"><script>"]"#),
            "[&quot;http://a\\&quot;&gt;&lt;script&gt;&quot;]"
        );
    }
}
