//! The OpenAPI 3.1 document served at [`OPENAPI_PATH`], generated from the code.
//!
//! The API routes and their entries in the document come from one place: each handler's
//! `#[utoipa::path]` attribute gives both the path axum routes and the operation the document
//! lists (utoipa-axum's `OpenApiRouter`, in `http/mod.rs`), so the two cannot drift. The few
//! routes that are not JSON API (this document itself and the dashboard's page and assets) are
//! added here by hand; `tests/api/openapi.rs` checks that the document's (method, path) pairs are exactly
//! the ones the router answers.

use axum::body::Bytes;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::{MethodRouter, get};
use utoipa::openapi::path::{HttpMethod, OperationBuilder};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::{ContentBuilder, ObjectBuilder, OpenApi, ResponseBuilder, Type};
use utoipa::{Modify, OpenApi as _};

use crate::dashboard;
use tally_client::api::{ErrorBody, ErrorCode};

/// Where the document is served.
pub const OPENAPI_PATH: &str = "/openapi.json";

/// The name of the admin bearer-token scheme in the document.
pub(super) const ADMIN_TOKEN_SCHEME: &str = "admin_token";

/// What the document says of the API as a whole.
#[derive(utoipa::OpenApi)]
#[openapi(
    info(
        title = "Tally",
        description = "Real-time vote counting for live polls. A vote is answered only once it \
            is durable; its vote ID makes retries safe (to any node of the cluster). Every \
            refusal is JSON, `{\"error\": code, \"message\": text}`; a route that does not \
            exist answers 404 and a method a route does not answer 405, both in that shape. \
            Load shedding answers 503 with `Retry-After`."
    ),
    tags(
        (name = "votes", description = "Casting votes, one at a time or in batches"),
        (name = "results", description = "Polls, live results, history and the SSE stream"),
        (name = "admin", description = "Creating, opening and closing polls (bearer token)"),
        (name = "operations", description = "Metrics, health, readiness, this document"),
        (name = "dashboard", description = "The live dashboard page and its assets"),
    ),
    components(schemas(ErrorBody, ErrorCode)),
    modifiers(&AdminToken),
)]
struct ApiBase;

/// Declares the admin bearer token the admin routes name in their `security`.
struct AdminToken;

impl Modify for AdminToken {
    fn modify(&self, openapi: &mut OpenApi) {
        let scheme = HttpBuilder::new()
            .scheme(HttpAuthScheme::Bearer)
            .description(Some(
                "The `admin_token` of the node's configuration; the admin API is off without one",
            ))
            .build();
        openapi
            .components
            .get_or_insert_with(Default::default)
            .add_security_scheme(ADMIN_TOKEN_SCHEME, SecurityScheme::Http(scheme));
    }
}

/// The document's base: info, tags, shared components. The routes add their paths to it.
pub(super) fn base() -> OpenApi {
    ApiBase::openapi()
}

/// Adds the routes that are not generated from a handler's attribute.
pub(super) fn complete(mut document: OpenApi) -> OpenApi {
    let mut add = |path: &str, id: &str, summary: &str, tag: &str, content_type: &str| {
        let text = ObjectBuilder::new().schema_type(Type::String).build();
        let response = ResponseBuilder::new()
            .description(summary)
            .content(
                content_type,
                ContentBuilder::new().schema(Some(text)).build(),
            )
            .build();
        let operation = OperationBuilder::new()
            .operation_id(Some(id))
            .summary(Some(summary))
            .tag(tag)
            .response("200", response)
            .build();
        document
            .paths
            .add_path_operation(path, vec![HttpMethod::Get], operation);
    };
    add(
        OPENAPI_PATH,
        "openapi",
        "This OpenAPI document",
        "operations",
        "application/json",
    );
    add(
        "/",
        "dashboard",
        "The live dashboard of the first open poll",
        "dashboard",
        "text/html",
    );
    add(
        "/polls/{poll}",
        "dashboard_poll",
        "The live dashboard of one poll",
        "dashboard",
        "text/html",
    );
    add(
        dashboard::CSS_PATH,
        "dashboard_css",
        "The dashboard's stylesheet",
        "dashboard",
        "text/css",
    );
    add(
        dashboard::JS_PATH,
        "dashboard_js",
        "The dashboard's script",
        "dashboard",
        "text/javascript",
    );
    add_poll_parameter(&mut document, "/polls/{poll}");
    describe_stream_events(&mut document);
    document
}

/// The path of the SSE stream, whose events [`describe_stream_events`] describes.
const STREAM_PATH: &str = "/v1/polls/{poll}/stream";

/// Describes each event of the SSE stream as what it is (OpenAPI 3.1 reads the schema of a
/// `text/event-stream` response as one event's): the event name `results`, the id (the
/// results' capture time in Unix ms) and `data`, a JSON text holding the same object as the
/// results route (`contentMediaType` and `contentSchema`, JSON Schema 2020-12).
fn describe_stream_events(document: &mut OpenApi) {
    use utoipa::openapi::extensions::Extensions;
    use utoipa::openapi::{Ref, RefOr};
    let Some(content) = document
        .paths
        .paths
        .get_mut(STREAM_PATH)
        .and_then(|item| item.get.as_mut())
        .and_then(|operation| operation.responses.responses.get_mut("200"))
        .and_then(|response| match response {
            RefOr::T(response) => response.content.get_mut("text/event-stream"),
            RefOr::Ref(_) => None,
        })
    else {
        return;
    };
    let results = serde_json::json!({ "$ref": Ref::from_schema_name("PollResults").ref_location });
    let data = ObjectBuilder::new()
        .schema_type(Type::String)
        .description(Some(
            "The results, as JSON: the object the results route answers",
        ))
        .content_media_type("application/json")
        .extensions(Some(Extensions::from_iter([("contentSchema", results)])));
    let event = ObjectBuilder::new()
        .schema_type(Type::String)
        .enum_values(Some(["results"]))
        .description(Some("The event's name"));
    let id = ObjectBuilder::new()
        .schema_type(Type::String)
        .pattern(Some("^[0-9]+$"))
        .description(Some("When the results were captured, in Unix ms"));
    let schema = ObjectBuilder::new()
        .description(Some(
            "One event of the stream (a `: heartbeat` comment, sent after ten quiet ticks, is \
             no event)",
        ))
        .property("event", event)
        .property("id", id)
        .property("data", data)
        .required("event")
        .required("data")
        .build();
    content.schema = Some(schema.into());
}

/// Declares the `{poll}` path parameter of a hand-added path.
fn add_poll_parameter(document: &mut OpenApi, path: &str) {
    use utoipa::openapi::path::{ParameterBuilder, ParameterIn};
    let Some(operation) = document
        .paths
        .paths
        .get_mut(path)
        .and_then(|item| item.get.as_mut())
    else {
        return;
    };
    let parameter = ParameterBuilder::new()
        .name("poll")
        .parameter_in(ParameterIn::Path)
        .required(utoipa::openapi::Required::True)
        .description(Some("The poll's name"))
        .schema(Some(ObjectBuilder::new().schema_type(Type::String).build()))
        .build();
    operation
        .parameters
        .get_or_insert_with(Vec::new)
        .push(parameter);
}

/// `GET /openapi.json`: the document, encoded once when the router is built.
pub(super) fn route<S: Clone + Send + Sync + 'static>(document: &OpenApi) -> MethodRouter<S> {
    // Encoding a tree of strings and maps to JSON cannot fail; if it ever did, the route would
    // say so rather than take the node down.
    let json = document.to_json().unwrap_or_else(|e| {
        serde_json::json!({"error": "invalid", "message": e.to_string()}).to_string()
    });
    let json = Bytes::from(json);
    get(move || {
        let json = json.clone();
        async move { ([(header::CONTENT_TYPE, "application/json")], json).into_response() }
    })
}
