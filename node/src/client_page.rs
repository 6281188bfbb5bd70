//! The browser client and the voting page: `/client.js` (a dependency-free ES module, see
//! `assets/client.js`), `/vote/{poll}` (one large button per option, then the live split) and
//! the page's script and stylesheet, all embedded in the binary.
//!
//! The page votes through the regions of the node's `public_endpoints` (nearest first; this
//! node last), named in a meta tag, and its Content-Security-Policy lets it connect to exactly
//! those origins and its own.

use axum::Router;
use std::sync::Arc;

use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;

use crate::dashboard::asset;

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

/// The routes, registered by [`crate::http::router`]; the voting page lists
/// `public_endpoints` (the nodes or edges it votes through, nearest first).
pub fn routes<S: Clone + Send + Sync + 'static>(public_endpoints: Arc<[String]>) -> Router<S> {
    Router::new()
        .route(CLIENT_JS_PATH, get(client_js))
        .route(
            "/vote/{poll}",
            get(move || vote_page(Arc::clone(&public_endpoints))),
        )
        .route(VOTE_JS_PATH, get(vote_js))
        .route(VOTE_CSS_PATH, get(vote_css))
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

async fn vote_page(public_endpoints: Arc<[String]>) -> impl IntoResponse {
    let endpoints = serde_json::to_string(&*public_endpoints).unwrap_or_else(|_| "[]".into());
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
    use super::*;

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
