//! One viewer's SSE stream, for a viewer served through hyper (those below hyper are the
//! poll's hub's, [`tally_serve::broadcast`]): the poll's current results at once, then, each time the slot
//! changes, the bytes that publication holds for it. Its whole state is a receiver of the
//! slot, the generation of the results it sent last, and its place: no timer, no queue, no
//! encoding. A viewer slower than the publications skips to the latest one (the slot holds
//! one value); it ends when the subscription ends (the edge stops).

use std::convert::Infallible;
use std::sync::Arc;

use bytes::Bytes;
use futures_util::Stream;
use tokio::sync::watch;

use super::ViewerPlace;
use super::latest::Latest;

/// A viewer's stream of SSE bytes.
pub type ViewerStream = std::pin::Pin<Box<dyn Stream<Item = Result<Bytes, Infallible>> + Send>>;

struct Viewer {
    latest: watch::Receiver<Arc<Latest>>,
    /// The results generation sent last (0: none yet).
    sent: u64,
    _place: ViewerPlace,
}

/// The stream of a viewer holding `place`, fed from `latest` (which holds results already).
pub(super) fn stream(latest: watch::Receiver<Arc<Latest>>, place: ViewerPlace) -> ViewerStream {
    let viewer = Viewer {
        latest,
        sent: 0,
        _place: place,
    };
    Box::pin(futures_util::stream::unfold(
        viewer,
        |mut viewer| async move {
            if viewer.sent != 0 {
                // Err: the subscription ended (the edge stops): so does the stream.
                viewer.latest.changed().await.ok()?;
            }
            let latest = viewer.latest.borrow_and_update().clone();
            let bytes = if latest.results_generation == viewer.sent {
                latest.update.clone()
            } else {
                viewer.sent = latest.results_generation;
                latest.catch_up.clone()
            };
            Some((Ok(bytes), viewer))
        },
    ))
}
