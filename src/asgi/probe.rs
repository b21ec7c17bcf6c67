//! The hook of the migration tools' ownership probe (`crate::migration`): a request that
//! carries [`OwnershipProbe`] in its extensions is answered at once, without Python, with
//! the marker in the response's extensions. The probe sends such a request through the
//! user's router for each operation and learns which ones the router hands to the app,
//! without running the app. Clients cannot set extensions: no real request is answered so.

use bytes::Bytes;
use http::{Request, Response, StatusCode};

use super::body::ResponseBody;

/// Marks a probe's request, and the answer [`AsgiService`](super::AsgiService) gives it.
#[derive(Clone, Copy, Debug)]
pub(crate) struct OwnershipProbe;

/// The answer to a probe's request (an empty 204, marked); `None` for any other request.
pub(crate) fn answer<B>(request: &Request<B>) -> Option<Response<ResponseBody>> {
    request.extensions().get::<OwnershipProbe>()?;
    let mut response = Response::new(ResponseBody::full(Bytes::new(), None));
    *response.status_mut() = StatusCode::NO_CONTENT;
    response.extensions_mut().insert(OwnershipProbe);
    Some(response)
}
